"""Typed records of search.json (`--search ratio`), budget.json (`--search budget`) and recheck.json
(`--recheck CELL`)."""

from __future__ import annotations

from delia.experiment.records import PairedRow, Record
from delia.experiment.spec import BudgetSpec, SearchSpec


class SearchPoint(Record):
    """One evaluated ratio of a search (the argmax has no `order`)."""

    order: int | None = None
    ratio: int
    value: float
    values: list[float] | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    n_seeds: int | None = None
    n_eval: int | None = None
    train_steps: list[int | None] | None = None
    run_dirs: list[str] | None = None


class SearchResult(Record):
    """search.json."""

    experiment: str
    method: str
    metric: str
    task_size: int | None
    seeds: list[int]
    settings: SearchSpec
    source: str | None
    notes: list[str]
    command: str
    algorithm: str
    points: list[SearchPoint]
    argmax: SearchPoint
    evaluations: int
    brackets: list[list[int]]


class SearchPlanRow(Record):
    """A point of `--search ratio --dry-run`: its cell and whether it has run."""

    cell: str
    ratio: int
    seed: int
    state: str  # "done", "started" or "to run"
    value: float | None


class RecheckItem(Record):
    metric: str
    stored: float
    rerun: float | None
    difference: float | None
    summary_ci: list[float | None]
    summary_ci_method: str
    within_summary_ci: bool
    cell_bootstrap_ci: list[float | None]
    within_cell_ci: bool


class RecheckReport(Record):
    """recheck.json: one cell rerun from scratch against what results.json holds."""

    cell: str
    run_dir: str
    seconds: float
    checked_at: str
    checks: list[RecheckItem]


class BudgetCandidate(Record):
    """One setting of one method at one budget, scored on the dev split."""

    set: list[str]
    value: float | None  # mean over the dev seeds; None: not run yet
    values: list[float]
    train_steps: list[int | None]
    cells: list[str]


class BudgetTest(Record):
    """The chosen setting on the test contexts: mean over grid.seeds with its interval."""

    value: float
    values: list[float]
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    n_eval: int | None
    train_steps: list[int | None]
    cells: list[str]


class BudgetRow(Record):
    budget: int
    method: str
    candidates: list[BudgetCandidate]
    chosen: list[str] | None  # None until every candidate has its dev score
    test: BudgetTest | None


class BudgetResult(Record):
    """budget.json."""

    experiment: str
    metric: str
    task_size: int | None
    dev_seeds: list[int]
    test_seeds: list[int]
    settings: BudgetSpec
    source: str | None
    notes: list[str]
    command: str
    rows: list[BudgetRow]
    paired: list[PairedRow]  # DELIA minus each other method at each budget, on the same test items
