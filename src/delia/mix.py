"""Mix task and diverse examples into one training order: the paper's extensive shuffle and its peers.

Schedules (ratio R, task set T):
  shuffle     R x |T| diverse examples drawn without replacement (drawn again, with a warning, once the
              file runs out), shuffled together with T: the paper's "extensive shuffle".
  interleave  Algorithm 1: each task example, in the given order, followed by R diverse examples.
  two_stage   T (shuffled), then R x |T| diverse examples, or diverse first (`two_stage_order`): sequential
              training. With `two_stage_remix` k > 0 (task first only) the second stage also holds
              ceil(k x |T|) task examples drawn without replacement, shuffled among the diverse ones: DMT
              as Dong et al. publish it.
  task_only   T alone, shuffled: the same output as shuffle with R = 0.
  diverse_only  R x |T| diverse examples alone, in random order, no task example (the reference model of
              the paper's Figure 4); T only sizes the draw.

The diverse file is never held in memory when it is messages JSONL (what `delia synth sample` writes): one
pass records each record's byte offset, a seeded RNG draws offsets, and records are read back by seeking
while the output streams into an atomic write. Same inputs and seed give a byte-identical file.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import logging
import math
import random
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from delia.core.config import MixConfig
from delia.core.errors import ConfigError, DataError, DeliaError
from delia.core.example import Example
from delia.data.io import example_from_record, parse_json_line, read_examples, write_jsonl

logger = logging.getLogger(__name__)

DIVERSE = "diverse"


class DiversePool(Protocol):
    """Diverse examples addressed by index, so draws need not hold the records."""

    path: Path

    def __len__(self) -> int: ...

    def get(self, index: int) -> Example: ...

    def close(self) -> None: ...


class OffsetPool:
    """A messages JSONL file as the byte offsets of its records; a record is parsed only when drawn."""

    def __init__(self, path: Path, offsets: array) -> None:
        self.path = path
        self._offsets = offsets
        self._handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()

    def __len__(self) -> int:
        return len(self._offsets)

    def get(self, index: int) -> Example:
        self._handle.seek(self._offsets[index])
        try:
            record = parse_json_line(self._handle.readline(), str(self.path), index + 1)
            return example_from_record(record, "messages", DIVERSE, str(self.path), index + 1)
        except DataError:
            raise DataError(str(self.path), None, "the file changed while being mixed; rerun") from None

    def close(self) -> None:
        self._handle.close()


class ListPool:
    """Any other format, read into memory by read_examples."""

    def __init__(self, path: Path, examples: list[Example]) -> None:
        self.path = path
        self._examples = examples

    def __len__(self) -> int:
        return len(self._examples)

    def get(self, index: int) -> Example:
        return self._examples[index]

    def close(self) -> None:
        pass


def index_messages_jsonl(path: Path, fmt: str = "auto") -> OffsetPool | None:
    """One validating pass over a messages JSONL file; None when the file is another format."""
    if fmt not in ("auto", "messages") or path.suffix == ".gz" or not path.is_file():
        return None
    offsets = array("q")
    position = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):  # binary lines split on b"\n" only, like the readers
            start, position = position, position + len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                start, raw = start + len(codecs.BOM_UTF8), raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            if not offsets and (raw.lstrip().startswith(b"[") or b'"messages"' not in raw):
                return None  # a JSON array, or a first record of another format: the general reader decides
            record = parse_json_line(raw.rstrip(b"\n"), str(path), lineno)  # as the text reader sees it
            example_from_record(record, "messages", DIVERSE, str(path), lineno, require_response=True)
            offsets.append(start)
    return OffsetPool(path, offsets) if offsets else None


def open_diverse(path: Path, fmt: str = "auto") -> DiversePool:
    """Messages JSONL is indexed by offsets; other formats fall back to reading the whole file."""
    pool = index_messages_jsonl(path, fmt)
    if pool is not None:
        return pool
    examples = read_examples(path, fmt, source=DIVERSE, require_response=True)
    if not examples:
        raise DataError(str(path), None, "no diverse examples in this file")
    logger.info("%s is not messages JSONL: read into memory (messages JSONL would be streamed)", path)
    return ListPool(path, examples)


def diverse_count(cfg: MixConfig, n_task: int) -> int:
    """How many diverse examples the schedule asks for."""
    if cfg.schedule == "task_only":
        return 0
    if cfg.schedule == "interleave":
        return int(cfg.ratio) * n_task
    return round(cfg.ratio * n_task)


def remix_count(cfg: MixConfig, n_task: int) -> int:
    """How many task examples go back into two_stage's second stage: k x |T| rounded up, so that any k > 0
    keeps at least one (k = 1/256 of a 30-example task would round to none)."""
    if cfg.schedule != "two_stage" or cfg.two_stage_remix <= 0:
        return 0
    share = cfg.two_stage_remix * n_task - 1e-9  # 0.1 x 30 is 3.0000000000000004, not 3
    return min(n_task, max(1, math.ceil(share)))


def draw_indices(pool_size: int, count: int, rng: random.Random) -> Iterator[int]:
    """`count` indices without replacement while the pool lasts, then through a fresh random order again."""
    while count > 0:
        take = min(count, pool_size)
        yield from rng.sample(range(pool_size), take)
        count -= take


def merge_uniformly(
    first: Iterator[Example], n_first: int, second: Iterator[Example], n_second: int, rng: random.Random
) -> Iterator[Example]:
    """A uniformly random interleaving of two streams, as if their concatenation were shuffled."""
    # Taking the next record from a side with probability (its records left / all left) gives every
    # interleaving the same chance without materialising the R x |T| list to shuffle it.
    left_first, left_second = n_first, n_second
    while left_first or left_second:
        if rng.randrange(left_first + left_second) < left_first:
            left_first -= 1
            yield next(first)
        else:
            left_second -= 1
            yield next(second)


def interleave(task: list[Example], diverse: Iterator[Example], per_task: int) -> Iterator[Example]:
    """Algorithm 1: each task example followed by `per_task` diverse examples."""
    for example in task:
        yield example
        for _ in range(per_task):
            yield next(diverse)


def check_config(cfg: MixConfig) -> None:
    """MixConfig validates its ratio, but a config built with model_construct skips validation."""
    ratio = cfg.ratio
    if not math.isfinite(ratio) or ratio < 0:
        raise ConfigError("mix.ratio", f"must be a finite number >= 0, got {ratio}")
    if cfg.schedule == "interleave" and not float(ratio).is_integer():
        message = f"interleave puts a whole number of diverse examples after each task example, got {ratio}"
        raise ConfigError("mix.ratio", message)
    if cfg.schedule == "diverse_only" and ratio == 0:
        raise ConfigError(
            "mix.ratio", "diverse_only trains on R x |task| diverse examples alone: R must be above 0"
        )
    check_remix(cfg)


def check_remix(cfg: MixConfig) -> None:
    """The re-mixed share goes into the general stage, which is the second one only when the task is first."""
    remix = cfg.two_stage_remix
    if not math.isfinite(remix) or not 0 <= remix <= 1:
        raise ConfigError("mix.two_stage_remix", f"must be a share between 0 and 1, got {remix}")
    if remix and (cfg.schedule != "two_stage" or cfg.two_stage_order != "task_first"):
        message = (
            "puts task examples back into the general stage, the second stage of two_stage with "
            f"two_stage_order task_first; this mix is {cfg.schedule} ({cfg.two_stage_order})"
        )
        raise ConfigError("mix.two_stage_remix", message)


def schedule_stream(task: list[Example], pool: DiversePool | None, cfg: MixConfig) -> Iterator[Example]:
    """The mixed examples in training order."""
    n_diverse = diverse_count(cfg, len(task))
    if pool is None:
        diverse: Iterator[Example] = iter(())
    else:
        draws = draw_indices(len(pool), n_diverse, random.Random(f"{cfg.seed}:draw"))
        diverse = (pool.get(index) for index in draws)
    if cfg.schedule == "interleave":
        return interleave(task, diverse, int(cfg.ratio))
    if cfg.schedule == "diverse_only":
        return diverse  # drawn in a random order already
    order = list(range(len(task)))
    random.Random(f"{cfg.seed}:task").shuffle(order)
    shuffled_task = (task[i] for i in order)
    if cfg.schedule == "two_stage" and cfg.two_stage_order == "diverse_first":
        return itertools.chain(diverse, shuffled_task)
    if cfg.schedule == "two_stage":
        return itertools.chain(shuffled_task, second_stage(task, diverse, n_diverse, cfg))
    return merge_uniformly(shuffled_task, len(task), diverse, n_diverse, random.Random(f"{cfg.seed}:merge"))


def second_stage(
    task: list[Example], diverse: Iterator[Example], n_diverse: int, cfg: MixConfig
) -> Iterator[Example]:
    """The general stage of two_stage: the diverse examples, with `remix_count` task examples (drawn
    without replacement, own seeds so k = 0 leaves the other draws as they were) shuffled among them."""
    n_remix = remix_count(cfg, len(task))
    if not n_remix:
        return diverse
    remixed = (task[i] for i in random.Random(f"{cfg.seed}:remix").sample(range(len(task)), n_remix))
    return merge_uniformly(remixed, n_remix, diverse, n_diverse, random.Random(f"{cfg.seed}:remix-merge"))


def mix(
    task: list[Example],
    diverse_path: Path | str | None,
    cfg: MixConfig,
    out_path: Path | str,
    *,
    diverse_format: str = "auto",
) -> dict[str, Any]:
    """Write the mixed JSONL (each record keeps its `source`) and return its counts."""
    check_config(cfg)
    if not task:
        raise DeliaError("mix: there are no task examples to mix")
    n_diverse = diverse_count(cfg, len(task))
    if n_diverse and diverse_path is None:
        raise DeliaError(f"mix: schedule {cfg.schedule} with ratio {cfg.ratio} needs a diverse data file")
    pool = open_diverse(Path(diverse_path), diverse_format) if n_diverse and diverse_path else None
    sources: dict[str, int] = {}
    try:
        if pool is not None and n_diverse > len(pool):
            warn_upsampling(pool, n_diverse, cfg.ratio, len(task))
        total = write_jsonl(out_path, _count_sources(schedule_stream(task, pool, cfg), sources))
    finally:
        if pool is not None:
            pool.close()
    available = len(pool) if pool is not None else 0
    return {
        "schedule": cfg.schedule,
        "ratio": cfg.ratio,
        "seed": cfg.seed,
        "task": len(task),
        "task_remixed": remix_count(cfg, len(task)),
        "diverse": n_diverse,
        "total": total,
        "diverse_available": available,
        "diverse_distinct": min(n_diverse, available),
        "upsampled": n_diverse > available,
        "sources": dict(sorted(sources.items())),
        "out": str(out_path),
        "sha256": file_sha256(Path(out_path)),
    }


def warn_upsampling(pool: DiversePool, n_diverse: int, ratio: float, n_task: int) -> None:
    logger.warning(
        f"upsampling: {pool.path} has {len(pool)} diverse examples but ratio {ratio} x {n_task} task "
        f"examples needs {n_diverse}; each is used about {n_diverse / len(pool):.1f} times"
    )


def _count_sources(stream: Iterator[Example], sources: dict[str, int]) -> Iterator[Example]:
    for example in stream:
        sources[example.source] = sources.get(example.source, 0) + 1
        yield example


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
