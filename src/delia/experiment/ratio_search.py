"""Run the ratio search of an experiment: each evaluated ratio is one cell per search seed, scored on the
search's own data (`search.set`, e.g. a validation slice of the eval file), never on the test cells."""

from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
from delia.core.io import write_json
from delia.experiment.grid import Cell
from delia.experiment.results import CI_BOOTSTRAP, CI_T, t_interval
from delia.experiment.runner import run_cell
from delia.experiment.search import golden_section_search, search_summary
from delia.experiment.spec import ExperimentSpec, MethodEntry

SEARCH_FILE = "search.json"
SEARCH_VARIANT = "search"


def search_spec(spec: ExperimentSpec) -> tuple[ExperimentSpec, MethodEntry]:
    """A copy of the spec whose only variant is the search's overrides, and the searched entry."""
    derived = spec.model_copy(deep=True)
    derived.grid.variants = {SEARCH_VARIANT: list(spec.search.set)}
    labels = {entry.name: entry for entry in spec.grid.methods}
    entry = labels.get(spec.search.method) or MethodEntry(name=spec.search.method, method=spec.search.method)
    if entry.name not in labels:
        derived.grid.methods.append(entry)
    return derived, entry


def search_size(spec: ExperimentSpec) -> int | None:
    if spec.search.task_size is not None:
        return spec.search.task_size
    if spec.headline.task_size is not None:
        return spec.headline.task_size
    return max((s for s in spec.grid.task_sizes if s is not None), default=None)


def run_ratio_search(spec: ExperimentSpec, log_line: Any = print) -> dict[str, Any]:
    """Golden-section search over the ratio; writes {out}/search.json and search.png."""
    derived, entry = search_spec(spec)
    metric = spec.search.metric or spec.headline_metric
    size = search_size(spec)
    details: dict[int, dict[str, Any]] = {}
    done: list[Cell] = []  # earlier search cells: their rewrites of the same task data are reused

    def objective(ratio: int) -> float:
        values, cells = [], []
        for seed in spec.search.seeds:
            cell = Cell(entry.name, entry.method, size, float(ratio), seed, SEARCH_VARIANT)
            log_line(f"search: ratio {ratio}, seed {seed} ({cell.name})")
            outcome = run_cell(derived, cell, done, lambda line, n=cell.name: log_line(f"[{n}] {line}"))
            done.append(cell)
            if outcome.record is None:
                raise DeliaError(f"search cell {cell.name} failed: {outcome.error}")
            figure = outcome.record["values"].get(metric)
            if figure is None:
                raise DeliaError(f"search cell {cell.name} has no metric {metric!r}")
            values.append(float(figure["value"]))
            cells.append((cell, outcome.record, figure))
        details[ratio] = point_details(values, cells)
        log_line(f"search: ratio {ratio} -> {metric} {statistics.fmean(values):.4f}")
        return statistics.fmean(values)

    trace = golden_section_search(
        objective, spec.search.lo, spec.search.hi, spec.search.max_evals, spec.search.include_bounds
    )
    result = {
        "experiment": spec.name,
        "method": entry.name,
        "metric": metric,
        "task_size": size,
        "seeds": spec.search.seeds,
        "settings": spec.search.model_dump(mode="json"),
        "source": spec.source,
        "notes": spec.notes,
        "command": " ".join(sys.argv),
        "algorithm": "golden-section search over log(1 + ratio), integer ratios, memoised",
        **search_summary(trace, details),
    }
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SEARCH_FILE, result)
    from delia.experiment.plots import plot_search

    plot_search(result, out / "search.png")
    return result


class _NotRunYet(Exception):
    pass


def plan_ratio_search(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The search replayed over its finished cells, up to the first point not run yet: what `--dry-run`
    shows. Which ratio comes next depends on the values so far, so nothing further can be listed."""
    from delia.experiment.grid import cell_dir
    from delia.experiment.runner import finished_record

    derived, entry = search_spec(spec)
    metric = spec.search.metric or spec.headline_metric
    size = search_size(spec)
    rows: list[dict[str, Any]] = []

    def objective(ratio: int) -> float:
        values = []
        for seed in spec.search.seeds:
            cell = Cell(entry.name, entry.method, size, float(ratio), seed, SEARCH_VARIANT)
            record = finished_record(derived, cell)
            if record is None:
                state = "started" if cell_dir(derived, cell).exists() else "to run"
                rows.append({"cell": cell.name, "ratio": ratio, "seed": seed, "state": state, "value": None})
                raise _NotRunYet
            values.append(float(record["values"][metric]["value"]))
            rows.append(
                {"cell": cell.name, "ratio": ratio, "seed": seed, "state": "done", "value": values[-1]}
            )
        return statistics.fmean(values)

    with contextlib.suppress(_NotRunYet):
        golden_section_search(
            objective, spec.search.lo, spec.search.hi, spec.search.max_evals, spec.search.include_bounds
        )
    return rows


def point_details(
    values: list[float], cells: list[tuple[Cell, dict[str, Any], dict[str, Any]]]
) -> dict[str, Any]:
    if len(values) >= 2:
        low, high = t_interval(values)
        method = CI_T
    else:
        low, high = cells[0][2].get("ci_low"), cells[0][2].get("ci_high")
        method = CI_BOOTSTRAP
    return {
        "values": values,
        "ci_low": low,
        "ci_high": high,
        "ci_method": method,
        "n_seeds": len(values),
        "n_eval": cells[0][2].get("n"),
        "train_steps": [record["train"]["steps"] for _, record, _ in cells],
        "run_dirs": [record["run_dir"] for _, record, _ in cells],
    }
