"""`delia train` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from delia.core.example import Example
from delia.data.io import write_jsonl

CLI = [sys.executable, "-c", "from delia.cli import main; main()"]


def test_train_command_writes_an_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        Example(
            messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            source="task" if i % 2 else "diverse",
        )
        for i in range(6)
    ]
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: {tiny_model_dir}\nlora:\n  r: 2\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *CLI,
            "train",
            "--config",
            str(config),
            "--data",
            str(tmp_path / "mixed.jsonl"),
            "--out",
            str(out),
            "--set",
            "train.batch_size=3",
            "--set",
            "train.max_steps=2",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 2 and summary["examples"] == 6
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2


def test_bad_data_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    done = subprocess.run(
        [*CLI, "train", "--data", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "bad.jsonl:1" in done.stderr and len(done.stderr.strip().splitlines()) == 1
