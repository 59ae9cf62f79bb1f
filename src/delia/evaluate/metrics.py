"""Scoring predictions against references: json_format (the paper's), translation and exact match.

`score(metric, predictions, references, cfg)` returns
  {"metric", "n", "values": {name: {"value", "n", "ci_low", "ci_high"}}, "details", "per_example": [...]}
Rates are in [0, 1]; BLEU and chrF++ are on sacreBLEU's 0-100 scale. docs/metrics.md has the definitions.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from delia.core.config import EvalConfig
from delia.core.errors import DeliaError
from delia.core.registry import METRICS
from delia.evaluate.bootstrap import figure
from delia.evaluate.jsonfmt import judge_answer, normalise_label, reference_label
from delia.evaluate.translation import corpus_figures, learned_figures


@dataclass(frozen=True)
class Scoring:
    """One `score` call's inputs: each metric registered in METRICS takes this and returns
    {"values", "details", "per_example"}, using the optional inputs it has a use for."""

    predictions: Sequence[str]
    references: Sequence[str | None] | None
    cfg: EvalConfig
    hit_limit: Sequence[bool] | None
    sources: Sequence[str] | None
    seed: int

    def required_references(self, metric: str) -> list[str]:
        if self.references is None or any(r is None for r in self.references):
            raise DeliaError(f"metric {metric!r} needs a reference for every prediction")
        return [str(r) for r in self.references]


@METRICS.register("json_format")
def json_format(scoring: Scoring) -> dict[str, Any]:
    """Format accuracy, strict-JSON rate, label accuracy (where references carry a label), unclosed and
    truncated answers."""
    predictions, references, cfg = scoring.predictions, scoring.references, scoring.cfg
    hit_limit, seed = scoring.hit_limit, scoring.seed
    refs = list(references) if references is not None else [None] * len(predictions)
    per_example: list[dict[str, Any]] = []
    for index, (prediction, reference) in enumerate(zip(predictions, refs, strict=True)):
        verdict = judge_answer(prediction, cfg.keys, cfg.label_key)
        row: dict[str, Any] = {
            "json_format": int(verdict.correct),
            "strict_json": int(verdict.strict),
            "parsed_with": verdict.parsed_with,
            "missing_keys": verdict.missing_keys,
            "unclosed": verdict.unclosed,
            "label": verdict.label,
        }
        if cfg.label_key:
            gold = reference_label(reference, cfg.label_key)
            row["reference_label"] = gold
            if gold is not None:
                predicted = normalise_label(verdict.label) if verdict.label is not None else None
                row["label_correct"] = int(predicted == normalise_label(gold))
        if hit_limit is not None:
            row["truncated"] = bool(hit_limit[index]) and verdict.unclosed
        per_example.append(row)

    def rate(name: str) -> dict[str, Any]:
        return figure([float(r[name]) for r in per_example if name in r], cfg.bootstrap, seed)

    values = {name: rate(name) for name in ("json_format", "strict_json", "unclosed")}
    if any("label_correct" in r for r in per_example):
        values["label_accuracy"] = rate("label_correct")
    if hit_limit is not None:
        values["truncated"] = rate("truncated")
    details = {
        "keys": list(cfg.keys),
        "label_key": cfg.label_key,
        "parsed_with": dict(Counter(str(r["parsed_with"]) for r in per_example)),
        "predicted_labels": dict(Counter(str(r["label"]) for r in per_example if r["label"] is not None)),
    }
    return {"values": values, "details": details, "per_example": per_example}


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, quotes and end punctuation trimmed."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.strip(" .!?\"'")


@METRICS.register("exact")
def exact(scoring: Scoring) -> dict[str, Any]:
    per_example = [
        {"exact": int(normalise_text(p) == normalise_text(r))}
        for p, r in zip(scoring.predictions, scoring.required_references("exact"), strict=True)
    ]
    values = {"exact": figure([r["exact"] for r in per_example], scoring.cfg.bootstrap, scoring.seed)}
    return {"values": values, "details": {}, "per_example": per_example}


@METRICS.register("translation")
def translation(scoring: Scoring) -> dict[str, Any]:
    predictions, references = scoring.predictions, scoring.required_references("translation")
    cfg, seed = scoring.cfg, scoring.seed
    values, signatures, per_example = corpus_figures(predictions, references, cfg.bootstrap, seed)
    learned, per_metric = learned_figures(
        predictions,
        references,
        scoring.sources,
        cfg.bleurt_checkpoint,
        cfg.comet_checkpoint,
        cfg.bootstrap,
        seed,
        allow_pickle=cfg.allow_pickle,
    )
    values.update(learned)
    for name, scores in per_metric.items():
        for row, value in zip(per_example, scores, strict=True):
            row[name] = value
    return {"values": values, "details": {"signatures": signatures}, "per_example": per_example}


def score(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str | None] | None,
    cfg: EvalConfig | None = None,
    *,
    hit_limit: Sequence[bool] | None = None,
    sources: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predictions with one metric; every figure carries n and a bootstrap 95% CI (seeded)."""
    cfg = cfg or EvalConfig()
    if not predictions:
        raise DeliaError("nothing to score: no predictions")
    for name, other in (("references", references), ("hit_limit", hit_limit), ("sources", sources)):
        if other is not None and len(other) != len(predictions):
            raise DeliaError(f"{len(predictions)} predictions but {len(other)} {name}")
    if metric not in METRICS:  # `delia score METRIC` names it as an argument, not as config eval.metric
        raise DeliaError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS.names())}")
    result = METRICS.get(metric)(Scoring(predictions, references, cfg, hit_limit, sources, seed))
    if hit_limit is not None and metric != "json_format":
        # Without a closing brace to look for, an answer that used up its token budget counts as truncated.
        for row, hit in zip(result["per_example"], hit_limit, strict=True):
            row["truncated"] = bool(hit)
        result["values"]["truncated"] = figure([float(h) for h in hit_limit], cfg.bootstrap, seed)
    return {"metric": metric, "n": len(predictions), "bootstrap": cfg.bootstrap, "seed": seed, **result}


def score_by_group(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str | None],
    groups: Sequence[str | None],
    cfg: EvalConfig,
    *,
    hit_limit: Sequence[bool] | None = None,
    sources: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each group's own figures ({group: {"n", "values"}}), scored apart (corpus BLEU is not a mean of
    per-example scores); examples whose group is None belong to none."""
    by_group: dict[str, dict[str, Any]] = {}
    for group in sorted({g for g in groups if g is not None}):
        picked = [i for i, g in enumerate(groups) if g == group]

        def take(values: Sequence[Any] | None, picked: list[int] = picked) -> list[Any] | None:
            return None if values is None else [values[i] for i in picked]

        result = score(
            metric,
            [predictions[i] for i in picked],
            take(references),
            cfg,
            hit_limit=take(hit_limit),
            sources=take(sources),
            seed=seed,
        )
        by_group[group] = {"n": result["n"], "values": result["values"]}
    return by_group
