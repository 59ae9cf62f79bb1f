"""Run the ratio search of an experiment: each evaluated ratio is one cell per search seed, scored on the
search's own data (`search.set`, e.g. a validation slice of the eval file), never on the test cells."""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from delia.core.errors import DeliaError
from delia.experiment.grid import cell_dir
from delia.experiment.records import (
    Cell,
    CellRecord,
    Figure,
    write_record,
)
from delia.experiment.report.plots import plot_search
from delia.experiment.results import seeds_interval
from delia.experiment.runner import finished_record, run_cell
from delia.experiment.search import golden_section_search, search_points
from delia.experiment.search_records import SearchPlanRow, SearchPoint, SearchResult
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


def run_ratio_search(spec: ExperimentSpec, log_line: Callable[[str], None] = print) -> SearchResult:
    """Golden-section search over the ratio; writes {out}/search.json and search.png."""
    derived, entry = search_spec(spec)
    metric = spec.search.metric or spec.headline_metric
    size = spec.search_task_size(spec.search.task_size)
    stats: dict[int, SearchPoint] = {}
    done: list[Cell] = []  # earlier search cells: their rewrites of the same task data are reused

    def objective(ratio: int) -> float:
        scored: list[tuple[CellRecord, Figure]] = []
        for seed in spec.search.seeds:
            cell = Cell(entry.name, entry.method, size, float(ratio), seed, SEARCH_VARIANT)
            log_line(f"search: ratio {ratio}, seed {seed} ({cell.name})")
            outcome = run_cell(derived, cell, done, lambda line, n=cell.name: log_line(f"[{n}] {line}"))
            done.append(cell)
            if outcome.record is None:
                raise DeliaError(f"search cell {cell.name} failed: {outcome.error}")
            figure = outcome.record.values.get(metric)
            if figure is None:
                raise DeliaError(f"search cell {cell.name} has no metric {metric!r}")
            scored.append((outcome.record, figure))
        stats[ratio] = scored_point(ratio, scored)
        log_line(f"search: ratio {ratio} -> {metric} {stats[ratio].value:.4f}")
        return stats[ratio].value

    trace = golden_section_search(
        objective, spec.search.lo, spec.search.hi, spec.search.max_evals, spec.search.include_bounds
    )
    points, argmax = search_points(trace, stats)
    result = SearchResult(
        experiment=spec.name,
        method=entry.name,
        metric=metric,
        task_size=size,
        seeds=spec.search.seeds,
        settings=spec.search,
        source=spec.source,
        notes=spec.notes,
        command=" ".join(sys.argv),
        algorithm="golden-section search over log(1 + ratio), integer ratios, memoised",
        points=points,
        argmax=argmax,
        evaluations=len(trace.points),
        brackets=[list(b) for b in trace.brackets],
    )
    out = Path(spec.out)
    write_record(out / SEARCH_FILE, result, exclude_unset=True)
    plot_search(result, out / "search.png")
    return result


class _NotRunYet(Exception):
    pass


def plan_ratio_search(spec: ExperimentSpec) -> list[SearchPlanRow]:
    """The search replayed over its finished cells, up to the first point not run yet: what `--dry-run`
    shows. Which ratio comes next depends on the values so far, so nothing further can be listed."""
    derived, entry = search_spec(spec)
    metric = spec.search.metric or spec.headline_metric
    size = spec.search_task_size(spec.search.task_size)
    rows: list[SearchPlanRow] = []

    def objective(ratio: int) -> float:
        values = []
        for seed in spec.search.seeds:
            cell = Cell(entry.name, entry.method, size, float(ratio), seed, SEARCH_VARIANT)
            record = finished_record(derived, cell)
            if record is None:
                state = "started" if cell_dir(derived, cell).exists() else "to run"
                rows.append(SearchPlanRow(cell=cell.name, ratio=ratio, seed=seed, state=state, value=None))
                raise _NotRunYet
            values.append(float(record.values[metric].value))
            rows.append(SearchPlanRow(cell=cell.name, ratio=ratio, seed=seed, state="done", value=values[-1]))
        return statistics.fmean(values)

    with contextlib.suppress(_NotRunYet):
        golden_section_search(
            objective, spec.search.lo, spec.search.hi, spec.search.max_evals, spec.search.include_bounds
        )
    return rows


def scored_point(ratio: int, scored: list[tuple[CellRecord, Figure]]) -> SearchPoint:
    """A ratio's point: the mean over the search seeds with a t-interval (the cell's bootstrap CI for one)."""
    values = [float(figure.value) for _, figure in scored]
    low, high, ci_method = seeds_interval([figure for _, figure in scored])
    return SearchPoint(
        ratio=ratio,
        value=statistics.fmean(values),
        values=values,
        ci_low=low,
        ci_high=high,
        ci_method=ci_method,
        n_seeds=len(values),
        n_eval=scored[0][1].n,
        train_steps=[record.train.steps for record, _ in scored],
        run_dirs=[record.run_dir for record, _ in scored],
    )
