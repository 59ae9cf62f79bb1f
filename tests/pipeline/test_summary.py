"""The run summary from a run's records alone: each figure with its 95% CI from metrics.json, the final loss
of each source, and one line for each thing the run did that its config does not show (ratio 0 trains on
the task alone; the rewrites replace the originals)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from delia.core.config import build_config
from delia.core.example import Example
from delia.core.io import write_json
from delia.methods import get_method
from delia.pipeline.effective import effective_config, plan_summary
from delia.pipeline.summary import summary_notes, summary_row, write_summary

LOG = [
    {"step": 1, "loss": 2.0, "loss_task": 1.0, "loss_diverse": 3.0},
    {"step": 2, "loss": 1.5, "loss_task": 0.5, "loss_diverse": 2.6},
    {"step": 3, "loss": 0.25, "loss_task": 0.25, "loss_diverse": None},  # a step with no diverse tokens
]


def finished_run(tmp_path: Path, originals_kept: bool = False, notes: list[str] | None = None) -> Path:
    """A run directory as the pipeline leaves it: manifests, metrics.json, train_log.jsonl, plan.json."""
    run = tmp_path / "mine"
    stages: dict[str, dict[str, Any]] = {
        "task": {"counts": {"task": 20, "eval": 8}},
        "diversify": {
            "counts": {"task_in": 20, "task_out": 40 if originals_kept else 20},
            "k": 1,
            "originals_kept": originals_kept,
        },
        "train": {"steps": 3, "final_loss": 0.25, "counts": {"examples": 60}},
        "eval": {"counts": {"eval": 8}, "metrics": {"json_format": 0.75}},
    }
    for name, fields in stages.items():
        write_json(run / name / "manifest.json", {"stage": name, "hash": f"h-{name}", **fields})
    figure = {"value": 0.75, "n": 8, "ci_low": 0.375, "ci_high": 1.0}
    write_json(run / "eval" / "metrics.json", {"metric": "json_format", "values": {"json_format": figure}})
    lines = [json.dumps(row) for row in LOG] + ['{"step": 4, "loss_ta']  # a line a crash cut short
    (run / "train" / "train_log.jsonl").write_text("\n".join(lines), encoding="utf-8")
    write_json(run / "plan.json", {"diversify": True, "train": True, "notes": notes or []})
    (run / "config.yaml").write_text("method: delia\n", encoding="utf-8")
    return run


def test_the_summary_shows_each_figures_interval_and_each_sources_final_loss(tmp_path: Path) -> None:
    row = summary_row(finished_run(tmp_path))
    assert row["json_format"] == 0.75 and row["json_format 95% CI"] == "[0.38, 1.00]"
    assert row["final loss"] == 0.25  # the last step's, which had task tokens only
    assert row["final task loss"] == 0.25
    assert row["final diverse loss"] == 2.6  # the last step that had diverse tokens
    assert row["method"] == "delia"


def test_a_run_without_training_or_metrics_leaves_those_columns_empty(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    write_json(run / "eval" / "manifest.json", {"hash": "h", "metrics": {"exact": 0.5}})
    row = summary_row(run)
    assert row["final task loss"] is None and row["final diverse loss"] is None
    assert row["exact"] == 0.5 and "exact 95% CI" not in row


def test_the_summary_says_the_rewrites_replaced_the_originals(tmp_path: Path) -> None:
    text = write_summary(finished_run(tmp_path, notes=["ablation: w/o extensively diverse data"]))
    notes = text.split("## Notes\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert notes[0] == "- ablation: w/o extensively diverse data"
    assert notes[1].startswith(
        "- diversify: the rewrites replaced the original task examples (k=1: 20 in, 20 out)"
    )
    assert "diversify.keep_originals=true" in notes[1]
    assert "[0.38, 1.00]" in text


def test_kept_originals_need_no_note(tmp_path: Path) -> None:
    run = finished_run(tmp_path, originals_kept=True)
    assert summary_notes(run) == []
    assert "## Notes" not in write_summary(run)


def sep_task(n: int) -> list[Example]:
    turns = [{"role": "user", "content": "Answer <sep>"}, {"role": "assistant", "content": "{}"}]
    return [Example(messages=turns) for _ in range(n)]


@pytest.mark.parametrize(
    ("mix", "noted"),
    [({"ratio": 0}, True), ({"ratio": 2}, False), ({"ratio": 0, "schedule": "task_only"}, False)],
)
def test_delia_at_ratio_zero_says_it_trains_on_the_task_alone(mix: dict[str, Any], noted: bool) -> None:
    config = build_config({"method": "delia", "mix": mix})
    plan = get_method("delia").plan(config, sep_task(4))
    notes = plan_summary(plan, effective_config(config, plan), config)["notes"]
    ratio_notes = [note for note in notes if note.startswith("mix.ratio is 0")]
    assert len(ratio_notes) == noted
    if noted:
        assert "task examples alone" in ratio_notes[0] and "shuffle" in ratio_notes[0]


def test_the_ratio_note_reaches_the_summary(tmp_path: Path) -> None:
    config = build_config({"method": "delia", "mix": {"ratio": 0}})
    plan = get_method("delia").plan(config, sep_task(4))
    run = finished_run(tmp_path, notes=plan_summary(plan, effective_config(config, plan), config)["notes"])
    assert any(line.startswith("- mix.ratio is 0: ") for line in write_summary(run).splitlines())
