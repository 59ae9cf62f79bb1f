from __future__ import annotations

import os

import pytest
import torch

from delia.generation import threads as runtime
from delia.generation.threads import ThreadPolicy, free_cores


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@pytest.fixture(autouse=True)
def keep_threads() -> None:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("load", "own", "expected"),
    [(0.0, 0, 2), (0.9, 0, 1), (8.0, 0, 1), (2.0, 2, 2), (3.0, 2, 1)],
)
def test_free_cores_falls_back_to_the_load_average(
    two_cores: None, monkeypatch: pytest.MonkeyPatch, load: float, own: int, expected: int
) -> None:
    monkeypatch.setattr(runtime, "busy_cores", lambda: None)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (load, load, load))
    assert free_cores(own_threads=own) == expected


@pytest.mark.parametrize(("busy", "expected"), [(0.1, 2), (0.8, 1), (1.6, 1), (7.0, 1)])
def test_free_cores_prefers_the_measured_load(
    two_cores: None, monkeypatch: pytest.MonkeyPatch, busy: float, expected: int
) -> None:
    monkeypatch.setattr(runtime, "busy_cores", lambda: busy)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert free_cores() == expected


def test_busy_cores_reads_proc_stat() -> None:
    busy = runtime.busy_cores(window=0.05)
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


def test_requested_threads_are_kept(two_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "busy_cores", lambda: 9.0)
    policy = ThreadPolicy(3, "cpu")
    policy.checked_at -= ThreadPolicy.INTERVAL_S
    policy.update()
    assert torch.get_num_threads() == 3


def test_auto_threads_follow_the_load_and_split_among_ranks(
    two_cores: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = iter([0.0, 9.0])
    monkeypatch.setattr(runtime, "busy_cores", lambda: next(loads))
    torch.set_num_threads(1)
    policy = ThreadPolicy(None, "cpu")
    assert torch.get_num_threads() == 2
    policy.update()  # too soon after the first check: nothing measured
    assert torch.get_num_threads() == 2
    policy.checked_at -= ThreadPolicy.INTERVAL_S
    policy.update()
    assert torch.get_num_threads() == 1
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    ThreadPolicy(None, "cpu", local_processes=2)
    assert torch.get_num_threads() == 1
