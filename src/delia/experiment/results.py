"""results.json: one row per (cell, metric), a summary over seeds with a 95% CI, the paired differences
DELIA minus its controls (experiment.paired), and each cell's facts read from its run directory
(experiment.facts).

The CI of a summary row is a Student-t interval over the seeds' values (mean +- t(0.975, n-1) s / sqrt(n));
it is not clipped to a metric's range. With one seed there is no spread to use, so the row carries that
cell's own percentile-bootstrap CI over evaluation examples (from metrics.json) and says so in `ci_method`.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from delia.experiment.facts import cell_facts
from delia.experiment.grid import Expansion, cell_config, cell_dir, config_data
from delia.experiment.measures import measure_figures
from delia.experiment.paired import paired_rows
from delia.experiment.records import (
    AblationSwitches,
    Cell,
    CellFacts,
    CellRecord,
    CellRow,
    CiNote,
    ExperimentResults,
    FailedCell,
    Figure,
    GridCells,
    GroupSummary,
    GroupValue,
    MethodRow,
    SummaryRow,
    write_record,
)
from delia.experiment.runner import CELL_FILE, read_cell_record
from delia.experiment.spec import ExperimentSpec

RESULTS_FILE = "results.json"
LEVEL = 0.95
CI_T = "t-interval over seeds"
CI_BOOTSTRAP = "bootstrap over eval examples (1 seed)"
GroupKey = tuple[str | None, str, int | None, float | None, str]  # (variant, method, size, ratio, metric)


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t confidence interval of the mean (needs at least two values)."""
    from scipy.stats import t  # scipy is slow to import and only a written-up grid needs it

    mean = statistics.fmean(values)
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def seeds_interval(figures: list[Figure]) -> tuple[float | None, float | None, str]:
    """(low, high, method) for the mean of one metric over seeds: the t-interval over 2+ seeds, else the
    one cell's bootstrap over its eval examples."""
    if len(figures) >= 2:
        low, high = t_interval([float(figure.value) for figure in figures])
        return low, high, CI_T
    return figures[0].ci_low, figures[0].ci_high, CI_BOOTSTRAP


def cell_rows(record: CellRecord, metrics: list[str] | None) -> list[CellRow]:
    """One row per metric of a finished cell (all of them when `metrics` is None), each with the cell's
    truncated share beside it (whether or not `truncated` is one of `metrics`)."""
    return [
        metric_row(record, metric, figure)
        for metric, figure in record.values.items()
        if metrics is None or metric in metrics
    ]


def metric_row(record: CellRecord, metric: str, figure: Figure) -> CellRow:
    cell = record.cell
    truncated = record.values.get("truncated")
    return CellRow(
        variant=cell.variant,
        method=cell.method,
        base_method=cell.base_method,
        task_size=cell.task_size,
        ratio=cell.ratio,
        seed=cell.seed,
        metric=metric,
        value=figure.value,
        n=figure.n,
        ci_low=figure.ci_low,
        ci_high=figure.ci_high,
        train_steps=record.train.steps,
        wall_seconds=record.wall_seconds,
        compute_seconds=record.compute_seconds,
        run_dir=record.run_dir,
        cell=cell.name,
        truncated=truncated.value if truncated is not None else None,
        by_phrasing=group_values(record, metric),
    )


def group_values(record: CellRecord, metric: str) -> dict[str, GroupValue] | None:
    """The metric on each phrasing group of the cell's eval items (metrics.json `by_phrasing`)."""
    found = {}
    for group, figures in (record.by_phrasing or {}).items():
        figure = figures.values.get(metric)
        if figure is None:
            continue
        truncated = figures.values.get("truncated")
        found[group] = GroupValue(
            value=figure.value,
            n=figures.n,
            ci_low=figure.ci_low,
            ci_high=figure.ci_high,
            truncated=truncated.value if truncated is not None else None,
        )
    return found or None


def summarise(rows: list[CellRow]) -> list[SummaryRow]:
    """Mean and 95% CI over seeds for each (variant, method, size, ratio, metric)."""
    groups: dict[GroupKey, list[CellRow]] = defaultdict(list)
    for row in rows:
        groups[(*row.slice_key, row.metric)].append(row)
    summary = []
    for (variant, method, task_size, ratio, metric), members in groups.items():
        members = sorted(members, key=lambda r: r.seed)
        values = [float(r.value) for r in members]
        low, high, ci_method = interval(values, members[0].ci_low, members[0].ci_high)
        summary.append(
            SummaryRow(
                variant=variant,
                method=method,
                task_size=task_size,
                ratio=ratio,
                metric=metric,
                mean=statistics.fmean(values),
                ci_low=low,
                ci_high=high,
                ci_method=ci_method,
                n_seeds=len(values),
                seeds=[r.seed for r in members],
                sd=statistics.stdev(values) if len(values) >= 2 else None,
                n_eval=members[0].n,
                values=values,
                train_steps=[r.train_steps for r in members],
                truncated=[r.truncated for r in members],
                by_phrasing=group_summaries(members),
            )
        )
    return sorted(summary, key=sort_key)


def interval(
    values: list[float], cell_low: float | None, cell_high: float | None
) -> tuple[float | None, float | None, str]:
    """The t-interval over seeds; with one seed, that cell's own bootstrap CI over its eval examples."""
    if len(values) >= 2:
        low, high = t_interval(values)
        return low, high, CI_T
    return cell_low, cell_high, CI_BOOTSTRAP


def group_summaries(members: list[CellRow]) -> dict[str, GroupSummary] | None:
    """Per phrasing group, the seeds' values of the group with their mean and CI (members sorted by seed)."""
    groups = sorted({group for row in members for group in row.by_phrasing or {}})
    summaries = {}
    for group in groups:
        found = [row.by_phrasing[group] for row in members if row.by_phrasing and group in row.by_phrasing]
        values = [item.value for item in found]
        low, high, ci_method = interval(values, found[0].ci_low, found[0].ci_high)
        summaries[group] = GroupSummary(
            mean=statistics.fmean(values),
            ci_low=low,
            ci_high=high,
            ci_method=ci_method,
            n_seeds=len(values),
            values=values,
            n_eval=found[0].n,
            truncated=[item.truncated for item in found],
        )
    return summaries or None


def sort_key(row: SummaryRow) -> tuple[str, str, int, float, str]:
    return (
        str(row.variant or ""),
        row.method,
        -1 if row.task_size is None else row.task_size,
        -1 if row.ratio is None else row.ratio,
        row.metric,
    )


def collect(spec: ExperimentSpec, cells: list[Cell]) -> tuple[list[CellRow], list[str], list[CellFacts]]:
    """Rows of every finished cell, the names of cells without a finished record, and the finished cells'
    facts from their run directories."""
    rows: list[CellRow] = []
    missing: list[str] = []
    facts: list[CellFacts] = []
    for cell in cells:
        record = read_cell_record(cell_dir(spec, cell))
        if record is None:
            missing.append(cell.name)
        else:
            rows.extend(cell_rows(record, spec.metrics))
            rows.extend(metric_row(record, m, f) for m, f in measure_figures(record).items())
            facts.append(cell_facts(record, cell_config(spec, cell, spec.entry(cell.method))))
    return rows, missing, facts


def failures(spec: ExperimentSpec, cells: list[Cell]) -> list[FailedCell]:
    """Cells whose last attempt crashed (error.txt newer than any cell.json)."""
    found = []
    for cell in cells:
        run_dir = cell_dir(spec, cell)
        error = run_dir / "error.txt"
        record = run_dir / CELL_FILE
        if error.exists() and (not record.exists() or error.stat().st_mtime > record.stat().st_mtime):
            last = error.read_text(encoding="utf-8").strip().splitlines()
            found.append(FailedCell(name=cell.name, error=last[-1] if last else "?"))
    return found


def method_table(spec: ExperimentSpec) -> list[MethodRow]:
    """Each entry with its registry method and, for DELIA, the ablation switches it runs with."""
    rows = []
    for entry in spec.grid.methods:
        delia = config_data(spec, None, entry).get("delia") or {}
        switches = AblationSwitches(
            diverse=delia.get("diverse", True), diversify=delia.get("diversify", True)
        )
        rows.append(
            MethodRow(name=entry.name, method=entry.method, set=entry.set, match=entry.match, delia=switches)
        )
    return rows


def write_results(
    spec: ExperimentSpec, expansion: Expansion, command: str | None = None
) -> ExperimentResults:
    rows, missing, facts = collect(spec, expansion.cells)
    results = ExperimentResults(
        experiment=spec.name,
        spec=spec,
        command=command or " ".join(sys.argv),
        written_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ci=CiNote(level=LEVEL, over_seeds=CI_T, single_seed=CI_BOOTSTRAP),
        methods=method_table(spec),
        grid=GridCells(planned=expansion.cells, skipped=expansion.skipped),
        missing=missing,
        failed=failures(spec, expansion.cells),
        cells=rows,
        summary=summarise(rows),
        paired=paired_rows(spec, rows, spec.metrics),
        facts=facts,
    )
    write_record(Path(spec.out) / RESULTS_FILE, results)
    return results
