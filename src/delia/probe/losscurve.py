"""Task-loss curves from training logs, for runs with different diverse ratios (paper Figure 3).

Each run's `train_log.jsonl` has one row per optimizer step (`step`, `loss`, `loss_task`, `loss_diverse`) and,
every `train.eval_every` steps, the loss on held-out task examples: `eval_task_loss`, or `eval_loss` as the
train module names it. A key a log lacks is skipped with a note; a torn or non-JSON line is skipped and
counted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from delia.core.errors import DeliaError
from delia.core.io import write_json
from delia.probe.plots import plot_losscurves
from delia.probe.tables import write_csv, write_table

TRAIN_LOG = "train_log.jsonl"
HELD_OUT_KEY = "eval_task_loss"
HELD_OUT_ALIASES = ("eval_task_loss", "eval_loss")  # delia.train logs the held-out task loss as eval_loss
TRAIN_KEYS = ("loss_task", "loss_diverse")
ALL_KEYS = (HELD_OUT_KEY, *TRAIN_KEYS, "loss")


def find_train_log(path: Path) -> Path:
    """A run directory or the log file itself -> the log file."""
    log = path / TRAIN_LOG if path.is_dir() else path
    if not log.exists():
        raise DeliaError(f"no training log at {log} (expected a run directory holding {TRAIN_LOG})")
    return log


def read_log_rows(log: Path) -> tuple[list[dict[str, Any]], int]:
    """(rows, number of skipped unreadable lines)."""
    rows, skipped = [], 0
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """(step, value) pairs of `key`, in step order, from rows that have both as finite numbers."""
    pairs = sorted(
        (row["step"], row[key]) for row in rows if is_number(row.get("step")) and is_number(row.get(key))
    )
    return {"step": [p[0] for p in pairs], "value": [p[1] for p in pairs]}


def first_series(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[float]]:
    """The series of the first key that has any points (empty when none has)."""
    for key in keys:
        found = series(rows, key)
        if found["step"]:
            return found
    return {"step": [], "value": []}


def mix_ratio(run_dir: Path) -> float | None:
    """The diverse:task ratio the run trained with, for the legend; None when unknown.

    plan.json (written by the pipeline) holds the effective ratio (0 for a method without diverse data);
    config.yaml's mix.ratio is the fallback.
    """
    if not run_dir.is_dir():
        return None
    plan = run_dir / "plan.json"
    if plan.exists():
        try:
            data = json.loads(plan.read_text(encoding="utf-8"))
            if data.get("use_diverse") is False:
                return 0.0
            if is_number(data.get("ratio")):
                return float(data["ratio"])
        except (json.JSONDecodeError, AttributeError):
            pass
    config = run_dir / "config.yaml"
    if not config.exists():
        return None
    try:
        ratio = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("mix", {}).get("ratio")
    except (yaml.YAMLError, AttributeError):
        return None
    return float(ratio) if is_number(ratio) else None


def run_curves(name: str, path: Path) -> dict[str, Any]:
    log = find_train_log(path)
    rows, skipped = read_log_rows(log)
    curves, notes = {}, []
    for key in ALL_KEYS:
        keys = HELD_OUT_ALIASES if key == HELD_OUT_KEY else (key,)
        found = first_series(rows, keys)
        if found["step"]:
            curves[key] = found
        else:
            notes.append(f"{name}: no {' or '.join(keys)} in {log}, skipped")
    if skipped:
        notes.append(f"{name}: {skipped} unreadable line(s) in {log} skipped")
    steps = [row["step"] for row in rows if is_number(row.get("step"))]
    return {
        "run": name,
        "log": str(log),
        "ratio": mix_ratio(path),
        "max_step": max(steps) if steps else None,
        "curves": curves,
        "notes": notes,
    }


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: the ratio, steps, and first / last / minimum of each logged loss."""
    rows = []
    for result in results:
        row: dict[str, Any] = {"run": result["run"], "ratio": result["ratio"], "max_step": result["max_step"]}
        for key in ALL_KEYS:
            values = result["curves"].get(key, {}).get("value", [])
            row[f"{key}_first"] = values[0] if values else None
            row[f"{key}_last"] = values[-1] if values else None
            row[f"{key}_min"] = min(values) if values else None
        rows.append(row)
    return rows


def long_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        for key, curve in result["curves"].items():
            for step, value in zip(curve["step"], curve["value"], strict=True):
                rows.append(
                    {"run": result["run"], "ratio": result["ratio"], "key": key, "step": step, "value": value}
                )
    return rows


def run_losscurve_probe(
    runs: list[tuple[str, Path]], out_dir: Path, smooth: int = 1, x_axis: str = "step"
) -> dict[str, Any]:
    """Read every run's log; write losscurve.json, .csv (long), _table.{csv,md} and losscurve.png."""
    if x_axis not in ("step", "progress"):
        raise DeliaError(f"--x {x_axis!r}: choose step or progress")
    results = [run_curves(name, path) for name, path in runs]
    notes = [note for result in results for note in result["notes"]]
    if not any(result["curves"] for result in results):
        raise DeliaError("no run's log has any of " + ", ".join(ALL_KEYS) + " with a step")
    table = summary_rows(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "losscurve.json", {"table": table, "notes": notes, "results": results})
    write_csv(out_dir / "losscurve.csv", long_rows(results))
    write_table(out_dir, "losscurve_table", table)
    plot_losscurves(results, out_dir / "losscurve.png", smooth, x_axis)
    return {"results": results, "table": table, "notes": notes, "out_dir": str(out_dir)}
