"""The experiment YAML: a base run config plus a grid of methods x task sizes x diverse ratios x seeds.

    name: sep-json
    out: experiments/sep-json              # results.json, report, plots, probes
    runs: experiments/sep-json/runs        # one pipeline run directory per cell (default: {out}/runs)
    base: configs/delia-sep-json-135m.yaml # a path, or the run config inline as a mapping
    set: [eval.limit=24]                   # `--set`-style overrides of the base, for every cell
    grid:
      methods:                             # a registry name, or {name, method, set, match, ratio_free}
        - delia
        - {name: common_it_matched, method: common_it_matched, match: delia}
        - {name: w/o diverse, method: delia, set: [delia.diverse=false]}
      task_sizes: [30]                     # null: the whole task set
      ratios: [0, 10]
      seeds: [0, 1, 2]
      variants: {en-is: [...], is-en: [...]}   # optional named override sets (e.g. directions)
      controls: true                       # add common_it_matched (match: delia) when `delia` is listed

A grid with an entry labelled `delia` gets the step-matched control `common_it_matched` (common IT trained
for exactly as many optimizer steps as each DELIA cell) unless it lists a common_it_matched entry itself or
sets `grid.controls: false`: without it, a DELIA gain cannot be told apart from a larger training budget.

Relative paths in the base config are read from the base file's directory (an inline base's from the
experiment file's), as for `delia run`; `set` paths, like `--set`, from the working directory. `base` itself
is tried relative to the working directory first, then to the experiment file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from delia.core.config import deep_merge, parse_overrides
from delia.core.errors import ConfigError
from delia.core.paths import resolve_config_paths


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodEntry(Strict):
    name: str  # the label in tables and the cell's directory name
    method: str  # the registry name
    set: list[str] = Field(default_factory=list)  # extra overrides for this method's cells
    match: str | None = None  # label of the entry whose optimizer steps this one matches (common_it_matched)
    ratio_free: bool | None = None  # None: detected from the method's plan


class Grid(Strict):
    methods: list[MethodEntry]
    task_sizes: list[int | None] = Field(default_factory=lambda: [None])
    ratios: list[float] = Field(default_factory=lambda: [10.0])
    seeds: list[int] = Field(default_factory=lambda: [0])
    variants: dict[str, list[str]] = Field(default_factory=dict)
    controls: bool = True  # add the step-matched control to a grid with DELIA (see add_controls)

    @field_validator("methods", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        """A bare registry name is an entry labelled with it."""
        if not isinstance(value, list):
            return value
        return [{"name": item, "method": item} if isinstance(item, str) else item for item in value]

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if any(r < 0 for r in value):
            raise ValueError("ratios must be >= 0")
        return value


class Headline(Strict):
    """Which slice the single-slice tables (ablations, probes, loss curves) show."""

    metric: str | None = None  # default: the first of `metrics`
    task_size: int | None = None  # default: the largest size in the grid
    ratio: float | None = None  # default: the largest ratio in the grid


class ProbeSpec(Strict):
    repr: bool = True
    keywords: list[str] = Field(default_factory=lambda: ["json", "thought"])
    token: str = "<sep>"
    # A run without the token (common IT, DMT...): probe it with the token added for the probe, its row the
    # mean of its plain-text pieces' embeddings, so Table 1 compares every method; "skip" reports n/a.
    missing_token: Literal["skip", "add"] = "add"
    divergent: bool = True
    divergent_limit: int = 16
    losscurve: bool = True
    # Per cell, every slice (experiment.cell_probes): the held-out task loss at the end of training (Figure
    # 3), and ordinary questions answered in the task's format (leakage) or with the known fact.
    heldout_loss: bool = True
    leakage: bool = True
    seeds: list[int] | None = None  # None: every seed of the grid
    device: str = "cpu"


class SearchSpec(Strict):
    """`--search ratio`: golden-section search over log(1 + ratio) for one method, size and seed set."""

    method: str = "delia"  # a label from grid.methods, or a registry name
    metric: str | None = None  # default: the headline metric
    lo: float = 0.0
    hi: float = 64.0
    max_evals: int = 6
    include_bounds: bool = True  # also evaluate lo and hi (the optimum may be at an end)
    task_size: int | None = None  # default: the headline size
    seeds: list[int] = Field(default_factory=lambda: [0])
    set: list[str] = Field(default_factory=list)  # e.g. a validation split of the eval data


class BudgetSpec(Strict):
    """`--search budget`: every method tuned on a dev split at each training budget, then tested."""

    steps: list[int] = Field(default_factory=list)  # optimizer-step budgets (train.max_steps)
    methods: list[str] | None = None  # labels of grid.methods to compare; default all but the matched control
    # Per method label, the settings to try (each a list of overrides, e.g. [train.lr=3e-4, mix.ratio=10]);
    # a method listed nowhere runs as configured, one candidate.
    candidates: dict[str, list[list[str]]] = Field(default_factory=dict)
    metric: str | None = None  # default: the headline metric
    task_size: int | None = None  # default: the headline size
    seeds: list[int] = Field(default_factory=lambda: [0])  # the dev runs' seeds (the test runs: grid.seeds)
    set: list[str] = Field(default_factory=list)  # the dev split: eval contexts disjoint from the test ones

    @field_validator("steps")
    @classmethod
    def _positive(cls, steps: list[int]) -> list[int]:
        if any(step < 1 for step in steps):
            raise ValueError(f"every budget must be >= 1 optimizer step, got {steps}")
        return steps


class ExperimentSpec(Strict):
    name: str
    out: str
    runs: str | None = None
    base: str | dict[str, Any]
    set: list[str] = Field(default_factory=list)
    grid: Grid
    metrics: list[str] = Field(default_factory=lambda: ["json_format", "label_accuracy"])
    headline: Headline = Field(default_factory=Headline)
    probes: ProbeSpec = Field(default_factory=ProbeSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    notes: list[str] = Field(default_factory=list)  # what was cut and why: printed in the report
    source: str | None = None  # the YAML this came from (filled in by load_experiment)

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out) / "runs"

    @property
    def headline_metric(self) -> str:
        return self.headline.metric or self.metrics[0]

    def search_task_size(self, own: int | None) -> int | None:
        """A search's task size: its own setting, else the headline's, else the grid's largest."""
        if own is not None:
            return own
        if self.headline.task_size is not None:
            return self.headline.task_size
        return max((s for s in self.grid.task_sizes if s is not None), default=None)

    def entry(self, label: str) -> MethodEntry:
        for entry in self.grid.methods:
            if entry.name == label:
                return entry
        raise ConfigError("grid.methods", f"no method entry named {label!r}")


DELIA_LABEL = "delia"  # the entry the headline and the controls are about
CONTROL = MethodEntry(name="common_it_matched", method="common_it_matched", match=DELIA_LABEL)


def add_controls(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with the step-matched control appended when it lists `delia` but no common_it_matched
    entry (and `grid.controls` is on); its cells follow DELIA's sizes, ratios, seeds and variants."""
    labels = {entry.name for entry in spec.grid.methods}
    listed = any(entry.method == CONTROL.method for entry in spec.grid.methods)
    if not spec.grid.controls or DELIA_LABEL not in labels or listed or CONTROL.name in labels:
        return spec
    grid = spec.grid.model_copy(update={"methods": [*spec.grid.methods, CONTROL.model_copy()]})
    return spec.model_copy(update={"grid": grid})


def validate_entries(spec: ExperimentSpec) -> None:
    labels = [entry.name for entry in spec.grid.methods]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate:
        raise ConfigError("grid.methods", f"two entries are named {duplicate!r}: give them distinct names")
    for entry in spec.grid.methods:
        if entry.match is not None and entry.match not in labels:
            raise ConfigError(f"grid.methods.{entry.name}.match", f"no entry named {entry.match!r}")
        if entry.match == entry.name:
            raise ConfigError(f"grid.methods.{entry.name}.match", "an entry cannot match itself")
    if not spec.grid.methods or not spec.grid.seeds:
        raise ConfigError("grid", "needs at least one method and one seed")


def build_spec(data: dict[str, Any], source: str) -> ExperimentSpec:
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{field} ({source})", message.removeprefix("Value error, ")) from None
    spec = add_controls(spec)
    validate_entries(spec)
    return spec


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read an experiment YAML; `overrides` (`grid.seeds=[0]`...) edit the experiment's own keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "experiment file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping")
    edits = parse_overrides(overrides or [])
    grid_edits = edits.get("grid")
    if isinstance(grid_edits, dict) and isinstance(grid_edits.get("methods"), list):
        grid_edits["methods"] = entries_by_label(
            (data.get("grid") or {}).get("methods"), grid_edits["methods"]
        )
    data = deep_merge(data, edits)
    data["source"] = str(path)
    spec = build_spec(data, str(path))
    if isinstance(spec.base, str):
        spec.base = str(resolve_base_path(spec.base, path))
    return spec


def entries_by_label(listed: Any, chosen: list[Any]) -> list[Any]:
    """`--set grid.methods=[delia,"w/o diverse"]`: a label of one of the file's own entries stands for that
    entry (its method and overrides); any other name is a registry method, as in the file."""
    labels = {item.get("name"): item for item in listed or [] if isinstance(item, dict)}
    return [labels.get(item, item) if isinstance(item, str) else item for item in chosen]


def resolve_base_path(base: str, experiment_file: Path) -> Path:
    for candidate in (Path(base), experiment_file.parent / base):
        if candidate.is_file():
            return candidate
    raise ConfigError("base", f"{base} does not exist (relative to . or to {experiment_file.parent})")


def base_data(spec: ExperimentSpec) -> dict[str, Any]:
    """The base run config as a dict (before the experiment's own overrides)."""
    if isinstance(spec.base, dict):  # inline: its relative paths are beside the experiment file
        return resolve_config_paths(dict(spec.base), Path(spec.source or ".").parent)
    loaded = yaml.safe_load(Path(spec.base).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(spec.base, "the base run config must be a mapping of sections")
    data = {key: value for key, value in loaded.items() if value is not None}
    return resolve_config_paths(data, Path(spec.base).parent)  # as load_config reads a run config
