"""Kill a `delia` command with SIGKILL at random moments, rerun it until it finishes, and check its outputs.

A trial starts the command, waits until it first writes under its output directory (so the kill lands in
its work, not in Python's imports), waits a seeded random delay and sends SIGKILL; the command is then
started again (the resume command: the same one, or `delia train ... --resume`) and killed again, until
the kill budget is spent or an attempt finishes first. A kill counts only when the process was still
running when it arrived. The last attempt runs to the end, and the caller compares its outputs with an
uninterrupted run's.

Used by tests/test_crash.py; runnable by hand too (see `main`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_S = 0.02


def delia_argv(*args: str) -> list[str]:
    """The installed `delia` console script of this interpreter, or the same entry point through -c."""
    script = Path(sys.executable).with_name("delia")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from delia.cli import main; sys.exit(main())", *args]


def quiet_env(**extra: str) -> dict[str, str]:
    """One thread per process (fixed numerics, modest CPU), offline, no colour codes in captured output."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_COLOR": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONFAULTHANDLER": "1",  # a hung attempt killed with SIGABRT leaves its stacks in the log
    }
    env.update(extra)
    return env


def tree_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file under root: any write changes it."""
    if not root.exists():
        return ()
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # renamed away between listing and stat
                continue
            found.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


@dataclass
class Outcome:
    """One process run: how it ended, and when it first wrote under the watched directory."""

    returncode: int | None
    killed: bool
    seconds: float
    first_write_s: float | None
    log: str
    delay_s: float | None = None
    state: str = ""  # what the output directory held when the kill landed

    def describe(self) -> str:
        end = f"killed [{self.state}]" if self.killed else f"exit {self.returncode}"
        first = "-" if self.first_write_s is None else f"{self.first_write_s:.1f}s"
        delay = "" if self.delay_s is None else f" +{self.delay_s:.2f}s"
        return f"{end} at {self.seconds:.1f}s (first write {first}{delay})"


@dataclass
class TrialReport:
    command: str
    kills: int = 0
    finished_before_kill: int = 0
    attempts: list[Outcome] = field(default_factory=list)

    def line(self) -> str:
        attempts = "; ".join(outcome.describe() for outcome in self.attempts)
        return f"{self.command}: {self.kills} kills survived [{attempts}]"


def run_once(
    argv: list[str],
    watch: Path,
    log_path: Path,
    *,
    env: dict[str, str],
    cwd: Path,
    kill_after_first_write_s: float | None = None,
    timeout_s: float = 300.0,
    state: Callable[[], str] | None = None,
    ready: Callable[[], bool] | None = None,
) -> Outcome:
    """Run argv; with `kill_after_first_write_s`, SIGKILL it that long after it first writes under `watch`."""
    before = tree_signature(watch)
    start = time.monotonic()
    first_write: float | None = None
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        killed, state_at_kill = False, ""
        deadline = start + timeout_s
        kill_at: float | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                proc.send_signal(signal.SIGABRT)  # faulthandler (on in quiet_env) writes every thread's stack
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-6000:]
                raise TimeoutError(f"{argv} ran past {timeout_s} s; log {log_path} ends:\n{tail}")
            if first_write is None and tree_signature(watch) != before:
                first_write = now - start
            # The countdown starts at the first write, or when `ready` says the aimed-at work has begun.
            armed = first_write is not None if ready is None else ready()
            if kill_at is None and armed and kill_after_first_write_s is not None:
                kill_at = now + kill_after_first_write_s
            if kill_at is not None and now >= kill_at:
                if proc.poll() is None:  # still running: this kill lands in the middle of the work
                    state_at_kill = state() if state is not None else ""
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = proc.returncode == -signal.SIGKILL
                break
            time.sleep(POLL_S)
        proc.wait()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    seconds = time.monotonic() - start
    return Outcome(
        proc.returncode, killed, seconds, first_write, text, kill_after_first_write_s, state_at_kill
    )


def kill_and_resume(
    command: str,
    first_argv: list[str],
    resume_argv: list[str],
    watch: Path,
    *,
    kills: int,
    seed: int,
    window_s: float,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    timeout_s: float = 300.0,
    state: Callable[[], str] | None = None,
    aim: list[Callable[[], bool]] | None = None,
) -> TrialReport:
    """Up to `kills` SIGKILLs, the k-th a seeded random delay in [0, window_s / k) after that attempt's first
    write (a rerun has less left to do), or in [0, window_s) after `aim[k]()` turns true (a kill aimed at a
    given piece of work); then one attempt that runs to the end (it must exit 0)."""
    rng = random.Random(f"{seed}:{command}")
    report = TrialReport(command)
    argv = first_argv
    for attempt in range(kills):
        ready = aim[attempt] if aim is not None and attempt < len(aim) else None
        delay = rng.uniform(0.0, window_s if ready is not None else window_s / (attempt + 1))
        outcome = run_once(
            argv,
            watch,
            log_path,
            env=env,
            cwd=cwd,
            kill_after_first_write_s=delay,
            timeout_s=timeout_s,
            state=state,
            ready=ready,
        )
        report.attempts.append(outcome)
        if not outcome.killed:
            _check_exit(outcome, argv, log_path)
            report.finished_before_kill += 1
            return report  # it finished: nothing left to interrupt
        report.kills += 1
        argv = resume_argv
    final = run_once(argv, watch, log_path, env=env, cwd=cwd, timeout_s=timeout_s)
    report.attempts.append(final)
    _check_exit(final, argv, log_path)
    return report


def _check_exit(outcome: Outcome, argv: list[str], log_path: Path) -> None:
    if outcome.returncode != 0:
        tail = "\n".join(outcome.log.splitlines()[-25:])
        raise AssertionError(f"{' '.join(argv)} exited {outcome.returncode}; log {log_path}:\n{tail}")


# ------------------------------------------------------------------------------------------- checks


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jsonl_problems(root: Path) -> list[str]:
    """Every *.jsonl under root (hidden temp files aside) must be whole lines of valid JSON."""
    problems = []
    for path in sorted(root.rglob("*.jsonl")):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append(f"{path}: last line has no newline (torn)")
        for lineno, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{path}:{lineno}: not a whole JSON line")
    return problems


def leftover_temps(root: Path) -> list[str]:
    """Hidden temp files/dirs a killed writer left behind (they are not outputs, but should not pile up)."""
    patterns = (".*.tmp", ".*.partial", ".step-*", ".adapter.*")
    return sorted(str(p.relative_to(root)) for pattern in patterns for p in root.rglob(pattern))


def tensors_close(first: Path, second: Path, atol: float = 1e-5) -> float:
    """Largest absolute difference between two safetensors files with the same tensor names."""
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(second))
    if a.keys() != b.keys():
        raise AssertionError(f"{first} and {second} hold different tensors: {sorted(a.keys() ^ b.keys())}")
    worst = max(((a[k].float() - b[k].float()).abs().max().item() for k in a), default=0.0)
    if worst > atol:
        raise AssertionError(f"{first} vs {second}: max |diff| {worst:g} > {atol:g}")
    return worst


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    """By hand: `python tests/crash_harness.py [KILLS [SEED]]` runs tests/test_crash.py with that budget."""
    import pytest

    if len(sys.argv) > 1:
        os.environ["DELIA_CRASH_KILLS"] = sys.argv[1]
    if len(sys.argv) > 2:
        os.environ["DELIA_CRASH_SEED"] = sys.argv[2]
    here = Path(__file__).resolve().parent
    sys.exit(pytest.main([str(here / "test_crash.py"), "-q", "-p", "no:cacheprovider"]))


if __name__ == "__main__":
    main()
