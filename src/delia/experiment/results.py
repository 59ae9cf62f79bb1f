"""results.json: one row per (cell, metric), and a summary over seeds with a 95% CI.

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
from typing import Any

from delia.core.io import write_json
from delia.experiment.grid import Cell, Expansion, cell_dir
from delia.experiment.runner import read_cell_record
from delia.experiment.spec import ExperimentSpec

RESULTS_FILE = "results.json"
LEVEL = 0.95
CI_T = "t-interval over seeds"
CI_BOOTSTRAP = "bootstrap over eval examples (1 seed)"
GROUP_KEYS = ("variant", "method", "task_size", "ratio", "metric")


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t confidence interval of the mean (needs at least two values)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def cell_rows(record: dict[str, Any], metrics: list[str] | None) -> list[dict[str, Any]]:
    """One row per metric of a finished cell (all of them when `metrics` is None)."""
    cell = record["cell"]
    rows = []
    for metric, figure in record["values"].items():
        if metrics is not None and metric not in metrics:
            continue
        rows.append(
            {
                "variant": cell.get("variant"),
                "method": cell["method"],
                "base_method": cell["base_method"],
                "task_size": cell["task_size"],
                "ratio": cell["ratio"],
                "seed": cell["seed"],
                "metric": metric,
                "value": figure["value"],
                "n": figure.get("n"),
                "ci_low": figure.get("ci_low"),
                "ci_high": figure.get("ci_high"),
                "train_steps": record["train"]["steps"],
                "wall_seconds": record.get("wall_seconds"),
                "compute_seconds": record.get("compute_seconds"),
                "run_dir": record["run_dir"],
                "cell": cell["name"],
            }
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95% CI over seeds for each (variant, method, size, ratio, metric)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP_KEYS)].append(row)
    summary = []
    for key, members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        values = [float(r["value"]) for r in members]
        mean = statistics.fmean(values)
        if len(values) >= 2:
            low, high = t_interval(values)
            method = CI_T
        else:
            low, high = members[0]["ci_low"], members[0]["ci_high"]
            method = CI_BOOTSTRAP
        summary.append(
            {
                **dict(zip(GROUP_KEYS, key, strict=True)),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "ci_method": method,
                "n_seeds": len(values),
                "seeds": [r["seed"] for r in members],
                "sd": statistics.stdev(values) if len(values) >= 2 else None,
                "n_eval": members[0]["n"],
                "values": values,
                "train_steps": [r["train_steps"] for r in members],
            }
        )
    return sorted(summary, key=sort_key)


def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        str(row.get("variant") or ""),
        str(row["method"]),
        -1 if row["task_size"] is None else row["task_size"],
        -1 if row["ratio"] is None else row["ratio"],
        str(row["metric"]),
    )


def collect(spec: ExperimentSpec, cells: list[Cell]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every finished cell, and the names of cells without a finished record."""
    rows, missing = [], []
    for cell in cells:
        record = read_cell_record(cell_dir(spec, cell))
        if record is None:
            missing.append(cell.name)
        else:
            rows.extend(cell_rows(record, spec.metrics))
    return rows, missing


def failures(spec: ExperimentSpec, cells: list[Cell]) -> list[dict[str, str]]:
    """Cells whose last attempt crashed (error.txt newer than any cell.json)."""
    found = []
    for cell in cells:
        run_dir = cell_dir(spec, cell)
        error = run_dir / "error.txt"
        record = run_dir / "cell.json"
        if error.exists() and (not record.exists() or error.stat().st_mtime > record.stat().st_mtime):
            last = error.read_text(encoding="utf-8").strip().splitlines()
            found.append({"name": cell.name, "error": last[-1] if last else "?"})
    return found


def method_table(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Each entry with its registry method and, for DELIA, the ablation switches it runs with."""
    from delia.experiment.grid import config_data

    rows = []
    for entry in spec.grid.methods:
        delia = config_data(spec, None, entry).get("delia") or {}
        rows.append(
            {
                "name": entry.name,
                "method": entry.method,
                "set": entry.set,
                "match": entry.match,
                "delia": {"diverse": delia.get("diverse", True), "diversify": delia.get("diversify", True)},
            }
        )
    return rows


def write_results(spec: ExperimentSpec, expansion: Expansion, command: str | None = None) -> dict[str, Any]:
    rows, missing = collect(spec, expansion.cells)
    results = {
        "experiment": spec.name,
        "spec": spec.model_dump(mode="json"),
        "command": command or " ".join(sys.argv),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ci": {"level": LEVEL, "over_seeds": CI_T, "single_seed": CI_BOOTSTRAP},
        "methods": method_table(spec),
        "grid": {"planned": [c.as_dict() for c in expansion.cells], "skipped": expansion.skipped},
        "missing": missing,
        "failed": failures(spec, expansion.cells),
        "cells": rows,
        "summary": summarise(rows),
    }
    Path(spec.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(spec.out) / RESULTS_FILE, results)
    return results
