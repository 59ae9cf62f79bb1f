"""What a headline score leaves out, end to end on the tiny model: a `<sep>`-style task built with phrasings
held out of training, scored on seen and unseen phrasings apart; the phrasings each cell really trained on;
the per-cell held-out task loss and format leakage into ordinary questions, in results.json and the report."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from delia.core.config import deep_merge
from delia.experiment import expand, run_experiment
from delia.experiment.cell_probes import run_cell_probes
from delia.experiment.measures import (
    CELL_PROBES_DIR,
    GENERAL_FILE,
    GENERAL_QA,
    HELDOUT_FILE,
    HELDOUT_LOSS,
    LEAKAGE,
    MEASURES,
)
from delia.experiment.records import ExperimentResults
from delia.experiment.spec import ExperimentSpec, build_spec
from delia.probe.general import GENERAL_QUESTIONS

HOLDOUT = 8  # of the builder's 24 built-in phrasings


def halueval_rows(start: int, n: int) -> list[dict[str, str]]:
    return [
        {"user_query": f"Q{i}?", "chatgpt_response": f"R{i}.", "hallucination": "yes" if i % 2 else "no"}
        for i in range(start, start + n)
    ]


def write_rows(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def phrased_spec(tmp: Path, tiny_spec: Callable[..., ExperimentSpec]) -> ExperimentSpec:
    """The tiny grid on a hallucination-check task whose eval asks every context with a seen and an unseen
    phrasing (the builder's holdout, the same in the task's and the eval's build)."""
    split = {"instruction_set": "all", "holdout_instructions": HOLDOUT}
    sections = {
        "task": {"builder": "halueval", "builder_options": split},
        "eval": {
            "builder": "halueval",
            "builder_options": {**split, "phrasing": "both", "limit": 4},
            "keys": ["thought", "hallucination"],
            "label_key": "hallucination",
            "limit": None,
        },
    }
    data = tiny_spec(tmp, methods=["delia", "common_it"], ratios=[1], seeds=[0]).model_dump(mode="json")
    data["base"] = deep_merge(data["base"], sections)
    for section in ("task", "eval"):  # the demo builder's options replaced, not merged into
        data["base"][section]["builder_options"] = sections[section]["builder_options"]
    data["base"]["task"]["train"] = write_rows(tmp / "task.jsonl", halueval_rows(0, 6))
    data["base"]["eval"]["file"] = write_rows(tmp / "eval.jsonl", halueval_rows(100, 8))
    data["probes"] = {"repr": False, "divergent": False, "losscurve": False}
    del data["source"]
    return build_spec(data, "test")


@pytest.fixture(scope="module")
def phrased(
    tiny_spec: Callable[..., ExperimentSpec], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentSpec, ExperimentResults, str]:
    spec = phrased_spec(tmp_path_factory.mktemp("phrased"), tiny_spec)
    results = run_experiment(spec, command="delia experiment tiny.yaml", quiet=True)
    return spec, results, (Path(spec.out) / "report.md").read_text()


def phrasing(user_turn: str) -> str:
    """The halueval layout: the instruction is the paragraph after the context."""
    return user_turn.rsplit("\n\n", 1)[-1].strip()


def predictions(run_dir: str) -> list[dict[str, Any]]:
    lines = Path(run_dir, "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_seen_and_unseen_scores_come_from_each_cells_predictions(
    phrased: tuple[ExperimentSpec, ExperimentResults, str],
) -> None:
    _, results, text = phrased
    rows = [r for r in results.cells if r.metric == "json_format"]
    assert {r.method for r in rows} == {"delia", "common_it", "common_it_matched"}
    for row in rows:
        assert row.by_phrasing is not None and set(row.by_phrasing) == {"seen", "unseen"}
        answers = predictions(row.run_dir)
        for group, figure in row.by_phrasing.items():
            chosen = [float(a["scores"]["json_format"]) for a in answers if a["phrasing"] == group]
            assert figure.n == len(chosen) == 4 and figure.value == pytest.approx(statistics.fmean(chosen))
            truncated = [float(a["truncated"]) for a in answers if a["phrasing"] == group]
            assert figure.truncated == pytest.approx(statistics.fmean(truncated))
    summary = next(s for s in results.summary if s.method == "delia" and s.metric == "json_format")
    delia = next(r for r in rows if r.method == "delia")
    assert summary.by_phrasing is not None
    assert summary.by_phrasing["unseen"].values == [delia.by_phrasing["unseen"].value]
    section = text.split("## Seen and unseen instruction phrasings")[1].split("\n## ")[0]
    assert "json_format: seen phrasings" in section and "| 4 | delia (r=1) |" in section
    # Every context was asked both ways: the paired headline has a row per group beside the overall one.
    groups = {(r.control, r.metric, r.phrasing) for r in results.paired}
    assert ("common_it_matched", "json_format", "unseen") in groups and (
        "common_it",
        "json_format",
        None,
    ) in groups
    unseen = next(r for r in results.paired if r.phrasing == "unseen" and r.metric == "json_format")
    assert unseen.n_items == 4
    assert "json_format (unseen phrasings)" in text


def test_facts_count_the_eval_phrasings_each_cell_trained_on(
    phrased: tuple[ExperimentSpec, ExperimentResults, str],
) -> None:
    spec, results, text = phrased
    facts = {fact.cell: fact for fact in results.facts}
    common = facts["common_it__n4__s0"].phrasings
    assert common is not None and common["unseen"].trained == 0 and common["unseen"].items == 4
    # common IT trains on the task's own phrasings; only those its 4-example subset carries count
    run_dir = Path(spec.runs_dir) / "common_it__n4__s0"
    records = [json.loads(line) for line in (run_dir / "mix" / "mixed.jsonl").open()]
    trained = {phrasing(r["messages"][0]["content"]) for r in records if r["source"] == "task"}
    seen = [a for a in predictions(str(run_dir)) if a["phrasing"] == "seen"]
    assert common["seen"].trained == sum(phrasing(a["prompt"][-1]["content"]) in trained for a in seen)
    assert "eval items whose phrasing it trained on" in text and "unseen 0/4" in text


def test_heldout_loss_and_leakage_are_rows_of_results_json(
    phrased: tuple[ExperimentSpec, ExperimentResults, str],
) -> None:
    spec, results, text = phrased
    on_disk = json.loads((Path(spec.out) / "results.json").read_text())
    for cell in expand(spec).cells:
        metrics = {row["metric"] for row in on_disk["cells"] if row["cell"] == cell.name}
        assert set(MEASURES) <= metrics, cell.name
    delia = next(r for r in results.cells if r.method == "delia" and r.metric == HELDOUT_LOSS)
    stored = json.loads(Path(delia.run_dir, CELL_PROBES_DIR, HELDOUT_FILE).read_text())
    assert delia.value == stored["loss"] > 0 and delia.n == stored["used"] == 8
    general = json.loads(Path(delia.run_dir, CELL_PROBES_DIR, GENERAL_FILE).read_text())
    assert len(general["rows"]) == len(GENERAL_QUESTIONS)
    leak = next(r for r in results.cells if r.cell == delia.cell and r.metric == LEAKAGE)
    assert leak.value == pytest.approx(sum(r["json"] for r in general["rows"]) / len(GENERAL_QUESTIONS))
    qa = next(r for r in results.cells if r.cell == delia.cell and r.metric == GENERAL_QA)
    assert qa.value == pytest.approx(sum(r["correct"] for r in general["rows"]) / len(GENERAL_QUESTIONS))
    assert {s.metric for s in results.summary if s.method == "common_it"} >= set(MEASURES)
    assert "## Held-out task loss and side effects on ordinary questions" in text
    assert "Figure 3: held-out task loss" in text
    assert (Path(spec.out) / "plots" / f"{HELDOUT_LOSS}_vs_ratio.png").exists()


def test_the_heldout_loss_is_the_probes_loss_of_the_cells_model(
    phrased: tuple[ExperimentSpec, ExperimentResults, str],
) -> None:
    """Recomputed from the run directory alone, with probe.heldout's own entry point."""
    from delia.probe.heldout import run_heldout_task_loss

    _, results, _ = phrased
    row = next(r for r in results.cells if r.method == "common_it" and r.metric == HELDOUT_LOSS)
    again = run_heldout_task_loss(row.run_dir)
    assert row.value == pytest.approx(again["loss"], rel=1e-5)


def test_a_retrained_cell_is_measured_again_and_reads_unmeasured_until_then(
    phrased: tuple[ExperimentSpec, ExperimentResults, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.experiment.results import write_results

    spec, _, _ = phrased
    cells = expand(spec).cells
    monkeypatch.setattr(
        "delia.experiment.cell_probes.measure_cell", lambda *a: pytest.fail("an up-to-date cell was measured")
    )
    assert run_cell_probes(spec, cells) == []
    record_path = Path(spec.runs_dir) / "common_it__n4__s0" / "cell.json"
    original = record_path.read_text()
    record = json.loads(original)
    record["finished_at"] = "2099-01-01T00:00:00+0000"  # as a rerun of the cell would leave it
    record_path.write_text(json.dumps(record))
    try:
        results = write_results(spec, expand(spec), "test")
        measured = {r.metric for r in results.cells if r.cell == "common_it__n4__s0"}
        assert not measured & set(MEASURES)  # the old model's numbers no longer count
        seen: list[str] = []
        monkeypatch.setattr(
            "delia.experiment.cell_probes.measure_cell", lambda spec, cell, *a: seen.append(cell.name)
        )
        assert run_cell_probes(spec, cells) == ["common_it__n4__s0"] == seen
    finally:
        record_path.write_text(original)
