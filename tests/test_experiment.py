"""Experiments on the tiny model: grid expansion, resumability, results.json, CIs, report, ratio search."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from delia.core.errors import ConfigError, DeliaError
from delia.experiment import expand, run_experiment
from delia.experiment.grid import Cell, cell_config
from delia.experiment.results import summarise, t_interval
from delia.experiment.search import golden_section_search, untried_inside
from delia.experiment.spec import build_spec


def tiny_base(model_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name": str(model_dir)},
        "task": {"builder": "demo", "builder_options": {"n": 8}},
        "sample": {"sampling": {"max_new_tokens": 6}, "backend": {"batch_size": 8}},
        "diversify": {"k": 1, "sampling": {"max_new_tokens": 12}, "backend": {"batch_size": 8}},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"epochs": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 128, "lr": 1e-3},
        "eval": {
            "builder": "demo",
            "builder_options": {"split": "heldout", "n": 4},
            "keys": ["name", "city", "job"],
            "label_key": "city",
            "limit": 3,
            "max_new_tokens": 6,
            "bootstrap": 50,
        },
    }


def tiny_spec(tmp_path: Path, model_dir: Path, **grid: Any) -> Any:
    data = {
        "name": "tiny",
        "out": str(tmp_path / "out"),
        "base": tiny_base(model_dir),
        "grid": {
            "methods": [
                "delia",
                "common_it",
                {"name": "common_it_matched", "method": "common_it_matched", "match": "delia"},
                "icl",
                {"name": "w/o diverse", "method": "delia", "set": ["delia.diverse=false"]},
            ],
            "task_sizes": [4],
            "ratios": [0, 1],
            "seeds": [0, 1],
            **grid,
        },
        "metrics": ["json_format", "label_accuracy"],
        "probes": {"divergent_limit": 2},
        "notes": ["tiny test grid"],
    }
    return build_spec(data, "test")


# ---------------------------------------------------------------------------------------------- grid


def test_grid_runs_ratio_free_methods_once_per_size_and_seed(tmp_path: Path, tiny_model_dir: Path) -> None:
    spec = tiny_spec(tmp_path, tiny_model_dir, task_sizes=[4, 6])
    cells = expand(spec).cells
    by_method: dict[str, list[Cell]] = {}
    for cell in cells:
        by_method.setdefault(cell.method, []).append(cell)
    # 2 sizes x 2 seeds, times 2 ratios for the ratio-reading ones
    assert len(by_method["delia"]) == 8 and {c.ratio for c in by_method["delia"]} == {0, 1}
    assert len(by_method["common_it_matched"]) == 8
    for name in ("common_it", "icl", "w/o diverse"):
        assert len(by_method[name]) == 4, name
        assert {c.ratio for c in by_method[name]} == {None}
    assert len({c.name for c in cells}) == len(cells)
    # a matched cell comes after the cell whose steps it copies, and names it
    position = {c.name: i for i, c in enumerate(cells)}
    for cell in by_method["common_it_matched"]:
        assert cell.match in position and position[cell.match] < position[cell.name]
        assert cell_config(spec, cell, spec.entry(cell.method)).matched_to.endswith(cell.match)


def test_cell_config_sets_seed_size_ratio_and_entry_overrides(tmp_path: Path, tiny_model_dir: Path) -> None:
    spec = tiny_spec(tmp_path, tiny_model_dir)
    cell = Cell("w/o diverse", "delia", 4, None, 3)
    config = cell_config(spec, cell, spec.entry("w/o diverse"))
    assert (config.seed, config.train.seed, config.mix.seed, config.task.size) == (3, 3, 3, 4)
    assert config.delia.diverse is False and config.method == "delia"
    assert config.name == "wo-diverse__n4__s3"
    assert config.run_dir == str(tmp_path / "out" / "runs")


def test_a_ratio_the_method_rejects_is_skipped_with_its_reason(tmp_path: Path, tiny_model_dir: Path) -> None:
    spec = tiny_spec(tmp_path, tiny_model_dir, methods=["dmt"], seeds=[0])
    expansion = expand(spec)
    assert [c.ratio for c in expansion.cells] == [1]
    assert len(expansion.skipped) == 1 and "ratio" in expansion.skipped[0]["reason"]


def test_spec_errors_name_the_field(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no entry named"):
        tiny_spec(
            tmp_path, tiny_model_dir, methods=[{"name": "m", "method": "common_it_matched", "match": "x"}]
        )
    with pytest.raises(ConfigError, match=r"grid\.bogus"):
        tiny_spec(tmp_path, tiny_model_dir, bogus=1)
    with pytest.raises(ConfigError, match="two entries"):
        tiny_spec(tmp_path, tiny_model_dir, methods=["delia", "delia"])


# ------------------------------------------------------------------------------------------ statistics


def test_t_interval_matches_the_textbook_value() -> None:
    low, high = t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(0.975, 2) = 4.3027
    assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)


def row(seed: int, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "variant": None,
        "method": "delia",
        "task_size": 4,
        "ratio": 1.0,
        "metric": "json_format",
        "seed": seed,
        "value": value,
        "n": 10,
        "ci_low": value - 0.1,
        "ci_high": value + 0.1,
        "train_steps": 3,
        **extra,
    }


def test_summary_uses_seeds_and_falls_back_to_the_cell_bootstrap_for_one_seed() -> None:
    summary = summarise([row(0, 0.2), row(1, 0.4), row(2, 0.6), row(0, 0.5, method="icl", ratio=None)])
    delia = next(r for r in summary if r["method"] == "delia")
    assert delia["n_seeds"] == 3 and delia["mean"] == pytest.approx(0.4)
    assert (delia["ci_low"], delia["ci_high"]) == pytest.approx(t_interval([0.2, 0.4, 0.6]))
    assert delia["ci_method"].startswith("t-interval")
    icl = next(r for r in summary if r["method"] == "icl")
    assert icl["n_seeds"] == 1 and (icl["ci_low"], icl["ci_high"]) == (0.4, 0.6)
    assert "1 seed" in icl["ci_method"]


def test_headline_compares_delia_within_each_variant() -> None:
    from delia.experiment.report import Results, headline_comparison

    rows = [
        row(0, 0.2, variant=v, method=m, ratio=r, metric="chrf++")
        for v in ("en-is", "is-en")
        for m, r in (("delia", 1.0), ("icl", None))
    ]
    summary = summarise(rows)
    planned = [{k: r[k] for k in ("variant", "method", "task_size", "ratio", "seed")} for r in rows]
    results = Results(
        {
            "summary": summary,
            "grid": {"planned": planned},
            "methods": [{"name": "delia"}, {"name": "icl"}],
            "spec": {"metrics": ["chrf++"], "headline": {"metric": None, "task_size": None, "ratio": None}},
        }
    )
    lines = headline_comparison(results)
    assert [line.split(":")[0] for line in lines] == ["en-is", "is-en"]
    assert all("delia (r=1) vs icl" in line for line in lines)


# ------------------------------------------------------------------------------------------- search


def test_golden_section_finds_the_maximum_of_a_unimodal_function_in_few_evaluations() -> None:
    calls: list[int] = []

    def objective(ratio: int) -> float:
        calls.append(ratio)
        return -((math.log1p(ratio) - math.log1p(12)) ** 2)

    trace = golden_section_search(objective, 0, 200, max_evals=12)
    assert abs(trace.best[0] - 12) <= 1
    assert len(calls) == len(set(calls)) <= 12  # memoised: no ratio run twice


def test_golden_section_finds_a_maximum_at_the_lower_bound() -> None:
    trace = golden_section_search(lambda r: -float(r), 0, 64, max_evals=6)
    assert trace.best == (0, 0.0)
    assert trace.points[0][0] == 0 and trace.points[1][0] == 64


def test_golden_section_stops_when_no_integer_is_left_to_try() -> None:
    trace = golden_section_search(lambda r: -abs(r - 2), 0, 4, max_evals=50)
    assert trace.best[0] == 2
    assert len(trace.points) <= 5
    assert not untried_inside(math.log1p(1.5), math.log1p(2.5), {2: 0.0})


def test_golden_section_rejects_a_bad_range() -> None:
    with pytest.raises(ValueError):
        golden_section_search(lambda r: 0.0, 5, 5, 3)


# --------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def finished(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("experiment")
    spec = tiny_spec(tmp, tiny_model_dir, ratios=[1])
    results = run_experiment(spec, command="delia experiment tiny.yaml", quiet=True)
    return spec, results


def test_results_json_has_cells_and_summary_with_cis(finished: tuple[Any, dict[str, Any]]) -> None:
    spec, results = finished
    on_disk = json.loads((Path(spec.out) / "results.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(results["summary"]))
    assert not results["missing"] and not results["failed"]
    planned = results["grid"]["planned"]
    assert len(planned) == 2 * 5  # seeds x (delia, common_it, matched, icl, w/o diverse)
    for cell in results["cells"]:
        assert {"method", "task_size", "ratio", "seed", "metric", "value", "run_dir"} <= set(cell)
        assert cell["metric"] in ("json_format", "label_accuracy")
        assert Path(cell["run_dir"], "metrics.json").exists()
    for item in results["summary"]:
        assert {"method", "task_size", "ratio", "metric", "mean", "ci_low", "ci_high", "n_seeds"} <= set(item)
        assert item["n_seeds"] == 2 and item["ci_low"] <= item["mean"] <= item["ci_high"]
    matched = [
        c for c in results["cells"] if c["method"] == "common_it_matched" and c["metric"] == "json_format"
    ]
    delia = {(c["ratio"], c["seed"]): c for c in results["cells"] if c["method"] == "delia"}
    for cell in matched:
        assert cell["train_steps"] == delia[(cell["ratio"], cell["seed"])]["train_steps"]


def test_cell_cost_sums_its_own_stages_not_those_copied_from_a_sibling(
    finished: tuple[Any, dict[str, Any]],
) -> None:
    from delia.experiment.runner import COPIED, stage_seconds

    _, results = finished
    by_cell = {row["cell"]: row for row in results["cells"]}
    icl = Path(next(row["run_dir"] for row in by_cell.values() if row["method"] == "icl"))
    copied = [stage for stage in ("diversify", "sample") if (icl / stage / COPIED).exists()]
    assert copied  # icl needs no diverse data, yet its sibling's stages were copied in
    own = sum(
        json.loads((stage / "manifest.json").read_text())["seconds"]
        for stage in icl.iterdir()
        if (stage / "manifest.json").exists() and stage.name not in copied
    )
    assert stage_seconds(icl) == pytest.approx(own, abs=0.1)
    assert by_cell[icl.name]["compute_seconds"] == stage_seconds(icl)


def test_a_second_invocation_runs_nothing(
    finished: tuple[Any, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, results = finished

    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr("delia.pipeline.run", no_run)
    monkeypatch.setattr("delia.core.models.load_model", no_run)
    again = run_experiment(spec, probes=False, report=False, quiet=True)
    assert again["cells"] == results["cells"]


def test_no_run_writes_up_the_finished_cells_and_lists_the_missing(
    finished: tuple[Any, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec, results = finished
    monkeypatch.setattr("delia.pipeline.run", lambda *a, **k: pytest.fail("--no-run ran a cell"))
    larger = spec.model_copy(deep=True)
    larger.runs, larger.out = str(Path(spec.out) / "runs"), str(tmp_path / "out")
    larger.grid.seeds = [0, 1, 2]
    cut_short = run_experiment(larger, probes=False, report=False, quiet=True, run_cells=False)
    assert cut_short["cells"] == results["cells"]
    assert len(cut_short["missing"]) == 5 and all(name.endswith("s2") for name in cut_short["missing"])


def test_a_changed_cell_config_reruns_that_cell(finished: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    from delia.experiment.runner import finished_record

    spec, _ = finished
    changed = spec.model_copy(deep=True)
    changed.set = ["eval.limit=2"]
    cell = expand(spec).cells[0]
    assert finished_record(spec, cell) is not None
    assert finished_record(changed, cell) is None


def test_the_report_has_the_tables_and_the_command(finished: tuple[Any, dict[str, Any]]) -> None:
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


def test_report_cli_and_dry_run(finished: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
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
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search drives real cells; the metric is replaced by a known unimodal function of the ratio."""
    import delia.experiment.ratio_search as ratio_search
    from delia.experiment.report import write_report

    real_run_cell = ratio_search.run_cell

    def scored_cell(spec: Any, cell: Cell, siblings: list[Cell], log: Any) -> Any:
        outcome = real_run_cell(spec, cell, siblings, log)
        value = 1.0 - abs(math.log1p(cell.ratio) - math.log1p(3)) / 3
        outcome.record["values"]["json_format"] = {"value": value, "n": 3, "ci_low": value, "ci_high": value}
        return outcome

    monkeypatch.setattr(ratio_search, "run_cell", scored_cell)
    spec = tiny_spec(tmp_path, tiny_model_dir, methods=["delia"], seeds=[0])
    spec.search.lo, spec.search.hi, spec.search.max_evals = 0, 8, 5
    spec.search.set = ["eval.limit=2"]
    planned = ratio_search.plan_ratio_search(spec)  # what --dry-run shows: runs nothing
    assert [(row["ratio"], row["state"]) for row in planned] == [(0, "to run")]
    assert not Path(spec.out).exists()
    result = ratio_search.run_ratio_search(spec, log_line=lambda line: None)
    assert ratio_search.plan_ratio_search(spec)[0]["state"] == "done"
    assert result["argmax"]["ratio"] == 3
    assert 3 <= result["evaluations"] <= 5
    assert all(Path(p["run_dirs"][0], "cell.json").exists() for p in result["points"])
    assert all("search__" in p["run_dirs"][0] for p in result["points"])
    saved = json.loads((Path(spec.out) / "search.json").read_text())
    assert saved["argmax"]["ratio"] == 3 and (Path(spec.out) / "search.png").exists()
    md, _ = write_report(Path(spec.out))
    assert "Best ratio: **3**" in md.read_text()


def test_a_grid_with_variants_probes_its_first_variant(tmp_path: Path, tiny_model_dir: Path) -> None:
    from delia.experiment.report import write_report

    spec = tiny_spec(
        tmp_path, tiny_model_dir, methods=["common_it"], ratios=[1], seeds=[0], variants={"a": [], "b": []}
    )
    probes = spec.probes.model_copy(update={"repr": False, "divergent": False})
    spec = spec.model_copy(update={"probes": probes})
    run_experiment(spec, command="delia experiment tiny.yaml", quiet=True)
    summary = json.loads((Path(spec.out) / "probes" / "summary.json").read_text())
    assert summary["variant"] == "a" and summary["cells"] == ["a__common_it__n4__s0"]
    assert summary["losscurve"] is True
    md, _ = write_report(Path(spec.out))
    assert "task-loss curves (a, " in md.read_text()


def test_recheck_reruns_a_cell_from_scratch_and_compares(finished: tuple[Any, dict[str, Any]]) -> None:
    from delia.experiment.recheck import recheck_cell
    from delia.experiment.report import write_report

    spec, results = finished
    name = next(r["cell"] for r in results["cells"] if r["method"] == "icl")
    report = recheck_cell(spec, name, log=lambda line: None)
    assert Path(report["run_dir"]).name == f"recheck__{name}"
    assert {c["metric"] for c in report["checks"]} == {"json_format", "label_accuracy"}
    for check in report["checks"]:  # greedy decoding of the same model: the same answers
        assert check["rerun"] == check["stored"] and check["within_summary_ci"]
    md, _ = write_report(Path(spec.out))
    assert "Reproducibility check" in md.read_text()
    with pytest.raises(DeliaError, match="no finished cell"):
        recheck_cell(spec, "nope", log=lambda line: None)
