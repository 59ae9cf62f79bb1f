"""delia.core.io: atomic files and directories, read_json's None for what is not (yet) there, modes that
follow the umask, temps of killed writers swept, and one writer per target."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delia.core.errors import DeliaError
from delia.core.io import (
    STALE_AFTER_S,
    atomic_dir,
    atomic_write,
    current_umask,
    exclusive_writer,
    read_json,
    swap_into_place,
    sweep_stale_temps,
    write_json,
)


def test_write_json_round_trips_and_leaves_no_temp(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": [1, "é"]})
    assert read_json(tmp_path / "a.json") == {"x": [1, "é"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_read_json_is_none_for_missing_or_torn_files(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json") is None
    atomic_write(tmp_path / "torn.json", '{"x": ')
    assert read_json(tmp_path / "torn.json") is None


def test_atomic_dir_replaces_the_old_directory_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_atomic_dir_keep_existing_lets_the_first_finished_copy_win(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with atomic_dir(target, keep_existing=True) as tmp:
        (tmp / "model").write_text("first")
    with atomic_dir(target, keep_existing=True) as tmp:
        (tmp / "model").write_text("second")
    assert (target / "model").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_swap_into_place_never_leaves_the_old_copy_behind(tmp_path: Path) -> None:
    final, partial = tmp_path / "mix", tmp_path / ".mix.partial"
    final.mkdir()
    (final / "old").write_text("x")
    partial.mkdir()
    (partial / "new").write_text("y")
    swap_into_place(partial, final)
    assert [p.name for p in final.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix"]


# --- file modes follow the umask --------------------------------------------------------------------


@pytest.fixture()
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_written_files_and_directories_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    atomic_write(tmp_path / "metrics.json", "{}")
    with atomic_dir(tmp_path / "adapter") as tmp:
        (tmp / "weights").write_text("w")
        os.close(os.open(tmp / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors does
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "run.sh").chmod(0o755)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644  # mkstemp alone: 0600
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o755  # mkdtemp alone: 0700
    assert stat.S_IMODE((tmp_path / "adapter" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "adapter" / "run.sh").stat().st_mode) == 0o755  # bits beyond are kept
    os.umask(0o077)  # a stricter umask is followed too, not replaced by 0644
    atomic_write(tmp_path / "private.json", "{}")
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_current_umask_does_not_change_it(umask_022: None) -> None:
    assert current_umask() == 0o022
    assert current_umask() == 0o022


# --- temps of a killed writer are swept -------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_file = tmp_path / f".mixed.jsonl.{dead_pid()}-abcd1234.tmp"
        dead_dir = tmp_path / f".adapter.tmp.{dead_pid()}-abcd1234"
        live_file = tmp_path / f".mixed.jsonl.{alive.pid}-abcd1234.tmp"
        own_file = tmp_path / f".other.jsonl.{os.getpid()}-abcd1234.tmp"
        user_file = tmp_path / ".notes.tmp"  # not a delia temp name
        for path in (dead_file, live_file, own_file, user_file):
            path.write_text("partial")
        dead_dir.mkdir()
        (dead_dir / "weights").write_text("half")
        removed = sweep_stale_temps(tmp_path)
        assert sorted(removed) == sorted([dead_file, dead_dir])
        assert live_file.exists() and own_file.exists() and user_file.exists()
        old = time.time() - STALE_AFTER_S - 60  # a live pid this old was reused: its temp is stale
        os.utime(live_file, (old, old))
        assert sweep_stale_temps(tmp_path) == [live_file]
    finally:
        alive.kill()
        alive.wait()


def test_a_write_sweeps_what_a_sigkilled_writer_left(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        f"""
        import sys, time
        from delia.core.io import atomic_write_lines
        def lines():
            yield "first"
            print("writing", flush=True)
            time.sleep(60)
        atomic_write_lines({str(tmp_path / "mixed.jsonl")!r}, lines())
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    orphans = list(tmp_path.glob(".mixed.jsonl.*.tmp"))
    assert len(orphans) == 1 and str(child.pid) in orphans[0].name
    atomic_write(tmp_path / "other.json", "{}")  # any write in the directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


# --- one writer at a time ---------------------------------------------------------------------------


def test_a_second_writer_of_the_same_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "mixed.jsonl"
    refused = rf"--out .*mixed\.jsonl: another delia command \(pid {os.getpid()}\) is writing it"
    with exclusive_writer(target, "--out"):
        with pytest.raises(DeliaError, match=refused), exclusive_writer(target, "--out"):
            pass
        with exclusive_writer(tmp_path / "other.jsonl", "--out"):  # another target is not locked
            pass
    with exclusive_writer(target, "--out"):  # released at the end of the block
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), exclusive_writer(target, "--out"):
        raise RuntimeError("failed mid-write")
    with exclusive_writer(target, "--out"):
        pass
