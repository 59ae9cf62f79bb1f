"""Expand an experiment into cells, each one ordinary pipeline run.

A method whose plan does not read the diverse ratio (common_it, icl, random_init...) gets one cell per
(variant, size, seed), with ratio None, instead of one per ratio. An entry with `match: LABEL` runs once
per cell of LABEL (its optimizer steps come from that cell), so it follows LABEL's ratios. A ratio a
method rejects (dmt at ratio 0) is skipped with a reason, not run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delia.core.config import KEYING, RunConfig, build_config, deep_merge, parse_overrides
from delia.core.errors import ConfigError
from delia.experiment.records import Cell, SkippedCell
from delia.experiment.spec import ExperimentSpec, MethodEntry, base_data
from delia.methods import get_method
from delia.pipeline import load_task_examples

# The ratio the probe plan is built at: a plan that reads the ratio passes it through.
PROBE_RATIO = 3.0


@dataclass
class Expansion:
    cells: list[Cell]
    skipped: list[SkippedCell] = field(default_factory=list)


def config_data(spec: ExperimentSpec, variant: str | None, entry: MethodEntry) -> dict[str, Any]:
    """Base config + experiment overrides + variant overrides + the entry's own, as a dict."""
    source = spec.source or "experiment"
    data = deep_merge(base_data(spec), parse_overrides(spec.set, f"{source}: set:"))
    if variant is not None:
        variant_set = spec.grid.variants[variant]
        data = deep_merge(data, parse_overrides(variant_set, f"{source}: grid.variants.{variant}:"))
    data = deep_merge(data, parse_overrides(entry.set, f"{source}: grid.methods[{entry.name}].set:"))
    data["method"] = entry.method
    return data


def cell_config(spec: ExperimentSpec, cell: Cell, entry: MethodEntry) -> RunConfig:
    """The run config of one cell: its seed drives the task subset, the mix, training and rewrites."""
    data = config_data(spec, cell.variant, entry)
    assignments: dict[str, Any] = {
        "name": cell.name,
        "run_dir": str(spec.runs_dir),
        "seed": cell.seed,
        "task": {"size": cell.task_size},
        "train": {"seed": cell.seed},
        "mix": {"seed": cell.seed},
        "diversify": {"sampling": {"seed": cell.seed}},
    }
    if cell.ratio is not None:
        assignments["mix"]["ratio"] = cell.ratio
    if cell.match is not None:
        assignments["matched_to"] = str(spec.runs_dir / cell.match)
    return build_config(deep_merge(data, assignments), f"cell {cell.name}")


def config_hash(config: RunConfig) -> str:
    """Independent of key order (a YAML round trip may sort a free-form mapping such as builder_options)."""
    blob = json.dumps(config.model_dump(mode="json", context=KEYING), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reads_ratio(spec: ExperimentSpec, entry: MethodEntry, variant: str | None) -> bool:
    """Whether the entry's plan uses mix.ratio: one plan on the real task data, at a probe ratio, mixes
    diverse data at exactly that ratio."""
    if entry.ratio_free is not None:
        return not entry.ratio_free
    data = config_data(spec, variant, entry)
    data.setdefault("task", {})["size"] = min((s for s in spec.grid.task_sizes if s), default=None)
    data["matched_to"] = "probe"  # common_it_matched's plan needs a name; no run is read
    config = build_config(deep_merge(data, {"mix": {"ratio": PROBE_RATIO}}), f"method {entry.name}")
    plan = get_method(config.method).plan(config, load_task_examples(config))
    return plan.use_diverse and plan.ratio == PROBE_RATIO


def ratio_rejection(spec: ExperimentSpec, cell: Cell, entry: MethodEntry) -> str | None:
    """The reason the method's plan refuses this cell's ratio, or None."""
    config = cell_config(spec, cell, entry)
    try:
        get_method(config.method).plan(config, load_task_examples(config))
    except ConfigError as err:
        return str(err)
    return None


def expand(spec: ExperimentSpec) -> Expansion:
    """Every cell, ordered seed-major (a partial grid then covers every method and variant) and targets
    before the cells that match their steps."""
    variants: list[str | None] = list(spec.grid.variants) or [None]
    labels = [entry.name for entry in spec.grid.methods]
    order = {label: float(i) for i, label in enumerate(labels)}
    for entry in spec.grid.methods:
        if entry.match is not None:
            order[entry.name] = max(order[entry.name], order[entry.match] + 0.5)
    uses_ratio = {variant: ratio_use(spec, variant) for variant in variants}
    cells: list[Cell] = []
    skipped: list[SkippedCell] = []
    for seed in spec.grid.seeds:
        for variant in variants:
            for size in spec.grid.task_sizes:
                for entry in sorted(spec.grid.methods, key=lambda e: order[e.name]):
                    ratios = spec.grid.ratios if uses_ratio[variant][entry.name] else [None]
                    for ratio in ratios:
                        cell = make_cell(spec, entry, variant, size, ratio, seed)
                        reason = ratio_rejection(spec, cell, entry) if ratio is not None else None
                        if reason is not None or (cell.match and cell.match in skipped_names(skipped)):
                            skipped.append(
                                SkippedCell(name=cell.name, reason=reason or f"{cell.match} skipped")
                            )
                        else:
                            cells.append(cell)
    return Expansion(cells, skipped)


def ratio_use(spec: ExperimentSpec, variant: str | None) -> dict[str, bool]:
    """Entry label -> whether its cells vary with the ratio (a `match` entry follows its target)."""
    uses = {e.name: reads_ratio(spec, e, variant) for e in spec.grid.methods if e.match is None}
    for entry in spec.grid.methods:
        if entry.match is not None:
            uses[entry.name] = uses[entry.match]
    return uses


def skipped_names(skipped: list[SkippedCell]) -> set[str]:
    return {item.name for item in skipped}


def make_cell(
    spec: ExperimentSpec,
    entry: MethodEntry,
    variant: str | None,
    size: int | None,
    ratio: float | None,
    seed: int,
) -> Cell:
    match = None
    if entry.match is not None:
        target = spec.entry(entry.match)
        match = Cell(entry.match, target.method, size, ratio, seed, variant).name
    return Cell(entry.name, entry.method, size, ratio, seed, variant, match)


def cell_dir(spec: ExperimentSpec, cell: Cell) -> Path:
    return spec.runs_dir / cell.name
