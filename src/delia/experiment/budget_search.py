"""`--search budget`: which method is best at a given training budget when every method is tuned.

The step-matched control answers "same steps, untuned"; a user choosing a method wants "same budget, each at
its best". For every budget in `budget.steps` (optimizer steps: `train.max_steps`, the data repeated as
often as needed) and every method of `grid.methods` but the step-matched control (here every method trains
for the budget), each of the method's candidate settings (`budget.candidates[label]`, override lists such
as `[train.lr=3e-4, mix.ratio=10]`; one candidate, the config as it is, for a method not listed) runs on the
dev split (`budget.set`: contexts disjoint from the test ones) with the dev seeds. The candidate with the
best mean dev score (ties: the one listed first) then runs on the test contexts with every seed of
`grid.seeds`, and DELIA is paired with every other method on the same test items. The test contexts never
choose anything.

Every cell is an ordinary run under the experiment's runs directory, so the search resumes like a grid:
dev cells are `b{steps}-{method}-c{candidate}__...`, test cells `b{steps}-{method}__...`. A method that does
not train (icl) runs the same at every budget. Writes {out}/budget.json.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from delia.core.errors import DeliaError
from delia.experiment.paired import cell_items, paired_metric, paired_row
from delia.experiment.records import Cell, CellRecord, PairedRow, slug, write_record
from delia.experiment.results import cell_rows, seeds_interval
from delia.experiment.runner import finished_record, run_cell
from delia.experiment.search_records import BudgetCandidate, BudgetResult, BudgetRow, BudgetTest
from delia.experiment.spec import DELIA_LABEL, ExperimentSpec, MethodEntry

BUDGET_FILE = "budget.json"
Log = Callable[[str], None]
Tested = dict[tuple[int, str], list[CellRecord | None]]  # (budget, method) -> test records, one per grid seed


def budget_methods(spec: ExperimentSpec) -> list[MethodEntry]:
    """`budget.methods`, by default the grid's methods less the step-matched control: here every method
    trains for the budget's steps."""
    if spec.budget.methods is not None:
        unknown = sorted(set(spec.budget.methods) - {entry.name for entry in spec.grid.methods})
        if unknown:
            raise DeliaError(f"budget.methods names {unknown}, which are not in grid.methods")
        return [spec.entry(label) for label in spec.budget.methods]
    return [entry for entry in spec.grid.methods if entry.method != "common_it_matched"]


def candidates_of(spec: ExperimentSpec, label: str) -> list[list[str]]:
    return spec.budget.candidates.get(label) or [[]]


def dev_variant(steps: int, label: str, index: int) -> str:
    return f"b{steps}-{slug(label)}-c{index}"


def test_variant(steps: int, label: str) -> str:
    return f"b{steps}-{slug(label)}"


def budget_spec(spec: ExperimentSpec, chosen: dict[tuple[int, str], list[str]]) -> ExperimentSpec:
    """A copy of the spec whose variants are the dev runs of every candidate and the test runs of the
    settings chosen so far; each variant's overrides end with its budget."""
    unknown = sorted(set(spec.budget.candidates) - {entry.name for entry in budget_methods(spec)})
    if unknown:
        raise DeliaError(f"budget.candidates names {unknown}, which are not among the compared methods")
    if not spec.budget.steps:
        raise DeliaError("--search budget needs budget.steps (optimizer-step budgets, e.g. [23, 92])")
    derived = spec.model_copy(deep=True)
    variants: dict[str, list[str]] = {}
    for steps in spec.budget.steps:
        budget = [f"train.max_steps={steps}"]
        for entry in budget_methods(spec):
            for index, overrides in enumerate(candidates_of(spec, entry.name)):
                variants[dev_variant(steps, entry.name, index)] = [*spec.budget.set, *overrides, *budget]
            if (steps, entry.name) in chosen:
                variants[test_variant(steps, entry.name)] = [*chosen[steps, entry.name], *budget]
    derived.grid.variants = variants
    return derived


def cell_of(entry: MethodEntry, size: int | None, seed: int, variant: str) -> Cell:
    # No ratio: a candidate sets mix.ratio itself, and the cell must not overwrite it.
    return Cell(entry.name, entry.method, size, None, seed, variant)


def metric_value(record: CellRecord, metric: str) -> float:
    figure = record.values.get(metric)
    if figure is None:
        raise DeliaError(f"budget cell {record.cell.name} has no metric {metric!r}")
    return float(figure.value)


def run_budget_search(spec: ExperimentSpec, log: Log = print, *, run_cells: bool = True) -> BudgetResult:
    """Dev runs, choices, test runs, pairs; writes {out}/budget.json. With run_cells=False nothing runs or
    is written: the result describes what has finished (what `--dry-run` prints)."""
    metric = spec.budget.metric or spec.headline_metric
    size = spec.search_task_size(spec.budget.task_size)
    done: list[Cell] = []  # earlier cells: their shareable stages (rewrites, samples) are reused

    def record_of(derived: ExperimentSpec, cell: Cell) -> CellRecord | None:
        if not run_cells:
            return finished_record(derived, cell)
        outcome = run_cell(derived, cell, done, lambda line, n=cell.name: log(f"[{n}] {line}"))
        done.append(cell)
        if outcome.record is None:
            raise DeliaError(f"budget cell {cell.name} failed: {outcome.error}")
        return outcome.record

    chosen: dict[tuple[int, str], list[str]] = {}
    tested: Tested = {}
    rows: list[BudgetRow] = []
    for steps in spec.budget.steps:
        for entry in budget_methods(spec):
            derived = budget_spec(spec, chosen)
            candidates = []
            for index, overrides in enumerate(candidates_of(spec, entry.name)):
                cells = [
                    cell_of(entry, size, s, dev_variant(steps, entry.name, index)) for s in spec.budget.seeds
                ]
                records = [record_of(derived, cell) for cell in cells]
                candidates.append(dev_candidate(overrides, cells, records, metric))
            if any(c.value is None for c in candidates):
                rows.append(
                    BudgetRow(budget=steps, method=entry.name, candidates=candidates, chosen=None, test=None)
                )
                continue
            best = max(range(len(candidates)), key=lambda i: (candidates[i].value, -i))
            chosen[steps, entry.name] = candidates[best].set
            log(f"budget {steps}: {entry.name} -> {candidates[best].set or 'as configured'} ({metric} dev)")
            derived = budget_spec(spec, chosen)
            tests = [cell_of(entry, size, s, test_variant(steps, entry.name)) for s in spec.grid.seeds]
            records = tested[steps, entry.name] = [record_of(derived, cell) for cell in tests]
            test = test_figure(records, metric) if all(r is not None for r in records) else None
            rows.append(
                BudgetRow(
                    budget=steps,
                    method=entry.name,
                    candidates=candidates,
                    chosen=chosen[steps, entry.name],
                    test=test,
                )
            )
    result = BudgetResult(
        experiment=spec.name,
        metric=metric,
        task_size=size,
        dev_seeds=spec.budget.seeds,
        test_seeds=spec.grid.seeds,
        settings=spec.budget,
        source=spec.source,
        notes=spec.notes,
        command=" ".join(sys.argv),
        rows=rows,
        paired=budget_pairs(spec, tested, metric, size),
    )
    if run_cells:
        write_record(Path(spec.out) / BUDGET_FILE, result, exclude_unset=True)
    return result


def dev_candidate(
    overrides: list[str], cells: list[Cell], records: list[CellRecord | None], metric: str
) -> BudgetCandidate:
    finished = [r for r in records if r is not None]
    values = [metric_value(r, metric) for r in finished]
    return BudgetCandidate(
        set=overrides,
        value=statistics.fmean(values) if len(finished) == len(records) else None,
        values=values,
        train_steps=[r.train.steps for r in finished],
        cells=[cell.name for cell in cells],
    )


def test_figure(records: list[CellRecord | None], metric: str) -> BudgetTest:
    finished = [r for r in records if r is not None]
    values = [metric_value(r, metric) for r in finished]
    low, high, method = seeds_interval([r.values[metric] for r in finished])
    return BudgetTest(
        value=statistics.fmean(values),
        values=values,
        ci_low=low,
        ci_high=high,
        ci_method=method,
        n_eval=finished[0].values[metric].n,
        train_steps=[r.train.steps for r in finished],
        cells=[r.cell.name for r in finished],
    )


def budget_pairs(
    spec: ExperimentSpec,
    tested: Tested,
    metric: str,
    size: int | None,
) -> list[PairedRow]:
    """DELIA (tuned) minus every other tuned method at each budget, per seed on the same test items (a
    seed where either record is None, not finished, is left out)."""
    out = []
    for steps in spec.budget.steps:
        for other in (e for e in budget_methods(spec) if e.name != DELIA_LABEL):
            seeds = zip(
                tested.get((steps, DELIA_LABEL), []), tested.get((steps, other.name), []), strict=False
            )
            pairs = [
                (cell_rows(a, [metric])[0], cell_rows(b, [metric])[0])
                for a, b in seeds
                if a is not None and b is not None
            ]
            items = {row.cell: cell_items(Path(row.run_dir)) for pair in pairs for row in pair}
            key = (f"b{steps}", size, None)
            if pairs and (row := paired_row(key, other.name, paired_metric(metric), pairs, items)):
                out.append(row)
    return out
