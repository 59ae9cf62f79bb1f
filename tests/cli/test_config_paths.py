"""`delia run` from another working directory: the config's relative data paths are read from the config
file's directory, a missing one is one line naming its key and the path it came to, and the run config
written into the run directory names the same files from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli.test_adapters import run_cli

TURNS = [
    {"role": "user", "content": "Rate it <sep>"},
    {"role": "assistant", "content": '{"sentiment": "ok"}'},
]


def test_run_reads_data_beside_its_config_and_names_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text(json.dumps({"messages": TURNS}) + "\n", encoding="utf-8")
    (project / "run.yaml").write_text(
        "name: mine\ntask:\n  train: data/train.jsonl\neval:\n  file: data/eval.jsonl\n", encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["run", str(project / "run.yaml")], capsys, monkeypatch)
    assert code == 2
    missing = project / "data" / "eval.jsonl"
    assert err.startswith(f"error: config eval.file: file does not exist: {missing} ")
    assert len(err.strip().splitlines()) == 1  # task.train, read before it, was found beside the config
    written = yaml.safe_load((elsewhere / "runs" / "mine" / "config.yaml").read_text(encoding="utf-8"))
    assert written["task"]["train"] == "../../../project/data/train.jsonl"  # relative to the run directory
    assert (
        elsewhere / "runs" / "mine" / written["task"]["train"]
    ).resolve() == project / "data" / "train.jsonl"
