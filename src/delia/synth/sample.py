"""Self-sampling (DELIA stage 1): a model answers diverse queries; its answers become the diverse data.

As in the paper's code (build_cache.py): a system turn "You are a helpful AI assistant.", then, where a query
has a reference answer, one in-context turn made of that same query and its reference, then the query again;
temperature 0.7, top_p 0.95. The stored example is just (query, sampled answer).

Resumable: every answer is appended to `<out stem>.cache.jsonl` (fsync'd, keyed by model + prompt +
sampling) before the next batch starts, so a killed run rerun answers only what is missing. A rerun gives
the same answers as an uninterrupted run: batches are cut from all queries (answered or not) in a fixed
order, so a batch is redone with the same neighbours, and each query samples with its own seed.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from delia.core.config import SampleConfig, SamplingConfig
from delia.core.errors import DataError, DeliaError
from delia.core.example import Example
from delia.core.io import write_json
from delia.data.io import detect_format, read_examples, record_to_example, write_jsonl
from delia.generation.base import Backend, Message, PartialGeneration
from delia.synth.cache import AnswerCache, cache_key

SYSTEM_PROMPT = "You are a helpful AI assistant."  # the system turn of the paper's build_cache.py


def cache_path(out_path: Path) -> Path:
    return out_path.with_name(f"{out_path.stem}.cache.jsonl")


def manifest_path(out_path: Path) -> Path:
    return out_path.with_name("manifest.json")


def build_prompt(query: Example, in_context: bool) -> list[Message]:
    """[system, (query, reference)?, query]: the reference turn only when the query has one."""
    turns = [dict(m) for m in query.prompt_messages]
    if turns[0]["role"] == "system":
        system, body = turns[:1], turns[1:]
    else:
        system, body = [{"role": "system", "content": SYSTEM_PROMPT}], turns
    shot: list[Message] = []
    if in_context and query.response.strip():
        shot = [*body, {"role": "assistant", "content": query.response}]
    return [*system, *shot, *body]


def load_queries(path: str | Path, fmt: str = "auto", limit: int | None = None) -> list[Example]:
    """Queries from a messages / alpaca / prompt file, or a directory written by `datasets.save_to_disk`."""
    path = Path(path)
    examples = _load_from_disk(path, limit) if path.is_dir() else read_examples(path, fmt, source="query")
    return examples[:limit] if limit is not None else examples


def _load_from_disk(path: Path, limit: int | None) -> list[Example]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(str(path), None, f"not a datasets directory ({err})") from None
    if isinstance(dataset, DatasetDict):
        split = "train" if "train" in dataset else next(iter(dataset))
        dataset = dataset[split]
    rows = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
    examples = []
    for index, record in enumerate(rows):
        try:
            examples.append(record_to_example(dict(record), detect_format(record), "query"))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(str(path), None, f"row {index}: {err}") from None
    return examples


def _chunk_seed(base: int, first_key: str) -> int:
    """A per-batch seed fixed by the batch's content, so a batch redone after a crash is sampled the same."""
    return (base * 1_000_003 + int(hashlib.sha256(first_key.encode()).hexdigest()[:8], 16)) % 2**31


def query_seed(base: int, key: str) -> int:
    """A query's own sampling seed, fixed by its cache key: the same whatever batch the query lands in."""
    return (base * 1_000_003 + int(key[:8], 16)) % 2**31


def _takes_seeds(backend: Backend) -> bool:
    try:
        return "seeds" in inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False


def _generate_chunk(
    backend: Backend, chunk: list[tuple[str, list[Message], Example]], sampling: SamplingConfig
) -> list[str]:
    prompts = [prompt for _, prompt, _ in chunk]
    if _takes_seeds(backend):  # local, openai and vllm: one seed per query
        return backend.generate(prompts, sampling, seeds=[query_seed(sampling.seed, k) for k, _, _ in chunk])
    chunk_sampling = sampling.model_copy(update={"seed": _chunk_seed(sampling.seed, chunk[0][0])})
    return backend.generate(prompts, chunk_sampling)


def _answer_missing(
    items: list[tuple[str, list[Message], Example]],
    backend: Backend,
    sampling: SamplingConfig,
    cache: AnswerCache,
    chunk_size: int,
    bar: Any,
) -> None:
    """Answer every chunk that still lacks an answer; chunks are cut from all `items`, answered or not.

    A chunk interrupted half-way is redone whole (its answers already stored are kept), so every prompt
    is generated beside the same neighbours as in an uninterrupted run: batched generation pads to the
    longest prompt, and padding can move the last bits of a logit. A `batch_invariant` backend (an HTTP
    server) is asked only for the missing answers, and the answers of a chunk that failed part-way are kept.
    """
    # Similar lengths share a batch: less padding for local backends, no effect on HTTP ones.
    items = sorted(items, key=lambda item: -sum(len(m["content"]) for m in item[1]))
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        if getattr(backend, "batch_invariant", False):  # neighbours do not matter: ask only for the missing
            chunk = [item for item in chunk if item[0] not in cache]
        missing = sum(key not in cache for key, _, _ in chunk)
        if not missing:
            continue
        try:
            completions = _generate_chunk(backend, chunk, sampling)
        except PartialGeneration as err:  # keep what arrived, so a rerun asks only for the rest
            for index, completion in err.answers.items():
                cache.put(chunk[index][0], completion, err.new_tokens[index], query_id=chunk[index][2].id)
            raise DeliaError(f"{err}; the answers that arrived are kept in {cache.path}: rerun") from None
        counts = list(getattr(backend, "last_new_tokens", None) or [0] * len(chunk))
        for (key, _, query), completion, count in zip(chunk, completions, counts, strict=True):
            cache.put(key, completion, count, query_id=query.id)  # a key already answered is kept
        bar.update(missing)
        bar.set_postfix(tok_s=f"{backend.stats.tokens_per_second:.1f}")


def sample_diverse(
    queries: list[Example], backend: Backend, cfg: SampleConfig, out_path: Path, model_name: str
) -> list[Example]:
    """Answer every query once (resuming from the cache), write the diverse JSONL and its manifest."""
    out_path = Path(out_path)
    sampling = cfg.sampling
    unique: dict[str, tuple[list[Message], Example]] = {}
    for query in queries:
        prompt = build_prompt(query, cfg.in_context)
        unique.setdefault(cache_key(model_name, prompt, sampling), (prompt, query))
    started = time.perf_counter()
    tokens_before, seconds_before = backend.stats.new_tokens, backend.stats.seconds
    with AnswerCache(cache_path(out_path)) as cache:
        todo = [(key, prompt, query) for key, (prompt, query) in unique.items() if key not in cache]
        cached = len(unique) - len(todo)
        bar = tqdm(total=len(unique), initial=cached, desc="sample", unit="query")
        inner_progress = getattr(backend, "progress", None)
        if inner_progress is not None:
            backend.progress = False  # one bar: ours
        try:
            items = [(key, prompt, query) for key, (prompt, query) in unique.items()]
            _answer_missing(items, backend, sampling, cache, max(1, cfg.backend.batch_size), bar)
        finally:
            bar.close()
            if inner_progress is not None:
                backend.progress = inner_progress
        answers = {key: cache.get(key) for key in unique}
    examples, counts = _build_examples(unique, answers, sampling.max_new_tokens)
    write_jsonl(out_path, examples)
    new_tokens = backend.stats.new_tokens - tokens_before
    gen_seconds = backend.stats.seconds - seconds_before
    counts.update(queries=len(queries), unique_queries=len(unique), answered_now=len(todo), from_cache=cached)
    write_json(
        manifest_path(out_path),
        {
            "stage": "sample",
            "output": out_path.name,
            "cache": cache_path(out_path).name,
            "model": model_name,
            "backend": getattr(backend, "name", type(backend).__name__),
            "sampling": sampling.model_dump(mode="json"),
            "in_context": cfg.in_context,
            "system_prompt": SYSTEM_PROMPT,
            "seed": sampling.seed,
            "counts": counts,
            "new_tokens_this_run": new_tokens,
            "tokens_per_second": round(new_tokens / gen_seconds, 2) if gen_seconds else None,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return examples


def _build_examples(
    unique: dict[str, tuple[list[Message], Example]], answers: dict[str, dict[str, Any]], max_new_tokens: int
) -> tuple[list[Example], dict[str, int]]:
    """One diverse example per answered query, in query order; empty answers are dropped and counted."""
    examples: list[Example] = []
    counts = {"written": 0, "empty_dropped": 0, "truncated": 0}
    for key, (_, query) in unique.items():
        row = answers[key]
        if not row["completion"].strip():
            counts["empty_dropped"] += 1
            continue
        truncated = row["new_tokens"] >= max_new_tokens
        counts["truncated"] += int(truncated)
        messages = [*query.prompt_messages, {"role": "assistant", "content": row["completion"]}]
        meta = {"query_id": query.id, "new_tokens": row["new_tokens"], "truncated": truncated}
        examples.append(Example(messages=messages, source="diverse", meta=meta))
    counts["written"] = len(examples)
    return examples, counts
