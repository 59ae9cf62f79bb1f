"""A run's headline figures and its `summary.md`, read from the run's own records alone (manifests,
metrics.json, train_log.jsonl, plan.json, config.yaml; no model, no data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from delia.core.io import atomic_write, read_json
from delia.core.markdown import format_value, markdown_table
from delia.pipeline.cache import read_manifest
from delia.pipeline.stages import STAGE_NAMES

LOSS_SOURCES = ("task", "diverse")  # train_log.jsonl's loss_<source> columns, in every row


def summary_row(run_dir: Path) -> dict[str, Any]:
    """One run's headline figures: each eval figure with its bootstrap 95% CI, and the last loss of each
    source beside the last step's loss (which mixes them, weighted by their tokens in that step)."""
    run_dir = Path(run_dir)
    manifests = {name: read_manifest(run_dir / name) or {} for name in STAGE_NAMES}
    plan = read_plan(run_dir)
    mix_counts = manifests["mix"].get("counts", {})
    return {
        "run": run_dir.name,
        "method": read_run_config(run_dir).get("method"),
        "task examples": manifests["task"].get("counts", {}).get("task"),
        "train examples": manifests["train"].get("counts", {}).get("examples", mix_counts.get("total")),
        "steps": manifests["train"].get("steps", 0 if plan.get("train") is False else None),
        "train s": manifests["train"].get("train_seconds"),
        "final loss": manifests["train"].get("final_loss"),
        **{f"final {source} loss": loss for source, loss in final_source_losses(run_dir).items()},
        "eval n": manifests["eval"].get("counts", {}).get("eval"),
        **figures_with_intervals(manifests["eval"].get("metrics", {}), read_metrics(run_dir)),
    }


def read_run_config(run_dir: Path) -> dict[str, Any]:
    config_file = run_dir / "config.yaml"
    loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else None
    return loaded if isinstance(loaded, dict) else {}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The eval stage's metrics.json (every figure with n and CI); {} when the run has none."""
    return read_json(run_dir / "eval" / "metrics.json") or {}


def figures_with_intervals(headline: dict[str, float], metrics: dict[str, Any]) -> dict[str, Any]:
    """Each headline figure followed by its `<name> 95% CI` column, where metrics.json holds one."""
    values = metrics.get("values", {})
    row: dict[str, Any] = {}
    for name, value in headline.items():
        row[name] = value
        figure = values.get(name, {})
        if figure.get("ci_low") is not None and figure.get("ci_high") is not None:
            row[f"{name} 95% CI"] = f"[{format_value(figure['ci_low'])}, {format_value(figure['ci_high'])}]"
    return row


def final_source_losses(run_dir: Path) -> dict[str, float | None]:
    """The loss of each source (task, diverse) at the last step that had that source's tokens."""
    rows = train_log_rows(run_dir / "train" / "train_log.jsonl")
    finals: dict[str, float | None] = {}
    for source in LOSS_SOURCES:
        logged = [row[f"loss_{source}"] for row in rows if row.get(f"loss_{source}") is not None]
        finals[source] = logged[-1] if logged else None
    return finals


def train_log_rows(path: Path) -> list[dict[str, Any]]:
    """The log's rows; a line a crash cut short is skipped (the summary reads, it never repairs)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def summary_notes(run_dir: Path) -> list[str]:
    """One line each: the plan's notes, and what diversification did to the task examples."""
    run_dir = Path(run_dir)
    plan = read_plan(run_dir)
    notes = [str(note) for note in plan.get("notes", [])]
    diversified = read_manifest(run_dir / "diversify") if plan.get("diversify") else None
    if diversified is not None and not diversified.get("originals_kept", False):
        counts = diversified.get("counts", {})
        k = f"k={diversified['k']}: " if "k" in diversified else ""
        notes.append(
            f"diversify: the rewrites replaced the original task examples ({k}{counts.get('task_in')} in, "
            f"{counts.get('task_out')} out); diversify.keep_originals=true keeps each original beside them"
        )
    return notes


def stage_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One row per finished stage: its key, time and counts."""
    rows = []
    for name in STAGE_NAMES:
        manifest = read_manifest(run_dir / name)
        if manifest:
            rows.append(
                {
                    "stage": name,
                    "hash": manifest["hash"],
                    "seconds": manifest.get("seconds"),
                    "counts": json.dumps(manifest.get("counts", {})),
                }
            )
    return rows


def read_plan(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "plan.json") or {}


def write_summary(run_dir: Path) -> str:
    """Write `summary.md` (headline table, notes, stage table, plan) and return its text."""
    run_dir = Path(run_dir)
    notes = summary_notes(run_dir)
    notes_text = "## Notes\n\n" + "".join(f"- {note}\n" for note in notes) + "\n" if notes else ""
    text = (
        f"# {run_dir.name}\n\n{markdown_table([summary_row(run_dir)])}\n\n{notes_text}## Stages\n\n"
        f"{markdown_table(stage_rows(run_dir))}\n\n## Plan\n\n```json\n"
        f"{json.dumps(read_plan(run_dir), indent=2)}\n```\n"
    )
    atomic_write(run_dir / "summary.md", text)
    return text
