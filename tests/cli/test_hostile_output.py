"""Where delia writes (issue 19): a bad --out is one line and exit 2 before the work starts; two commands
writing one place are refused, not raced; a SIGKILLed writer's temps go at the next start; modes follow the
umask."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import one_line_error, run_cli

from delia.core import models
from delia.core.errors import DeliaError
from delia.core.io import exclusive_writer

DELIA = Path(sys.executable).parent / "delia"
TURNS = [{"role": "user", "content": "Say hi <sep>"}, {"role": "assistant", "content": "hi"}]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    """(task file, diverse file)."""
    task = write_rows(tmp_path / "task.jsonl", [{"messages": TURNS}] * 4)
    diverse = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(8)
    ]
    return task, write_rows(tmp_path / "diverse.jsonl", diverse)


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def loaded(spec: str) -> str:
        raise AssertionError(f"model {spec} loaded before the bad --out was refused")

    monkeypatch.setattr(models, "resolve_model_dir", loaded)


def mix_args(data: tuple[Path, Path], out: Path) -> list[str]:
    return ["mix", "--task", str(data[0]), "--diverse", str(data[1]), "--ratio", "1", "--out", str(out)]


# --- --out checked before the work ---------------------------------------------------------------------


def out_commands(data: tuple[Path, Path], out: Path) -> dict[str, list[str]]:
    return {
        "mix": mix_args(data, out),
        "synth sample": ["synth", "sample", "--limit", "2", "--out", str(out)],
        "synth diversify": ["synth", "diversify", "--task", str(data[0]), "--out", str(out), "--no-llm"],
    }


@pytest.mark.parametrize("command", ["mix", "synth sample", "synth diversify"])
def test_an_out_that_is_a_directory_is_refused_before_the_work(
    tmp_path: Path,
    data: tuple[Path, Path],
    command: str,
    no_model: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "outdir"
    out.mkdir()
    line = one_line_error(*run_cli(out_commands(data, out)[command], capsys, monkeypatch)[::2])
    assert line == f"error: --out {out}: is a directory; give the path of the file to write"
    assert list(out.iterdir()) == []


def test_an_out_below_a_file_is_refused(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = data[0] / "mixed.jsonl"
    line = one_line_error(*run_cli(mix_args(data, out), capsys, monkeypatch)[::2])
    assert line == f"error: --out {out}: {data[0]} is a file, not a directory"


def test_a_train_out_that_is_a_file_is_refused_before_reading_or_training(
    tmp_path: Path,
    data: tuple[Path, Path],
    no_model: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "trained"
    out.write_text("a file", encoding="utf-8")
    args = ["train", "--data", str(data[0]), "--out", str(out)]
    assert (
        one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
        == f"error: --out {out}: is a file; give a directory"
    )
    assert out.read_text(encoding="utf-8") == "a file"


def test_an_eval_out_that_is_a_file_is_refused_before_any_answer(
    tmp_path: Path,
    data: tuple[Path, Path],
    no_model: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "results"
    out.write_text("a file", encoding="utf-8")
    args = ["eval", "--data", str(data[0]), "--format", "messages", "--out", str(out)]
    assert (
        one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
        == f"error: --out {out}: is a file; give a directory"
    )
    assert out.read_text(encoding="utf-8") == "a file"


def delia_without_write_access(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `delia ARGS` so that a 0555 directory is not writable to it: as root, without the capability
    that lets root write anywhere (no mode stops root otherwise)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root, and no setpriv to drop CAP_DAC_OVERRIDE: no directory is read-only to root")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, str(DELIA), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("command", ["mix", "train"])
def test_a_read_only_output_directory_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    task = write_rows(tmp_path / "task.jsonl", [{"messages": TURNS}] * 4)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    args = {
        "mix": [
            "mix",
            "--task",
            str(task),
            "--out",
            str(read_only / "mixed.jsonl"),
            "--schedule",
            "task_only",
        ],
        "train": ["train", "--data", str(task), "--out", str(read_only / "trained")],
    }[command]
    try:
        done = delia_without_write_access(args, tmp_path)
    finally:
        read_only.chmod(0o755)
    out = args[args.index("--out") + 1]
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        == f"error: --out {out}: cannot write in {read_only} (permission denied or read-only)"
    )
    assert list(read_only.iterdir()) == []


# --- one writer at a time ----------------------------------------------------------------------------


def test_a_second_command_writing_the_same_out_is_refused(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "mixed.jsonl"
    with exclusive_writer(out, "--out"):  # as another `delia mix --out mixed.jsonl` holds it
        line = one_line_error(*run_cli(mix_args(data, out), capsys, monkeypatch)[::2])
    assert line == (
        f"error: --out {out}: another delia command (pid {os.getpid()}) is writing it; "
        "wait for it to finish, or write somewhere else"
    )
    assert not out.exists()
    code, stdout, err = run_cli([*mix_args(data, out), "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(stdout)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # what is on disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverse.jsonl", "mixed.jsonl", "task.jsonl"]


def test_a_second_run_into_the_same_run_directory_is_refused(
    tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"name": "r", "run_dir": str(tmp_path / "runs")}), encoding="utf-8")
    with exclusive_writer(tmp_path / "runs" / "r", "run directory"):
        line = one_line_error(*run_cli(["run", str(config)], capsys, monkeypatch)[::2])
    assert line.startswith(f"error: run directory {tmp_path / 'runs' / 'r'}: another delia command (pid ")
    assert list((tmp_path / "runs").iterdir()) == []


# --- temps of a SIGKILLed writer go at the next start -------------------------------------------------


def sigkilled_writer(out: Path) -> Path:
    """Kill -9 a process in the middle of an atomic write of `out`; the temp file it leaves."""
    writer = textwrap.dedent(
        f"""
        import time
        from delia.core.io import atomic_write_lines
        def lines():
            yield "first"
            print("writing", flush=True)
            time.sleep(60)
        atomic_write_lines({str(out)!r}, lines())
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    (orphan,) = out.parent.glob(f".{out.name}.*.tmp")
    return orphan


def test_a_killed_writers_temp_is_removed_when_the_next_command_starts(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "mixed.jsonl"
    orphan = sigkilled_writer(out)
    # The next command writing there fails later (its diverse file is missing), yet it has cleaned at start.
    args = ["mix", "--task", str(data[0]), "--diverse", str(tmp_path / "missing.jsonl"), "--out", str(out)]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and "missing.jsonl: file does not exist" in err
    assert not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverse.jsonl", "task.jsonl"]


# --- modes follow the umask ---------------------------------------------------------------------------


@pytest.fixture()
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_follow_the_umask(
    tmp_path: Path,
    data: tuple[Path, Path],
    tiny_model_dir: Path,
    umask_022: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_cli(mix_args(data, tmp_path / "mixed.jsonl"), capsys, monkeypatch)
    assert code == 0, err
    assert mode(tmp_path / "mixed.jsonl") == 0o644
    out = tmp_path / "trained"
    args = ["train", "--data", str(tmp_path / "mixed.jsonl"), "--out", str(out), "--set"]
    settings = [f"model.name={tiny_model_dir}", "lora.r=2", "train.batch_size=4", "train.max_steps=1"]
    code, _, err = run_cli([*args, *" --set ".join(settings).split(" ")], capsys, monkeypatch)
    assert code == 0, err
    assert mode(out) == 0o755 and mode(out / "adapter") == 0o755  # an atomic_dir: mkdtemp made it 0700
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and {oct(mode(p)) for p in written} == {oct(0o644)}


def test_every_rank_of_one_launch_runs_while_rank_0_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.cli._common import writing_to

    out = tmp_path / "trained"
    with writing_to(out, "dir"):  # rank 0 of `accelerate launch ... delia train --out trained`
        monkeypatch.setenv("RANK", "1")
        with writing_to(out, "dir") as path:  # rank 1 of the same launch is not refused
            assert path == out
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(DeliaError, match="another delia command"), writing_to(out, "dir"):
            pass  # a second command (rank 0 of another launch) is


def test_a_write_the_os_refuses_midway_is_one_line_exit_2(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    import delia.mix

    def refused(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "gone-read-only" / "x.tmp"))

    monkeypatch.setattr(delia.mix, "mix", refused)
    line = one_line_error(*run_cli(mix_args(data, tmp_path / "mixed.jsonl"), capsys, monkeypatch)[::2])
    assert line == f"error: {tmp_path / 'gone-read-only' / 'x.tmp'}: Permission denied"

    def bug(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "internal.json")

    monkeypatch.setattr(delia.mix, "mix", bug)  # not the user's doing: still an internal error, exit 1
    code, _, err = run_cli(mix_args(data, tmp_path / "mixed.jsonl"), capsys, monkeypatch)
    assert code == 1 and err.startswith("internal error: FileNotFoundError")
