"""The pipeline end to end on the tiny model: every artefact, caching, atomic stages, matched steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import run_cli
from conftest import tiny_demo_config

from delia.core.config import RunConfig, build_config
from delia.core.errors import ConfigError
from delia.pipeline import STAGE_NAMES, run, summary_row
from delia.pipeline.cache import read_manifest

STAGE_DIRS = ("task", "diversify", "sample", "mix", "train", "eval")


def tiny_config(model_dir: Path, run_dir: Path, **changes: Any) -> RunConfig:
    data = tiny_demo_config(
        model_dir,
        method="delia",
        run_dir=str(run_dir),
        task={"builder_options": {"n": 6}},
        mix={"ratio": 2},
        eval={"limit": 2},
    )
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return build_config(data)


def stage_stamps(run_dir: Path) -> dict[str, str]:
    return {
        name: read_manifest(run_dir / name)["finished_at"]
        for name in STAGE_NAMES
        if (run_dir / name).exists()
    }


@pytest.fixture(scope="module")
def delia_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return run(tiny_config(tiny_model_dir, runs), log=lambda line: None)


def test_a_run_writes_every_artefact(delia_run: Path) -> None:
    for name in STAGE_DIRS:
        manifest = read_manifest(delia_run / name)
        assert manifest is not None and manifest["hash"], name
    for name in (
        "config.yaml",
        "plan.json",
        "train_log.jsonl",
        "predictions.jsonl",
        "metrics.json",
        "summary.md",
    ):
        assert (delia_run / name).is_file(), name
    assert (delia_run / "adapter").resolve() == (delia_run / "train" / "adapter").resolve()
    assert any((delia_run / "adapter").iterdir())
    counts = read_manifest(delia_run / "mix")["counts"]
    assert counts["sources"]["diverse"] == counts["diverse"] == round(2 * counts["task"])
    assert read_manifest(delia_run / "train")["steps"] >= 1
    predictions = [json.loads(x) for x in (delia_run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2
    assert "json_format" in json.loads((delia_run / "metrics.json").read_text())["values"]
    assert "| delia |" in (delia_run / "summary.md").read_text()
    assert not list(delia_run.glob(".*.partial"))


def test_identical_rerun_recomputes_nothing_and_loads_no_model(
    delia_run: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stage_stamps(delia_run)

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached rerun loaded a model")

    monkeypatch.setattr("delia.core.models.load_model", no_loading)
    monkeypatch.setattr("delia.pipeline.stages.evaluate.load_trained", no_loading)
    lines: list[str] = []
    run(tiny_config(tiny_model_dir, delia_run.parent), log=lines.append)
    assert stage_stamps(delia_run) == before
    assert sum("cached" in line for line in lines) == len(STAGE_DIRS)


def test_changing_eval_reruns_only_eval(delia_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(delia_run, copy, symlinks=True)
    before = stage_stamps(copy)
    run(tiny_config(tiny_model_dir, tmp_path, eval__limit=3), log=lambda line: None)
    after = stage_stamps(copy)
    assert {k for k in before if before[k] != after[k]} == {"eval"}
    assert read_manifest(copy / "eval")["counts"]["eval"] == 3


def test_a_crash_never_leaves_a_stage_looking_finished(
    delia_run: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(delia_run, copy, symlinks=True)

    def crash(model: Any, tokenizer: Any, examples: Any, cfg: Any, out_dir: Path, **kw: Any) -> None:
        (Path(out_dir) / "predictions.jsonl").write_text("half")
        raise RuntimeError("killed")

    old_hash = read_manifest(copy / "eval")["hash"]
    monkeypatch.setattr("delia.pipeline.stages.evaluate.evaluate_model", crash)
    config = tiny_config(tiny_model_dir, tmp_path, eval__max_new_tokens=4)
    with pytest.raises(RuntimeError, match="killed"):
        run(config, log=lambda line: None)
    assert read_manifest(copy / "eval")["hash"] == old_hash  # the old finished stage is untouched...
    assert (copy / ".eval.partial" / "predictions.jsonl").read_text() == "half"
    monkeypatch.undo()
    run(config, log=lambda line: None)  # ...and a rerun finishes the new one
    assert read_manifest(copy / "eval")["hash"] != old_hash
    assert not (copy / ".eval.partial").exists()


def test_common_it_matched_reaches_delias_step_count(delia_run: Path, tiny_model_dir: Path) -> None:
    config = tiny_config(
        tiny_model_dir,
        delia_run.parent,
        name="matched",
        method="common_it_matched",
        matched_to=str(delia_run),
    )
    matched = run(config, log=lambda line: None)
    delia_steps = read_manifest(delia_run / "train")["steps"]
    train = read_manifest(matched / "train")
    assert train["steps"] == delia_steps
    mix_counts = read_manifest(matched / "mix")["counts"]
    assert mix_counts["diverse"] == 0 and mix_counts["task"] == 6
    # 6 task examples in batches of 4 make 2 steps an epoch: matching DELIA needs more than one epoch.
    assert delia_steps > 2
    assert not (matched / "sample").exists() and not (matched / "diversify").exists()
    plan = json.loads((matched / "plan.json").read_text())
    assert plan["special_tokens"] == [] and plan["max_steps"] == delia_steps
    assert summary_row(matched)["steps"] == delia_steps


def test_matched_without_a_finished_target_is_a_config_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tiny_model_dir, tmp_path, method="common_it_matched", matched_to=str(tmp_path / "none")
    )
    with pytest.raises(ConfigError, match="matched_to"):
        run(config, log=lambda line: None)


def test_base_method_evaluates_without_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = run(tiny_config(tiny_model_dir, tmp_path, method="base"), log=lambda line: None)
    assert not (base / "train").exists() and read_manifest(base / "eval") is not None
    assert summary_row(base)["steps"] == 0


@pytest.mark.slow
def test_embedded_model_trains_and_evaluates_one_step(tmp_path: Path) -> None:
    from delia.core.models import EMBEDDED

    config = tiny_config(
        Path(EMBEDDED),
        tmp_path,
        method="common_it",
        task__builder_options={"n": 4},
        train__max_steps=1,
        eval__limit=1,
        eval__max_new_tokens=4,
    )
    run_dir = run(config, log=lambda line: None)
    assert read_manifest(run_dir / "train")["steps"] == 1
    assert read_manifest(run_dir / "eval")["counts"]["eval"] == 1
    assert (run_dir / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_gemma3_270m_runs_delia_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second packaged family (Gemma 3: tied 262k-token head, sliding-window layers, scaled embeddings,
    no chat template of its own) through `delia run` with a trained `<sep>` row; its first use reassembles
    the GGUF from the chunk packages and dequantises it into the cache."""
    from delia.core.models import load_tokenizer

    run_dir = tmp_path / "runs"
    data = tiny_demo_config(
        Path("gemma3-270m"),
        method="delia",
        run_dir=str(run_dir),
        task={"builder_options": {"n": 4}},
        mix={"ratio": 1},
        train={"max_steps": 2},
        eval={"limit": 1, "max_new_tokens": 4},
    )
    (tmp_path / "gemma.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run_cli(["run", str(tmp_path / "gemma.yaml")], capsys, monkeypatch)
    assert code == 0, out + err
    (finished,) = [path for path in run_dir.iterdir() if (path / "train").is_dir()]
    assert read_manifest(finished / "train")["steps"] == 2
    assert read_manifest(finished / "eval")["counts"]["eval"] == 1
    adapter = json.loads((finished / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "gemma3-270m"
    tokenizer = load_tokenizer("gemma3-270m")
    assert tokenizer.chat_template and "<start_of_turn>" in tokenizer.chat_template


def test_methods_command_lists_every_registered_method() -> None:
    from typer.testing import CliRunner

    from delia.cli import _register_all, app
    from delia.methods import available

    _register_all()
    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed == available()
    for name in ("delia", "common_it", "common_it_matched", "base"):
        assert listed[name]


def test_a_methods_own_stage_is_cached_and_its_directory_reaches_the_plan(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.core.stage import Stage, StageContext
    from delia.methods.base import Method, MethodPlan

    def write_notes(context: StageContext, out: Path) -> dict[str, Any]:
        (out / "notes.txt").write_text(f"seed {context.config.seed}")
        return {"counts": {"notes": 1}}

    seen: list[str] = []

    class WithNotes(Method):  # no name: not registered, handed to the pipeline below
        def stages(self, config: RunConfig) -> list[Stage]:
            return [Stage("notes", ("seed",), write_notes)]

        def plan(self, config: RunConfig, task: Any, stage_dirs: Any = None) -> MethodPlan:
            seen.append((stage_dirs["notes"] / "notes.txt").read_text())
            return MethodPlan(use_diverse=False, diversify=False, train=False)

    monkeypatch.setattr("delia.pipeline.driver.get_method", lambda name: WithNotes())
    config = tiny_config(tiny_model_dir, tmp_path, method="base", eval__limit=1)
    run_dir = run(config, log=lambda line: None)
    lines: list[str] = []
    run(config, log=lines.append)
    assert seen == ["seed 0", "seed 0"]
    assert read_manifest(run_dir / "notes")["counts"] == {"notes": 1}
    assert any(line.startswith("notes") and "cached" in line for line in lines)


def test_demo_general_probe_is_a_cached_stage_of_a_finished_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    from delia.demo import stage_general

    config = tiny_config(tiny_model_dir, tmp_path, name="base", method="base", eval__limit=1)
    run_dir = run(config, log=lambda line: None)
    figures = stage_general(run_dir, config, lambda line: None)
    assert set(figures) == {"general_correct", "general_json", "plain_correct", "plain_json"}
    lines: list[str] = []
    assert stage_general(run_dir, config, lines.append) == figures
    assert any(line.startswith("general") and "cached" in line for line in lines)
    assert read_manifest(run_dir / "general")["counts"]["prompts"] > 0


def test_auto_eval_budget_is_resolved_and_recorded(
    delia_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(delia_run, copy, symlinks=True)
    before = stage_stamps(copy)
    run(tiny_config(tiny_model_dir, tmp_path, eval__max_new_tokens="auto"), log=lambda line: None)
    after = stage_stamps(copy)
    assert {k for k in before if before[k] != after[k]} == {"eval"}  # only the eval stage reads the budget
    recorded = read_manifest(copy / "eval")["generation"]
    references = [
        json.loads(line)["reference"] for line in (copy / "predictions.jsonl").read_text().splitlines()
    ]
    assert recorded["max_new_tokens_config"] == "auto" and recorded["max_new_tokens"] >= 16
    longest = max(recorded["longest_reference_tokens"], recorded["longest_task_answer_tokens"])
    assert recorded["max_new_tokens"] == max(16, 2 * longest)
    assert len(references) == 2 and recorded["longest_reference_tokens"] > 0
    assert recorded["longest_task_answer_tokens"] > 0  # the demo task's trained answers were counted
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["generation"]["max_new_tokens"] == recorded["max_new_tokens"]
    assert read_manifest(delia_run / "eval")["generation"] == {
        "max_new_tokens": 6,
        "max_new_tokens_config": 6,
    }
