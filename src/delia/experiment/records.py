"""Typed records of the files an experiment writes: cell.json, results.json and probes/summary.json
(search.json and recheck.json: search_records.py).

Field order is the files' key order, so a file read and written back keeps its layout. Fields added after
files were committed have defaults, so those files still load (and their reports regenerate).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.dataclasses import dataclass

from delia.core.io import read_json, write_json
from delia.experiment.spec import ExperimentSpec


def slug(label: str) -> str:
    """A file-name-safe form of a label ("w/o diverse" -> "wo-diverse")."""
    text = label.replace("w/o", "wo").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "method"


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: one pipeline run."""

    method: str  # the entry's label
    base_method: str  # the registry name
    task_size: int | None
    ratio: float | None  # None: the method ignores the ratio
    seed: int
    variant: str | None = None
    match: str | None = None  # the name of the cell whose optimizer steps this one matches

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        parts = [self.variant, slug(self.method), f"n{'all' if self.task_size is None else self.task_size}"]
        if self.ratio is not None:
            parts.append(f"r{self.ratio:g}")
        parts.append(f"s{self.seed}")
        return "__".join(p for p in parts if p)


RecordT = TypeVar("RecordT", bound=BaseModel)
SliceKey = tuple[str | None, str, int | None, float | None]  # (variant, method label, task size, ratio)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Figure(BaseModel):
    """One metric of metrics.json: the value and the cell's bootstrap CI over eval examples."""

    model_config = ConfigDict(extra="allow")  # a metric may carry more than these; they are kept

    value: float
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class GroupFigures(Record):
    """One phrasing group's figures in metrics.json `by_phrasing` (eval examples tagged seen / unseen)."""

    n: int | None = None
    values: dict[str, Figure]


class TrainSummary(Record):
    steps: int | None = None
    seconds: float | None = None
    final_loss: float | None = None
    examples: int | None = None


class PlanSummary(Record):
    use_diverse: bool | None = None
    diversify: bool | None = None
    ratio: float | None = None
    special_tokens: list[str] | None = None
    max_steps: int | None = None


class CellOptions(Record):
    delia: dict[str, Any]
    eval_limit: int | None


class CellRecord(Record):
    """cell.json: what results.json needs from a finished run directory."""

    cell: Cell
    config_hash: str
    run_dir: str
    metric_kind: str | None
    n_eval: int | None
    values: dict[str, Figure]
    train: TrainSummary
    plan: PlanSummary
    options: CellOptions
    eval_seconds: float | None
    wall_seconds: float
    compute_seconds: float | None = None  # records written before the field lack it
    finished_at: str
    # metrics.json `by_phrasing` ({} when the eval examples carry no group); None in a record written before
    # the field, which read_cell_record then fills in from the run directory's metrics.json.
    by_phrasing: dict[str, GroupFigures] | None = None


class GroupValue(Record):
    """A row's metric on one phrasing group of the eval examples, with that group's truncated share."""

    value: float
    n: int | None
    ci_low: float | None = None  # the group's bootstrap CI over its eval items
    ci_high: float | None = None
    truncated: float | None = None


class GroupSummary(Record):
    """A summary row's metric on one phrasing group: mean over seeds and its CI, as for the whole row."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    n_seeds: int
    values: list[float]
    n_eval: int | None
    truncated: list[float | None]


class CellRow(Record):
    """One (cell, metric) row of results.json."""

    variant: str | None
    method: str
    base_method: str
    task_size: int | None
    ratio: float | None
    seed: int
    metric: str
    value: float
    n: int | None
    ci_low: float | None
    ci_high: float | None
    train_steps: int | None
    wall_seconds: float | None
    compute_seconds: float | None = None  # results.json files written before the field lack it
    run_dir: str
    cell: str
    truncated: float | None = (
        None  # the cell's truncated share (eval metric `truncated`); older files lack it
    )
    by_phrasing: dict[str, GroupValue] | None = None  # seen / unseen phrasings; None: no groups

    @property
    def slice_key(self) -> SliceKey:
        return (self.variant, self.method, self.task_size, self.ratio)


class SummaryRow(Record):
    """Mean and 95% CI over seeds of one (variant, method, size, ratio, metric): a report table row."""

    variant: str | None
    method: str
    task_size: int | None
    ratio: float | None
    metric: str
    mean: float
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    n_seeds: int
    seeds: list[int]
    sd: float | None
    n_eval: int | None
    values: list[float]
    train_steps: list[int | None]
    truncated: list[float | None] | None = None  # per seed, beside `values`; older files lack it
    by_phrasing: dict[str, GroupSummary] | None = None  # seen / unseen phrasings; None: no groups

    @property
    def slice_key(self) -> SliceKey:
        return (self.variant, self.method, self.task_size, self.ratio)


class AblationSwitches(Record):
    diverse: bool
    diversify: bool


class MethodRow(Record):
    """A grid entry with its registry method and the DELIA ablation switches it runs with."""

    name: str
    method: str
    set: list[str]
    match: str | None
    delia: AblationSwitches


class SkippedCell(Record):
    name: str
    reason: str


class FailedCell(Record):
    name: str
    error: str


class CiNote(Record):
    level: float
    over_seeds: str
    single_seed: str


class GridCells(Record):
    planned: list[Cell]
    skipped: list[SkippedCell]


class RewriteCounts(Record):
    """diversify/: the rewrites its report counts and the examples its manifest counts."""

    requested: int | None = None
    accepted: int | None = None
    accepted_llm: int | None = None
    accepted_rule: int | None = None
    fallbacks: int | None = None  # examples with no accepted rewrite: they keep their original instruction
    examples_in: int | None = None
    examples_out: int | None = None


class PhrasingCoverage(Record):
    """One phrasing group of a cell's eval items against the instructions of the task examples it trained
    on (mix/task.jsonl): at a task size below the full set, a "seen" phrasing may be absent from the cell's
    own subset, and an "unseen" one must never be in it."""

    items: int  # eval items of the group that were scored (the first eval.limit)
    phrasings: int  # distinct phrasings among them
    trained: int  # items whose phrasing is the instruction of some task example the cell trained on


class CellFacts(Record):
    """What a finished cell's run directory says it did: plan.json and the stage manifests, never notes."""

    cell: str
    method: str
    plan_diversify: bool | None  # plan.json `diversify` (None: no plan.json)
    diversify_stage: bool  # diversify/manifest.json exists (a sibling's copy counts only with the plan)
    diversified: bool  # the plan asked for rewrites and the stage that made them is there
    rewrites: RewriteCounts | None
    train_steps: int | None  # train/manifest.json `steps` (0: the plan does not train)
    truncated: float | None  # eval metric `truncated`: answers cut off by eval.max_new_tokens
    n_eval: int | None
    phrasings: dict[str, PhrasingCoverage] | None = None  # None: no groups, no trained task file, older file


class PairedRow(Record):
    """DELIA minus a control on the same eval items, over the seeds where both cells finished: the
    headline statistic, with a bootstrap interval over seeds and items together."""

    variant: str | None
    task_size: int | None
    ratio: float | None  # DELIA's
    control: str  # the control's entry label
    control_ratio: float | None
    metric: str
    difference: float  # mean over seeds and items of DELIA's per-item score minus the control's
    ci_low: float
    ci_high: float
    ci_method: str
    items_ci_low: float  # items-only bootstrap of the seed-averaged differences (leaves out seed spread)
    items_ci_high: float
    delia_mean: float
    control_mean: float
    n_seeds: int
    seeds: list[int]
    n_items: int  # items both answered in every paired seed
    pairs: list[list[str]]  # [DELIA cell, control cell] per seed
    phrasing: str | None = None  # the items of one phrasing group only (seen / unseen); None: every item


class ExperimentResults(Record):
    """results.json."""

    experiment: str
    spec: ExperimentSpec
    command: str
    written_at: str
    ci: CiNote
    methods: list[MethodRow]
    grid: GridCells
    missing: list[str]
    failed: list[FailedCell]
    cells: list[CellRow]
    summary: list[SummaryRow]
    paired: list[PairedRow] = Field(default_factory=list)  # files written before the field lack these two
    facts: list[CellFacts] = Field(default_factory=list)


class ProbeRow(Record):
    """A row of probes/summary.json: one method's probe statistic, mean over seeds with a t-interval."""

    method: str
    keyword: str | None = None  # repr rows
    stat: str | None = None  # divergent rows
    n_prompts: int | None = None
    applicable: bool | None = None
    reason: str | None = None  # why a repr probe did not apply
    token_added: bool = False  # the run had no such token: added for the probe (mean of its pieces' rows)
    where: str | None = None  # "first", "middle" or "last" block
    block: int | None = None
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_seeds: int
    values: list[float] | None = None


class ProbesSummary(Record):
    """probes/summary.json: the probed slice and what each probe found."""

    variant: str | None = None  # files written before the field lack it
    task_size: int | None
    ratio: float | None
    cells: list[str]
    repr: list[ProbeRow] = Field(default_factory=list)
    repr_curves: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    divergent: list[ProbeRow] = Field(default_factory=list)
    losscurve: bool | None = None


def read_record(path: Path, kind: type[RecordT]) -> RecordT | None:
    """The record stored at `path`, or None when the file is missing or unreadable."""
    data = read_json(path)
    return None if data is None else kind.model_validate(data)


def write_record(path: Path, record: BaseModel, *, exclude_unset: bool = False) -> None:
    """`exclude_unset` for records whose optional keys a file has only when they were set (probe rows,
    search points)."""
    write_json(path, record.model_dump(mode="json", exclude_unset=exclude_unset))
