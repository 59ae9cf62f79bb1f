"""Typed records of search.json (`--search ratio`) and recheck.json (`--recheck CELL`)."""

from __future__ import annotations

from delia.experiment.records import Record
from delia.experiment.spec import SearchSpec


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
