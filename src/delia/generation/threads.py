"""The torch CPU thread count, kept at the cores other processes leave free (training and generation)."""

from __future__ import annotations

import os
import time

import torch


def busy_cores(window: float = 0.2) -> float | None:
    """Cores busy right now, from /proc/stat over `window` seconds (this process sleeps meanwhile, so the
    figure is other processes' load); None where /proc/stat is missing. The load average would lag a
    just-finished job by a minute or more."""

    def snapshot() -> tuple[float, float]:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [float(x) for x in stat.readline().split()[1:9]]  # user..steal; guest is inside user
        return sum(ticks), ticks[3] + ticks[4]  # idle + iowait

    try:
        total_0, idle_0 = snapshot()
        time.sleep(window)
        total_1, idle_1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    if total_1 <= total_0:
        return None
    return (1.0 - (idle_1 - idle_0) / (total_1 - total_0)) * (os.cpu_count() or 1)


def free_cores(own_threads: int = 0) -> int:
    """Cores not kept busy by other processes: measured now where possible, else the 1-minute load average
    minus our own running threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    others = busy if busy is not None else max(0.0, os.getloadavg()[0] - own_threads)
    return max(1, min(cores, round(cores - others)))


class ThreadPolicy:
    """`train.threads`, or on a CPU as many threads as there are free cores, re-checked every half minute.

    On an oversubscribed CPU every parallel op waits at a barrier for a thread the OS has descheduled:
    measured on a 2-core machine at load 8, an elementwise op took 6x longer wall-clock with 2 threads than
    with 1, and a whole training step 20x. With idle cores, all of them are used. The re-check goes by time,
    not steps: a short run started while another job held a core kept 1 thread to its end when it re-checked
    every 10 steps and had 8.
    """

    INTERVAL_S = 30.0  # a check sleeps 0.2 s, under 1% of this

    def __init__(self, requested: int | None, device: str, local_processes: int = 1) -> None:
        self.auto = requested is None and torch.device(device).type == "cpu"
        self.share = max(1, local_processes)  # ranks on one CPU split its free cores
        self.checked_at = time.monotonic()
        if requested:
            torch.set_num_threads(requested)
        elif self.auto:
            self.recheck()

    def recheck(self) -> None:
        # This process's earlier stages (sampling, eval) count in the load average fallback too.
        own = torch.get_num_threads() * self.share
        torch.set_num_threads(max(1, free_cores(own_threads=own) // self.share))
        self.checked_at = time.monotonic()

    def update(self) -> None:
        """Call between optimizer steps."""
        if self.auto and time.monotonic() - self.checked_at >= self.INTERVAL_S:
            self.recheck()


# torch's thread count is process-wide, so the policy that long generations keep current is too: a run
# started on an idle CPU kept 2 threads through sampling while a second job took a core, and decoded 12x
# slower than that job with 1 (7 vs 92 new tokens/s, 2026-11-30).
_installed: ThreadPolicy | None = None


def install_thread_policy(policy: ThreadPolicy | None) -> None:
    """Makes `policy` the one that `keep_threads_current` updates (None: leave the thread count alone)."""
    global _installed
    _installed = policy


def keep_threads_current() -> None:
    """Call between decode steps: re-checks free cores at most every `ThreadPolicy.INTERVAL_S`."""
    if _installed is not None:
        _installed.update()


def follow_free_cores(requested: int | None, device: str) -> ThreadPolicy:
    """Install the process's thread policy for a command that runs a model: `requested` threads, or on a
    CPU as many as other processes leave free, re-checked between decode steps. Measured at load ~4.5 on 2
    cores: an eval of 10 answers took 83 s with torch's default threads and 8 s with one."""
    policy = ThreadPolicy(requested, device)
    install_thread_policy(policy)
    return policy
