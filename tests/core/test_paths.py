"""Paths in a config file are read from the file's directory, `--set` paths from the working directory; a
config written into a run directory names the same files from there; the shipped configs hash as before."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from delia.core.config import build_config, load_config
from delia.core.errors import ConfigError
from delia.core.paths import relocate_config_paths, resolve_config_paths
from delia.pipeline.stages.task import TaskStage, load_eval_examples, load_task_examples

REPO = Path(__file__).resolve().parents[2]
TURNS = [
    {"role": "user", "content": "Rate it <sep>"},
    {"role": "assistant", "content": '{"sentiment": "ok"}'},
]


def write_records(path: Path, n: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": TURNS}) + "\n" for _ in range(n)), encoding="utf-8")
    return path


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A user's project: project/config.yaml naming its data relative to itself (task/, ../shared/)."""
    root = tmp_path / "project"
    write_records(root / "task" / "train.jsonl", 3)
    write_records(root / "task" / "eval.jsonl", 2)
    write_records(tmp_path / "shared" / "queries.jsonl", 4)
    (root / "config.yaml").write_text(
        "name: mine\n"
        "run_dir: runs\n"
        "task:\n  train: task/train.jsonl\n"
        "sample:\n  queries: ../shared/queries.jsonl\n"
        "eval:\n  file: ./task/eval.jsonl\n  builder_options:\n    instructions_from: task/train.jsonl\n",
        encoding="utf-8",
    )
    return root


def test_a_config_run_from_elsewhere_reads_the_files_beside_it(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(project / "config.yaml")
    assert Path(config.task.train).resolve() == project / "task" / "train.jsonl"
    assert Path(config.eval.file).resolve() == project / "task" / "eval.jsonl"
    assert Path(config.sample.queries).resolve() == tmp_path / "shared" / "queries.jsonl"
    options = config.eval.builder_options
    assert Path(options["instructions_from"]).resolve() == project / "task" / "train.jsonl"
    assert config.run_dir == "runs"  # an output: relative to the working directory, as before
    assert len(load_task_examples(config)) == 3 and len(load_eval_examples(config)) == 2


def test_set_paths_are_read_from_the_working_directory(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_records(tmp_path / "here" / "other.jsonl", 5)
    monkeypatch.chdir(tmp_path / "here")
    config = load_config(project / "config.yaml", ["task.train=other.jsonl"])
    assert config.task.train == "other.jsonl"
    assert len(load_task_examples(config)) == 5


def test_absolute_paths_hub_ids_and_model_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cfg" / "my-model").mkdir(parents=True)
    data = {"task": {"train": "/data/t.jsonl"}, "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"}}
    monkeypatch.chdir(tmp_path)
    assert resolve_config_paths(data, tmp_path / "cfg") == data
    local = resolve_config_paths({"model": {"name": "my-model"}}, tmp_path / "cfg")
    assert local == {"model": {"name": "cfg/my-model"}}  # a directory beside the config is a path


def test_resolving_leaves_the_callers_dict_as_it_was(tmp_path: Path) -> None:
    data = {"task": {"train": "t.jsonl", "builder_options": {"exclude_queries_from": "t.jsonl"}}}
    before = json.dumps(data)
    resolve_config_paths(data, tmp_path / "elsewhere")
    relocate_config_paths(data, tmp_path)
    assert json.dumps(data) == before


def test_a_missing_file_names_its_key_and_the_path_it_resolved_to(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "task" / "train.jsonl").unlink()
    monkeypatch.chdir(tmp_path)
    config = load_config(project / "config.yaml")
    with pytest.raises(ConfigError) as caught:
        load_task_examples(config)
    message = str(caught.value)
    assert message.startswith("config task.train: file does not exist: ")
    assert str(project / "task" / "train.jsonl") in message and "\n" not in message


def test_the_run_config_written_into_a_run_directory_names_the_same_files(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(project / "config.yaml")
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(run_dir), encoding="utf-8")
    written = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "train: ../../project/task/train.jsonl" in written  # relative to the run directory
    reloaded = load_config(run_dir / "config.yaml")
    assert reloaded == config
    assert reloaded.stage_hash("task", "sample", "eval") == config.stage_hash("task", "sample", "eval")


@pytest.mark.parametrize(
    "name", ["delia-sep-json-135m.yaml", "delia-sep-json.yaml", "translation-en-is.yaml"]
)
def test_the_shipped_configs_hash_as_their_working_directory_paths_did(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from the repository root, a shipped config's paths are held exactly as the config wrote them
    when they were read from the working directory (`../shared/...`), so every stage hash, and so every
    cached run, stays as it was."""
    monkeypatch.chdir(REPO)
    path = Path("configs") / name
    text = path.read_text(encoding="utf-8")
    assert "../../shared/data/" in text  # written relative to configs/ now
    as_before = build_config(yaml.safe_load(text.replace("../../shared/data/", "../shared/data/")))
    config = load_config(path)
    assert config.task.train == as_before.task.train and config.task.train.startswith("../shared/data/")
    assert config.model_dump() == as_before.model_dump()
    sections = ("task", "sample", "eval", "model", "diversify")
    assert config.stage_hash(*sections) == as_before.stage_hash(*sections)
    task_key = TaskStage().key(SimpleNamespace(config=config))  # type: ignore[arg-type]
    assert task_key.hash == TaskStage().key(SimpleNamespace(config=as_before)).hash  # type: ignore[arg-type]


def test_an_experiments_base_config_reads_its_paths_from_its_own_directory(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.experiment.spec import base_data, load_experiment

    experiment = tmp_path / "exp" / "grid.yaml"
    experiment.parent.mkdir()
    experiment.write_text(
        f"name: g\nout: out\nbase: {project / 'config.yaml'}\ngrid:\n  methods: [common_it]\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path / "exp")
    data = base_data(load_experiment(experiment))
    assert Path(data["task"]["train"]).resolve() == project / "task" / "train.jsonl"
