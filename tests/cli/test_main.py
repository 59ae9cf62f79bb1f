"""The `delia` command: model info, data inspect, mix, and one-line errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

from delia.core.example import Example
from delia.data import write_jsonl

DELIA = Path(sys.executable).parent / "delia"
TURNS = [{"role": "user", "content": "Say hi <sep>"}, {"role": "assistant", "content": "hi"}]


def run_entry_point(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed `delia` script: the entry point, its exit code, what reaches the terminal."""
    return subprocess.run(
        [str(DELIA), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def broken_on_line_3(path: Path) -> Path:
    lines = [json.dumps({"messages": TURNS})] * 5
    lines[2] = '{"messages": [{"role": "user", "content": "unterminated'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def diverse_file(path: Path, n: int) -> Path:
    chats = (
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(n)
    )
    write_jsonl(path, (Example(messages=m, source="diverse") for m in chats))
    return path


def test_model_info_json(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_cli(["model", "info", "--model", str(tiny_model_dir), "--json"], capsys, monkeypatch)
    assert code == 0
    info = json.loads(out)
    assert set(info) >= {
        "model", "path", "architecture", "params", "layers", "hidden_size", "vocab_size",
        "tokenizer_size", "tied_embeddings", "chat_template", "load_seconds", "import_seconds",
    }  # fmt: skip
    assert info["layers"] == 2 and info["hidden_size"] == 64 and info["vocab_size"] == info["tokenizer_size"]


def test_data_inspect_shared_task_file(
    shared_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_data / "delia-reproduce" / "train_dataset.jsonl"
    code, out, _ = run_cli(["data", "inspect", str(path), "--tokens", "--json"], capsys, monkeypatch)
    assert code == 0
    report = json.loads(out)
    assert report["records"] == 100 and report["format"] == "messages"
    assert report["sources"] == {"task": 100} and report["tokens"]["min"] > 0


def test_a_broken_line_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    broken_on_line_3(tmp_path / "NAME.jsonl")
    result = run_entry_point(["data", "inspect", "NAME.jsonl"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: NAME.jsonl:3: invalid JSON")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    broken_on_line_3(tmp_path / "NAME.jsonl")
    result = run_entry_point(["--debug", "data", "inspect", "NAME.jsonl"], tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DataError: NAME.jsonl:3" in result.stderr


def test_mix_bad_task_file_names_its_line(tmp_path: Path) -> None:
    broken_on_line_3(tmp_path / "bad.jsonl")
    diverse_file(tmp_path / "S.jsonl", 30)
    args = ["mix", "--task", "bad.jsonl", "--diverse", "S.jsonl", "--ratio", "2", "--out", "M.jsonl"]
    result = run_entry_point(args, tmp_path)
    assert result.returncode == 2
    assert "bad.jsonl:3" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "M.jsonl").exists()


def test_mix_twice_gives_the_same_file(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = shared_data / "delia-reproduce" / "train_dataset.jsonl"
    diverse = diverse_file(tmp_path / "S.jsonl", 1200)
    hashes = []
    for name in ("M1.jsonl", "M2.jsonl"):
        args = [
            "mix",
            "--task",
            str(task),
            "--diverse",
            str(diverse),
            "--schedule",
            "shuffle",
            "--ratio",
            "10",
        ]
        code, out, err = run_cli(
            [*args, "--seed", "1", "--out", str(tmp_path / name), "--json"], capsys, monkeypatch
        )
        assert code == 0, err
        counts = json.loads(out)
        assert counts["total"] == 100 + 10 * 100 and counts["sources"] == {"diverse": 1000, "task": 100}
        hashes.append(counts["sha256"])
    assert hashes[0] == hashes[1]
    assert (tmp_path / "M1.jsonl").read_bytes() == (tmp_path / "M2.jsonl").read_bytes()


def test_mix_prints_a_table_and_warns_when_upsampling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    diverse = diverse_file(tmp_path / "S.jsonl", 5)
    write_jsonl(tmp_path / "T.jsonl", [Example(messages=TURNS)])
    args = ["mix", "--task", str(tmp_path / "T.jsonl"), "--diverse", str(diverse), "--ratio", "8"]
    code, out, err = run_cli([*args, "--out", str(tmp_path / "M.jsonl")], capsys, monkeypatch)
    assert code == 0
    assert "upsampled" in out and "total" in out
    assert "WARNING: upsampling" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratio", "-1"], "error: config mix.ratio (command line): ratio must be a finite number >= 0"),
        (
            ["--schedule", "interleave", "--ratio", "1.5"],
            "error: config mix.ratio: interleave puts a whole number",
        ),
        (["--schedule", "random"], "error: config mix.schedule (command line): Input should be 'shuffle'"),
        (["--ratio", "many"], "Invalid value for '--ratio'"),
        (["--ratio", "1", "--task"], "Option '--task' requires an argument"),
    ],
)
def test_mix_bad_options(
    tmp_path: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_jsonl(tmp_path / "T.jsonl", [Example(messages=TURNS)])
    args = [
        "mix",
        "--task",
        str(tmp_path / "T.jsonl"),
        "--diverse",
        str(diverse_file(tmp_path / "S.jsonl", 3)),
    ]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "M.jsonl"), *extra], capsys, monkeypatch)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_missing_model_path(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["model", "info", "--model", "./no-such-model"], capsys, monkeypatch)
    assert code == 2 and err.strip() == "error: model path ./no-such-model does not exist"


def test_chat_context_is_a_file_when_one_exists_else_the_text(tmp_path: Path) -> None:
    from delia.cli.chat import context_text

    record = "'user_query' : " + "a long context line " * 20 + "\n'response' : no"  # > 255 chars
    assert context_text(record) == record
    path = tmp_path / "context.txt"
    path.write_text("  the context \n", encoding="utf-8")
    assert context_text(str(path)) == "the context"
