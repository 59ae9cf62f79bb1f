"""Run an experiment's cells in order, each a normal pipeline run, resumably.

A finished cell leaves `cell.json` in its run directory (the config hash it ran with and its metrics); a
cell whose `cell.json` matches the config it would run now is skipped without even calling the pipeline.
Anything else goes through `delia.pipeline.run`, whose own stage cache resumes a half-finished cell.
Cells that share (variant, task size, seed) also share model-generated data: a finished sibling's
`diversify/` and `sample/` stages are copied in before the run; the pipeline uses a copy only when its
hash is the one it would compute (same model, options, task data and number of answers), else recomputes.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delia.core.io import atomic_write, read_json
from delia.experiment.grid import cell_config, cell_dir, config_hash
from delia.experiment.records import (
    Cell,
    CellOptions,
    CellRecord,
    Figure,
    GroupFigures,
    PlanSummary,
    TrainSummary,
    read_record,
    write_record,
)
from delia.experiment.spec import ExperimentSpec
from delia.pipeline import run
from delia.pipeline.inputs import check_training_inputs

CELL_FILE = "cell.json"
SHARED_STAGES = ("diversify", "sample")
COPIED = "copied_from_sibling.txt"  # holds the stage hash that was copied
Log = Callable[[str], None]


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # "cached", "ran" or "failed"
    seconds: float
    error: str | None = None
    record: CellRecord | None = None


@dataclass
class GridOutcome:
    outcomes: list[CellOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def read_cell_record(run_dir: Path) -> CellRecord | None:
    record = read_record(run_dir / CELL_FILE, CellRecord)
    if record is not None and record.compute_seconds is None:  # records written before the field
        record.compute_seconds = stage_seconds(run_dir)
    if record is not None and record.by_phrasing is None:  # records written before the field
        record.by_phrasing = phrasing_groups(read_json(run_dir / "metrics.json") or {})
    return record


def phrasing_groups(metrics: dict[str, Any]) -> dict[str, GroupFigures]:
    """metrics.json `by_phrasing` (seen / unseen instruction phrasings scored apart), {} when absent."""
    return {
        group: GroupFigures.model_validate(figures)
        for group, figures in metrics.get("by_phrasing", {}).items()
    }


def finished_record(spec: ExperimentSpec, cell: Cell) -> CellRecord | None:
    """The cell's record when it finished with exactly the config it would run with now."""
    config = cell_config(spec, cell, spec.entry(cell.method))
    record = read_cell_record(cell_dir(spec, cell))
    if record is None or record.config_hash != config_hash(config):
        return None
    return record if (cell_dir(spec, cell) / "metrics.json").exists() else None


def prime_shared_stages(spec: ExperimentSpec, cell: Cell, others: list[Cell]) -> list[str]:
    """Copy finished shareable stages from siblings with the same data; returns what was copied."""
    target = cell_dir(spec, cell)
    copied = []
    for stage in SHARED_STAGES:
        if (target / stage / "manifest.json").exists():
            continue
        for other in others:
            same_data = (other.variant, other.task_size, other.seed) == (
                cell.variant,
                cell.task_size,
                cell.seed,
            )
            source = cell_dir(spec, other) / stage
            if other != cell and same_data and (source / "manifest.json").exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copytree(source, target / stage)
                # Marks the copy, so the cell's cost leaves out time a sibling spent (until it is recomputed).
                (target / stage / COPIED).write_text(str(manifest(source).get("hash")), encoding="utf-8")
                copied.append(f"{stage} from {other.name}")
                break
    return copied


def cell_record(spec: ExperimentSpec, cell: Cell, seconds: float) -> CellRecord:
    """What results.json needs from a finished run directory."""
    run_dir = cell_dir(spec, cell)
    config = cell_config(spec, cell, spec.entry(cell.method))
    metrics = read_json(run_dir / "metrics.json")
    train = manifest(run_dir / "train")
    plan = read_json(run_dir / "plan.json") or {}
    return CellRecord(
        cell=cell,
        config_hash=config_hash(config),
        run_dir=str(run_dir),
        metric_kind=metrics.get("metric"),
        n_eval=metrics.get("n"),
        values={name: Figure.model_validate(figure) for name, figure in metrics.get("values", {}).items()},
        train=TrainSummary(
            steps=train.get("steps", 0 if plan.get("train") is False else None),
            seconds=train.get("train_seconds"),
            final_loss=train.get("final_loss"),
            examples=train.get("counts", {}).get("examples"),
        ),
        plan=PlanSummary(**{key: plan.get(key) for key in PlanSummary.model_fields}),
        options=CellOptions(delia=config.options("delia").model_dump(), eval_limit=config.eval.limit),
        eval_seconds=metrics.get("seconds"),
        wall_seconds=round(seconds, 1),
        compute_seconds=stage_seconds(run_dir),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        by_phrasing=phrasing_groups(metrics),
    )


def stage_seconds(run_dir: Path) -> float:
    """Seconds its stages took when they were computed: a cell resumed or re-evaluated later keeps the cost of
    the stages it reused, which its last invocation's wall time leaves out."""
    total = 0.0
    for stage in (path for path in run_dir.iterdir() if path.is_dir()):
        fields = manifest(stage)
        copied = stage / COPIED
        if not (copied.exists() and copied.read_text(encoding="utf-8") == str(fields.get("hash"))):
            total += fields.get("seconds") or 0.0
    return round(total, 1)


def manifest(stage_dir: Path) -> dict[str, Any]:
    """A stage's manifest fields ({} for a stage not finished): free-form, each stage writes its own."""
    return read_json(stage_dir / "manifest.json") or {}


def run_cell(spec: ExperimentSpec, cell: Cell, siblings: list[Cell], log: Log) -> CellOutcome:
    record = finished_record(spec, cell)
    if record is not None:
        return CellOutcome(cell, "cached", 0.0, record=record)
    start = time.perf_counter()
    try:
        for line in prime_shared_stages(spec, cell, siblings):
            log(f"shared stage: {line}")
        run(cell_config(spec, cell, spec.entry(cell.method)), log=log)
        record = cell_record(spec, cell, time.perf_counter() - start)
        write_record(cell_dir(spec, cell) / CELL_FILE, record)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one broken cell must not stop a grid of hours; it is reported as failed
        atomic_write(cell_dir(spec, cell) / "error.txt", traceback.format_exc())
        return CellOutcome(cell, "failed", time.perf_counter() - start, error=f"{type(err).__name__}: {err}")
    return CellOutcome(cell, "ran", time.perf_counter() - start, record=record)


def eta_text(outcomes: list[CellOutcome], remaining: int) -> str:
    """Mean wall time of the cells actually run (cached ones take no time) times the cells left."""
    ran = [o.seconds for o in outcomes if o.status != "cached"]
    if not ran or not remaining:
        return "eta: -" if remaining else "eta: done"
    seconds = sum(ran) / len(ran) * remaining
    return f"eta ~{seconds / 60:.0f} min ({sum(ran) / len(ran) / 60:.1f} min/cell, {remaining} left)"


def run_grid(
    spec: ExperimentSpec,
    cells: list[Cell],
    *,
    on_cell_done: Callable[[CellOutcome], None] | None = None,
    quiet: bool = False,
) -> GridOutcome:
    """Every cell in order with a rich progress bar (and ETA); failures are recorded and skipped past."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=quiet)
    # A bad record stops the grid now (file:line), not after hours of cells that read the same file.
    check_training_inputs(cell_config(spec, c, spec.entry(c.method)) for c in cells)
    outcome = GridOutcome()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(spec.name, total=len(cells), eta="eta: -")
        for index, cell in enumerate(cells):
            progress.update(bar, description=f"{spec.name}: {cell.name}")

            def log(line: str, name: str = cell.name) -> None:
                progress.console.print(f"[{name}] {line}", highlight=False, markup=False)

            done = run_cell(spec, cell, cells, log)
            outcome.outcomes.append(done)
            if done.status == "failed":
                progress.console.print(f"[red]FAILED[/] {cell.name}: {done.error}", highlight=False)
            elif done.status == "ran":
                progress.console.print(f"done {cell.name} in {done.seconds / 60:.1f} min", highlight=False)
            if on_cell_done is not None:
                on_cell_done(done)
            remaining = len(cells) - index - 1
            progress.update(bar, advance=1, eta=eta_text(outcome.outcomes, remaining))
    return outcome
