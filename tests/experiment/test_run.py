"""Experiments end to end on the tiny model: resumability, results.json, the report, the ratio search,
probes of a grid with variants, the recheck."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from delia.core.errors import DeliaError
from delia.experiment import expand, run_experiment
from delia.experiment.measures import CELL_PROBES_DIR, HELDOUT_FILE, HELDOUT_LOSS, MEASURES
from delia.experiment.records import Cell, ExperimentResults, Figure
from delia.experiment.spec import ExperimentSpec


@pytest.fixture(scope="module")
def finished(
    tiny_spec: Callable[..., ExperimentSpec], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentSpec, ExperimentResults]:
    tmp = tmp_path_factory.mktemp("experiment")
    spec = tiny_spec(tmp, ratios=[1])
    results = run_experiment(spec, command="delia experiment tiny.yaml", quiet=True)
    return spec, results


def test_results_json_has_cells_and_summary_with_cis(
    finished: tuple[ExperimentSpec, ExperimentResults],
) -> None:
    spec, results = finished
    on_disk = json.loads((Path(spec.out) / "results.json").read_text())
    assert on_disk["summary"] == [row.model_dump(mode="json") for row in results.summary]
    assert not results.missing and not results.failed
    planned = results.grid.planned
    assert len(planned) == 2 * 5  # seeds x (delia, common_it, matched, icl, w/o diverse)
    for cell in on_disk["cells"]:
        assert {"method", "task_size", "ratio", "seed", "metric", "value", "run_dir"} <= set(cell)
    for row in results.cells:  # the metrics asked for, and the per-cell measurements of the probes
        assert row.metric in ("json_format", "label_accuracy", *MEASURES)
        assert Path(row.run_dir, "metrics.json").exists()
    # ICL's demonstrations push every answer past train.max_length: no held-out loss, and the reason kept
    expected = {(cell.name, m) for cell in planned for m in ("json_format", "label_accuracy", *MEASURES)}
    icl = {(cell.name, HELDOUT_LOSS) for cell in planned if cell.method == "icl"}
    assert {(row.cell, row.metric) for row in results.cells} == expected - icl
    for name, _ in icl:
        stored = json.loads((Path(spec.runs_dir) / name / CELL_PROBES_DIR / HELDOUT_FILE).read_text())
        assert stored["loss"] is None and "max_length 128" in stored["reason"]
    for item in on_disk["summary"]:
        assert {"method", "task_size", "ratio", "metric", "mean", "ci_low", "ci_high", "n_seeds"} <= set(item)
    for summary in results.summary:
        assert summary.n_seeds == 2 and summary.ci_low <= summary.mean <= summary.ci_high
    matched = [c for c in results.cells if c.method == "common_it_matched" and c.metric == "json_format"]
    delia = {(c.ratio, c.seed): c for c in results.cells if c.method == "delia"}
    for cell in matched:
        assert cell.train_steps == delia[(cell.ratio, cell.seed)].train_steps


def test_cell_cost_sums_its_own_stages_not_those_copied_from_a_sibling(
    finished: tuple[ExperimentSpec, ExperimentResults],
) -> None:
    from delia.experiment.runner import COPIED, stage_seconds

    _, results = finished
    by_cell = {row.cell: row for row in results.cells}
    icl = Path(next(row.run_dir for row in by_cell.values() if row.method == "icl"))
    copied = [stage for stage in ("diversify", "sample") if (icl / stage / COPIED).exists()]
    assert copied  # icl needs no diverse data, yet its sibling's stages were copied in
    own = sum(
        json.loads((stage / "manifest.json").read_text())["seconds"]
        for stage in icl.iterdir()
        if (stage / "manifest.json").exists() and stage.name not in copied
    )
    assert stage_seconds(icl) == pytest.approx(own, abs=0.1)
    assert by_cell[icl.name].compute_seconds == stage_seconds(icl)


def test_a_second_invocation_runs_nothing(
    finished: tuple[ExperimentSpec, ExperimentResults], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, results = finished

    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr("delia.experiment.runner.run", no_run)
    monkeypatch.setattr("delia.core.models.load_model", no_run)
    again = run_experiment(spec, probes=False, report=False, quiet=True)
    assert again.cells == results.cells


def test_no_run_writes_up_the_finished_cells_and_lists_the_missing(
    finished: tuple[ExperimentSpec, ExperimentResults], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec, results = finished
    monkeypatch.setattr("delia.experiment.runner.run", lambda *a, **k: pytest.fail("--no-run ran a cell"))
    larger = spec.model_copy(deep=True)
    larger.runs, larger.out = str(Path(spec.out) / "runs"), str(tmp_path / "out")
    larger.grid.seeds = [0, 1, 2]
    cut_short = run_experiment(larger, probes=False, report=False, quiet=True, run_cells=False)
    assert cut_short.cells == results.cells
    assert len(cut_short.missing) == 5 and all(name.endswith("s2") for name in cut_short.missing)


def test_a_changed_cell_config_reruns_that_cell(
    finished: tuple[ExperimentSpec, ExperimentResults], tmp_path: Path
) -> None:
    from delia.experiment.runner import finished_record

    spec, _ = finished
    changed = spec.model_copy(deep=True)
    changed.set = ["eval.limit=2"]
    cell = expand(spec).cells[0]
    assert finished_record(spec, cell) is not None
    assert finished_record(changed, cell) is None


def test_the_report_has_the_tables_and_the_command(
    finished: tuple[ExperimentSpec, ExperimentResults],
) -> None:
    spec, _ = finished
    out = Path(spec.out)
    text = (out / "report.md").read_text()
    for needle in ("Table 1", "Table 2: json_format vs task size", "Table 4: ablations", "w/o diverse"):
        assert needle in text, needle
    assert "delia experiment" in text and f"delia report {out}" in text
    assert "tiny test grid" in text  # the notes on what was cut
    assert "2 seeds" in text and "not in grid" in text  # w/o diversify and w/o all were never run
    page = (out / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    assert (out / "plots" / "json_format_vs_ratio.png").exists()
    probes = json.loads((out / "probes" / "summary.json").read_text())
    assert {r["method"] for r in probes["repr"]} >= {"delia", "base"}
    assert {r["method"] for r in probes["divergent"]} >= {"base", "icl", "delia"}


def test_report_cli_and_dry_run(finished: tuple[ExperimentSpec, ExperimentResults], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from delia.cli import _register_all, app

    spec, _ = finished
    _register_all()
    runner = CliRunner()
    result = runner.invoke(app, ["report", spec.out])
    assert result.exit_code == 0, result.output
    experiment_file = tmp_path / "tiny.yaml"
    experiment_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    result = runner.invoke(app, ["experiment", str(experiment_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "done" in result.output and "to run" not in result.output


def test_ratio_search_runs_end_to_end_on_a_fake_objective(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search drives real cells; the metric is replaced by a known unimodal function of the ratio."""
    import delia.experiment.ratio_search as ratio_search
    from delia.experiment.report import write_report

    real_run_cell = ratio_search.run_cell

    def scored_cell(spec: Any, cell: Cell, siblings: list[Cell], log: Any) -> Any:
        outcome = real_run_cell(spec, cell, siblings, log)
        value = 1.0 - abs(math.log1p(cell.ratio) - math.log1p(3)) / 3
        outcome.record.values["json_format"] = Figure(value=value, n=3, ci_low=value, ci_high=value)
        return outcome

    monkeypatch.setattr(ratio_search, "run_cell", scored_cell)
    spec = tiny_spec(tmp_path, methods=["delia"], seeds=[0])
    spec.search.lo, spec.search.hi, spec.search.max_evals = 0, 8, 5
    spec.search.set = ["eval.limit=2"]
    planned = ratio_search.plan_ratio_search(spec)  # what --dry-run shows: runs nothing
    assert [(row.ratio, row.state) for row in planned] == [(0, "to run")]
    assert not Path(spec.out).exists()
    result = ratio_search.run_ratio_search(spec, log_line=lambda line: None)
    assert ratio_search.plan_ratio_search(spec)[0].state == "done"
    assert result.argmax.ratio == 3
    assert 3 <= result.evaluations <= 5
    assert all(Path(p.run_dirs[0], "cell.json").exists() for p in result.points)
    assert all("search__" in p.run_dirs[0] for p in result.points)
    saved = json.loads((Path(spec.out) / "search.json").read_text())
    assert saved["argmax"]["ratio"] == 3 and (Path(spec.out) / "search.png").exists()
    md, _ = write_report(Path(spec.out))
    assert "Best ratio: **3**" in md.read_text()


def test_a_grid_with_variants_probes_its_first_variant(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    from delia.experiment.report import write_report

    spec = tiny_spec(tmp_path, methods=["common_it"], ratios=[1], seeds=[0], variants={"a": [], "b": []})
    probes = spec.probes.model_copy(update={"repr": False, "divergent": False})
    spec = spec.model_copy(update={"probes": probes})
    run_experiment(spec, command="delia experiment tiny.yaml", quiet=True)
    summary = json.loads((Path(spec.out) / "probes" / "summary.json").read_text())
    assert summary["variant"] == "a" and summary["cells"] == ["a__common_it__n4__s0"]
    assert summary["losscurve"] is True
    md, _ = write_report(Path(spec.out))
    assert "task-loss curves (a, " in md.read_text()


def test_recheck_reruns_a_cell_from_scratch_and_compares(
    finished: tuple[ExperimentSpec, ExperimentResults],
) -> None:
    from delia.experiment.recheck import recheck_cell
    from delia.experiment.report import write_report

    spec, results = finished
    name = next(r.cell for r in results.cells if r.method == "icl")
    report = recheck_cell(spec, name, log=lambda line: None)
    assert Path(report.run_dir).name == f"recheck__{name}"
    assert {c.metric for c in report.checks} == {"json_format", "label_accuracy"}
    for check in report.checks:  # greedy decoding of the same model: the same answers
        assert check.rerun == check.stored and check.within_summary_ci
    md, _ = write_report(Path(spec.out))
    assert "Reproducibility check" in md.read_text()
    with pytest.raises(DeliaError, match="no finished cell"):
        recheck_cell(spec, "nope", log=lambda line: None)


def test_paired_rows_and_facts_come_from_the_real_run_dirs(
    finished: tuple[ExperimentSpec, ExperimentResults],
) -> None:
    spec, results = finished
    assert {(r.control, r.metric) for r in results.paired} >= {
        ("common_it", "json_format"),
        ("common_it_matched", "json_format"),
    }
    for row in results.paired:
        assert row.n_seeds == 2 and row.n_items == 3 and row.ci_low <= row.difference <= row.ci_high
    facts = {fact.cell: fact for fact in results.facts}
    delia = facts["delia__n4__r1__s0"]
    assert delia.plan_diversify and delia.diversified and delia.rewrites is not None
    assert delia.rewrites.requested is not None and delia.train_steps
    icl = facts["icl__n4__s0"]
    # its sibling's diversify/ was copied in, but icl's plan never used it: not diversified
    assert icl.diversify_stage and not icl.diversified and icl.train_steps == 0
    text = (Path(spec.out) / "report.md").read_text()
    assert text.split("\n## ")[1].startswith("Headline: DELIA minus its controls")
    assert "Per-cell facts (from the run directories)" in text
