"""A run's headline figures and its `summary.md`, read from the manifests alone (no model, no data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from delia.core.io import atomic_write, read_json
from delia.core.markdown import markdown_table
from delia.pipeline.cache import read_manifest
from delia.pipeline.stages import STAGE_NAMES


def summary_row(run_dir: Path) -> dict[str, Any]:
    """One run's headline figures, from its manifests only."""
    run_dir = Path(run_dir)
    manifests = {name: read_manifest(run_dir / name) or {} for name in STAGE_NAMES}
    plan = read_plan(run_dir)
    config_file = run_dir / "config.yaml"
    method = (yaml.safe_load(config_file.read_text()) or {}).get("method") if config_file.exists() else None
    mix_counts = manifests["mix"].get("counts", {})
    return {
        "run": run_dir.name,
        "method": method,
        "task examples": manifests["task"].get("counts", {}).get("task"),
        "train examples": manifests["train"].get("counts", {}).get("examples", mix_counts.get("total")),
        "steps": manifests["train"].get("steps", 0 if plan.get("train") is False else None),
        "train s": manifests["train"].get("train_seconds"),
        "final loss": manifests["train"].get("final_loss"),
        "eval n": manifests["eval"].get("counts", {}).get("eval"),
        **manifests["eval"].get("metrics", {}),
    }


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
    """Write `summary.md` (headline table, stage table, plan) and return its text."""
    run_dir = Path(run_dir)
    text = (
        f"# {run_dir.name}\n\n{markdown_table([summary_row(run_dir)])}\n\n## Stages\n\n"
        f"{markdown_table(stage_rows(run_dir))}\n\n## Plan\n\n```json\n"
        f"{json.dumps(read_plan(run_dir), indent=2)}\n```\n"
    )
    atomic_write(run_dir / "summary.md", text)
    return text
