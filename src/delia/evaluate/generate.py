"""Generate answers for evaluation examples with the local backend, score them, write the two result files."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.config import EvalConfig, SamplingConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.io import write_json
from delia.data.io import write_jsonl
from delia.evaluate.budget import resolve_budget
from delia.evaluate.metrics import score, score_by_group

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
PHRASING = "phrasing"  # an example's meta key: "seen" | "unseen" instruction phrasing (data/builders)


def eval_sampling(cfg: EvalConfig, seed: int) -> SamplingConfig:
    """Greedy unless cfg.do_sample (then the sampling defaults: temperature 0.7, top-p 0.95); cfg's
    max_new_tokens already resolved to a number (resolve_budget)."""
    budget = int(cfg.max_new_tokens)
    if cfg.do_sample:
        return SamplingConfig(max_new_tokens=budget, seed=seed)
    return SamplingConfig(temperature=0.0, max_new_tokens=budget, seed=seed)


def _source_text(example: Example) -> str:
    return str(example.meta.get("source_text", example.instruction))


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    cfg: EvalConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    generation_options: dict[str, Any] | None = None,
    task_examples: Sequence[Example] = (),
) -> dict[str, Any]:
    """Answer every example (the first cfg.limit), score against example.response, write
    predictions.jsonl and metrics.json into out_dir, and return the metrics. generation_options: a method
    plan's, e.g. {"logits_processor_factory": (model, tokenizer) -> LogitsProcessorList} (CTG).
    `max_new_tokens: auto` is resolved over all the examples given (not only the first cfg.limit), so
    runs that evaluate different shares of one eval set share one budget, and over the answers of
    `task_examples` (what the model was trained to write); metrics["generation"] records it.
    Examples whose meta carries a phrasing group are also scored per group (metrics["by_phrasing"])."""
    from delia.generation.local import LocalBackend  # imports torch: `delia score` loads this package

    chosen = examples[: cfg.limit] if cfg.limit is not None else list(examples)
    if not chosen:
        raise DeliaError("no evaluation examples (empty file, or eval.limit=0)")
    cfg, budget = resolve_budget(cfg, examples, tokenizer, task_examples)
    start = time.perf_counter()
    factory = (generation_options or {}).get("logits_processor_factory")
    backend = LocalBackend(
        model, tokenizer, batch_size=cfg.batch_size, progress=progress, logits_processor_factory=factory
    )
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        predictions = backend.generate([ex.prompt_messages for ex in chosen], eval_sampling(cfg, seed))
    finally:
        if was_training:
            model.train()
    new_tokens = list(backend.last_new_tokens)
    hit_limit = [count >= int(cfg.max_new_tokens) for count in new_tokens]
    references = [ex.response or None for ex in chosen]
    sources = [_source_text(ex) for ex in chosen] if cfg.comet_checkpoint else None
    result = score(cfg.metric, predictions, references, cfg, hit_limit=hit_limit, sources=sources, seed=seed)

    out_dir = Path(out_dir)
    rows = prediction_rows(chosen, predictions, result["per_example"], new_tokens, hit_limit)
    write_jsonl(out_dir / PREDICTIONS_FILE, rows)
    stats = backend.stats
    metrics = {k: v for k, v in result.items() if k != "per_example"}
    phrasings = [ex.meta.get(PHRASING) for ex in chosen]
    if any(p is not None for p in phrasings):
        metrics["by_phrasing"] = score_by_group(
            cfg.metric,
            predictions,
            references,
            phrasings,
            cfg,
            hit_limit=hit_limit,
            sources=sources,
            seed=seed,
        )
    metrics["generation"] = {
        "new_tokens": stats.new_tokens,
        "seconds": stats.seconds,
        "tokens_per_second": stats.tokens_per_second,
        **budget,
        "do_sample": cfg.do_sample,
        "batch_size": cfg.batch_size,
    }
    metrics["seconds"] = time.perf_counter() - start
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def prediction_rows(
    examples: list[Example],
    predictions: list[str],
    per_example: list[dict[str, Any]],
    new_tokens: list[int],
    hit_limit: list[bool],
) -> list[dict[str, Any]]:
    """predictions.jsonl's rows, in the examples' order; `phrasing` where the example's meta has one."""
    rows = []
    for ex, prediction, scores, count, hit in zip(
        examples, predictions, per_example, new_tokens, hit_limit, strict=True
    ):
        row = {
            "id": ex.id,
            "prompt": ex.prompt_messages,
            "prediction": prediction,
            "reference": ex.response or None,
            "scores": scores,
            "new_tokens": count,
            "hit_limit": hit,
            "truncated": bool(scores.get("truncated", hit)),
        }
        if ex.meta.get(PHRASING) is not None:
            row[PHRASING] = ex.meta[PHRASING]
        rows.append(row)
    return rows
