"""`--recheck CELL`: run one finished cell again from scratch and compare with what results.json holds.

The rerun gets its own run directory (`recheck__CELL`, nothing cached) and the same config otherwise. For
each metric it reports the stored value, the new value, and whether the new value lies inside the stored
summary's 95% CI over seeds (and inside the cell's own bootstrap CI over eval examples).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
from delia.core.io import write_json
from delia.experiment.grid import cell_config, expand
from delia.experiment.results import RESULTS_FILE
from delia.experiment.spec import ExperimentSpec

RECHECK_FILE = "recheck.json"


def stored_results(spec: ExperimentSpec) -> dict[str, Any]:
    path = Path(spec.out) / RESULTS_FILE
    if not path.exists():
        raise DeliaError(f"{path} does not exist: run the experiment first")
    return json.loads(path.read_text(encoding="utf-8"))


def recheck_cell(spec: ExperimentSpec, name: str, log: Any = print) -> dict[str, Any]:
    from delia.pipeline import run

    results = stored_results(spec)
    rows = [r for r in results["cells"] if r["cell"] == name]
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
    values = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["values"]
    checks = []
    for row in rows:
        new = values.get(row["metric"])
        summary = next(
            s
            for s in results["summary"]
            if (s["variant"], s["method"], s["task_size"], s["ratio"], s["metric"])
            == (row["variant"], row["method"], row["task_size"], row["ratio"], row["metric"])
        )
        new_value = None if new is None else float(new["value"])
        checks.append(
            {
                "metric": row["metric"],
                "stored": row["value"],
                "rerun": new_value,
                "difference": None if new_value is None else new_value - row["value"],
                "summary_ci": [summary["ci_low"], summary["ci_high"]],
                "summary_ci_method": summary["ci_method"],
                "within_summary_ci": new_value is not None
                and summary["ci_low"] <= new_value <= summary["ci_high"],
                "cell_bootstrap_ci": [row["ci_low"], row["ci_high"]],
                "within_cell_ci": new_value is not None and row["ci_low"] <= new_value <= row["ci_high"],
            }
        )
    report = {
        "cell": name,
        "run_dir": str(run_dir),
        "seconds": round(time.perf_counter() - start, 1),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checks": checks,
    }
    write_json(Path(spec.out) / RECHECK_FILE, report)
    return report
