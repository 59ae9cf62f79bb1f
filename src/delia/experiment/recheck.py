"""`--recheck CELL`: run one finished cell again from scratch and compare with what results.json holds.

The rerun gets its own run directory (`recheck__CELL`, nothing cached) and the same config otherwise. For
each metric it reports the stored value, the new value, and whether the new value lies inside the stored
summary's 95% CI over seeds (and inside the cell's own bootstrap CI over eval examples).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from delia.core.errors import DeliaError
from delia.core.io import read_json
from delia.experiment.grid import cell_config, expand
from delia.experiment.measures import MEASURES
from delia.experiment.records import (
    CellRow,
    ExperimentResults,
    SummaryRow,
    read_record,
    write_record,
)
from delia.experiment.results import RESULTS_FILE
from delia.experiment.search_records import RecheckItem, RecheckReport
from delia.experiment.spec import ExperimentSpec
from delia.pipeline import run

RECHECK_FILE = "recheck.json"


def stored_results(spec: ExperimentSpec) -> ExperimentResults:
    path = Path(spec.out) / RESULTS_FILE
    results = read_record(path, ExperimentResults)
    if results is None:
        raise DeliaError(f"{path} does not exist: run the experiment first")
    return results


def recheck_cell(spec: ExperimentSpec, name: str, log: Callable[[str], None] = print) -> RecheckReport:
    results = stored_results(spec)
    # The per-cell measurements (held-out loss, leakage) are not in a rerun's metrics.json: not rechecked.
    rows = [r for r in results.cells if r.cell == name and r.metric not in MEASURES]
    if not rows:
        raise DeliaError(f"no finished cell named {name!r} in results.json")
    cell = next((c for c in expand(spec).cells if c.name == name), None)
    if cell is None:
        raise DeliaError(f"cell {name!r} is not in this experiment's grid")
    config = cell_config(spec, cell, spec.entry(cell.method))
    config.name = f"recheck__{name}"
    run_dir = Path(config.run_dir) / config.name
    shutil.rmtree(run_dir, ignore_errors=True)  # from scratch: no stage may come from a cache
    start = time.perf_counter()
    run(config, log=log)
    values = read_json(run_dir / "metrics.json")["values"]
    checks = []
    for row in rows:
        new = values.get(row.metric)
        summary = next(s for s in results.summary if (*s.slice_key, s.metric) == (*row.slice_key, row.metric))
        checks.append(compare(row, summary, None if new is None else float(new["value"])))
    report = RecheckReport(
        cell=name,
        run_dir=str(run_dir),
        seconds=round(time.perf_counter() - start, 1),
        checked_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        checks=checks,
    )
    write_record(Path(spec.out) / RECHECK_FILE, report)
    return report


def compare(row: CellRow, summary: SummaryRow, rerun: float | None) -> RecheckItem:
    """The rerun value of one metric against the stored one, its summary CI and the cell's bootstrap CI."""
    return RecheckItem(
        metric=row.metric,
        stored=row.value,
        rerun=rerun,
        difference=None if rerun is None else rerun - row.value,
        summary_ci=[summary.ci_low, summary.ci_high],
        summary_ci_method=summary.ci_method,
        within_summary_ci=rerun is not None and summary.ci_low <= rerun <= summary.ci_high,
        cell_bootstrap_ci=[row.ci_low, row.ci_high],
        within_cell_ci=rerun is not None and row.ci_low <= rerun <= row.ci_high,
    )
