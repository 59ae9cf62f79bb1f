"""The headline statistic: DELIA minus a control (common IT, step-matched common IT) on the same eval items.

Each DELIA cell is paired with the control's cell of the same variant, task size and seed (and ratio, for
a control that follows DELIA's ratios). Per item, the difference of the two cells' scores (from their
predictions.jsonl); over seeds and items, the mean, with a two-level bootstrap interval that resamples
seeds and items together (evaluate.bootstrap.seed_item_ci). Per-method t-intervals over seeds answer a
different question (how much a method's mean moves between runs) and stay in the summary rows. Where the
eval items carry phrasing groups (seen / unseen instructions), each group is also paired on its own, for
the headline metric. A corpus-level score (chrF++, BLEU) is not a mean of per-item scores, so it is paired
as its sentence-level mean under its own name ("sentence chrf++"), never as a corpus-score difference.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from delia.evaluate.bootstrap import mean_ci, seed_item_ci
from delia.experiment.records import CellRow, PairedRow
from delia.experiment.spec import DELIA_LABEL, ExperimentSpec

RESAMPLES = 4000
BOOTSTRAP_SEED = 0
CI_PAIRED = f"two-level bootstrap over seeds and eval items ({RESAMPLES} resamples)"
# Corpus-level scores are not means of per-item scores, so a mean per-item difference would misstate them.
CORPUS_METRICS = ("chrf++", "bleu")
SENTENCE = "sentence "  # the paired name of a corpus metric: the mean of its sentence-level scores
# A metric's per-item score in predictions.jsonl, where its key differs from the metric's name.
ITEM_KEYS = {"label_accuracy": "label_correct", **{SENTENCE + m: m for m in CORPUS_METRICS}}
CONTROL_METHODS = ("common_it", "common_it_matched")
PHRASING = "phrasing"  # a predictions.jsonl row's phrasing group, where its eval example had one
ItemScores = dict[str, dict[str, float]]  # item key -> {score name: value}
SliceOf = tuple[str | None, int | None, float | None]  # (variant, task size, DELIA's ratio)


def paired_metric(metric: str) -> str:
    """The name a metric is paired under: a corpus metric as its sentence-level mean."""
    return SENTENCE + metric if metric in CORPUS_METRICS else metric


def control_labels(spec: ExperimentSpec) -> list[str]:
    """The entries DELIA is compared with: common IT, and common IT matched to DELIA's steps."""
    return [
        entry.name
        for entry in spec.grid.methods
        if entry.method == "common_it" or (entry.method == "common_it_matched" and entry.match == DELIA_LABEL)
    ]


@dataclass
class CellItems:
    """A finished cell's per-item scores and, where the eval items carry one, each item's phrasing group."""

    scores: ItemScores = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)


def cell_items(run_dir: Path) -> CellItems:
    """Per-item scores of a finished cell, keyed by eval id (by position where ids repeat)."""
    path = run_dir / "predictions.jsonl"
    if not path.exists():
        path = run_dir / "eval" / "predictions.jsonl"
    if not path.exists():
        return CellItems()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [str(row.get("id")) for row in rows]
    unique = len(set(ids)) == len(ids)
    keys = [item if unique else f"{index}:{item}" for index, item in enumerate(ids)]
    return CellItems(
        scores={key: numeric_scores(row.get("scores") or {}) for key, row in zip(keys, rows, strict=True)},
        groups={key: str(row[PHRASING]) for key, row in zip(keys, rows, strict=True) if row.get(PHRASING)},
    )


def numeric_scores(scores: dict[str, object]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in scores.items()
        if isinstance(value, bool | int | float)  # labels and parse details are not scores
    }


def paired_rows(spec: ExperimentSpec, rows: list[CellRow], metrics: list[str]) -> list[PairedRow]:
    """One row per (slice of DELIA, control, metric) with at least one seed where both cells finished."""
    cells = {row.cell: row for row in rows}
    delia: dict[SliceOf, list[CellRow]] = defaultdict(list)
    for row in cells.values():
        if row.method == DELIA_LABEL:
            delia[(row.variant, row.task_size, row.ratio)].append(row)
    items: dict[str, CellItems] = {}
    out = []
    for key, targets in delia.items():
        for control in control_labels(spec):
            pairs = seed_pairs(sorted(targets, key=lambda r: r.seed), control, list(cells.values()))
            for row in (cell for pair in pairs for cell in pair if cell.cell not in items):
                items[row.cell] = cell_items(Path(row.run_dir))
            groups = sorted({g for a, _ in pairs for g in items[a.cell].groups.values()})
            headline = paired_metric(spec.headline_metric)
            for metric in map(paired_metric, metrics):
                # Per phrasing group for the headline metric only: the lead table stays readable.
                for phrasing in [None, *(groups if metric == headline else [])]:
                    if paired := paired_row(key, control, metric, pairs, items, phrasing):
                        out.append(paired)
    return out


def seed_pairs(targets: list[CellRow], control: str, cells: list[CellRow]) -> list[tuple[CellRow, CellRow]]:
    """(DELIA cell, control cell) per seed: same variant, size and seed; the control at DELIA's ratio, or
    ratio-free."""
    pairs = []
    for target in targets:
        match = next(
            (
                c
                for c in cells
                if c.method == control
                and (c.variant, c.task_size, c.seed) == (target.variant, target.task_size, target.seed)
                and c.ratio in (None, target.ratio)
            ),
            None,
        )
        if match is not None:
            pairs.append((target, match))
    return pairs


def paired_row(
    key: SliceOf,
    control: str,
    metric: str,
    pairs: list[tuple[CellRow, CellRow]],
    items: dict[str, CellItems],
    phrasing: str | None = None,
) -> PairedRow | None:
    """The paired difference over the items every pair scored on `metric`, those of one phrasing group
    when `phrasing` is given (None when there are none)."""
    item_key = ITEM_KEYS.get(metric, metric)
    per_pair = [(items[a.cell].scores, items[b.cell].scores) for a, b in pairs]
    in_group = [(items[a.cell].groups, items[b.cell].groups) for a, b in pairs]
    # label_accuracy has no score on items without a reference label; every pair must score the item.
    first = per_pair[0][0] if per_pair else {}
    common = [
        item
        for item in first
        if all(item_key in s.get(item, {}) and item_key in t.get(item, {}) for s, t in per_pair)
        and (phrasing is None or all(g.get(item) == h.get(item) == phrasing for g, h in in_group))
    ]
    if not common:
        return None
    delia = np.array([[s[item][item_key] for item in common] for s, _ in per_pair])
    other = np.array([[t[item][item_key] for item in common] for _, t in per_pair])
    differences = delia - other
    low, high = seed_item_ci(differences, RESAMPLES, BOOTSTRAP_SEED)
    items_low, items_high = mean_ci(differences.mean(axis=0).tolist(), RESAMPLES, BOOTSTRAP_SEED)
    variant, size, ratio = key
    return PairedRow(
        variant=variant,
        task_size=size,
        ratio=ratio,
        control=control,
        control_ratio=pairs[0][1].ratio,
        metric=metric,
        difference=float(differences.mean()),
        ci_low=low,
        ci_high=high,
        ci_method=CI_PAIRED,
        items_ci_low=items_low,
        items_ci_high=items_high,
        delia_mean=float(delia.mean()),
        control_mean=float(other.mean()),
        n_seeds=len(pairs),
        seeds=[a.seed for a, _ in pairs],
        n_items=len(common),
        pairs=[[a.cell, b.cell] for a, b in pairs],
        phrasing=phrasing,
    )
