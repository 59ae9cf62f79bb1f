"""What every bench result records besides its figures: the machine, its load, the command, the time.

Nothing here imports torch: a bench parent that only starts child processes stays light, and the versions
come from the installed package metadata (what the children import).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Read from ../shared, never copied into the repo (several sets are for research use only).
ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json.gz"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_info() -> dict[str, Any]:
    """CPU model and the instruction-set flags that decide bf16 speed (from /proc/cpuinfo on Linux)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def memory_gib() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: on a shared machine, how many others wanted the cores."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info(load_before: list[float] | None = None, busy_before: float | None = None) -> dict[str, Any]:
    """The machine as one JSON object; pass the load average and busy cores taken when the bench started."""
    info: dict[str, Any] = {
        **cpu_info(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "versions": package_versions(),
    }
    torch = sys.modules.get("torch")  # only when the caller imported it anyway
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["load_average"] = {"before": load_before, "after": load_average()}
    info["busy_cores_before"] = busy_before
    return info


def busy_cores_now() -> float | None:
    """Cores other processes keep busy now (/proc/stat over 0.2 s); call it before the bench's own work."""
    from delia.generation.threads import busy_cores

    busy = busy_cores()
    return None if busy is None else round(busy, 2)


def is_shared(info: dict[str, Any]) -> bool:
    """True when other processes kept more than half a core busy as the bench started: timings are then
    indicative. The load average after the bench is no guide: it counts the bench's own threads."""
    return others_busy(info.get("busy_cores_before"), info["load_average"]["before"])


def others_busy(busy_before: float | None, load_before: list[float] | None) -> bool:
    """More than half a core busy with other work as the bench started (without /proc/stat: the 1-minute
    load average before the bench, which lags)."""
    if busy_before is None:
        busy_before = load_before[0] if load_before else 0.0
    return busy_before > 0.5


def command_line() -> str:
    """How this bench was started, relative to the repository root when it can be."""
    python = Path(os.path.abspath(sys.executable))  # not resolve(): a venv's python is a symlink
    with contextlib.suppress(ValueError):  # outside the repository: keep the absolute path
        python = python.relative_to(ROOT)
    return shlex.join([str(python), *sys.argv])


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def finish(path: Path, result: dict[str, Any], load_before: list[float], busy_before: float | None) -> None:
    """Add the machine, whether others shared it, the command and the time; write `path` and print it."""
    machine = machine_info(load_before, busy_before)
    result = {
        **result,
        "machine": machine,
        "other_work_running": is_shared(machine),
        "command": command_line(),
        "measured_at": timestamp(),
    }
    write_result(path, result)
    print(json.dumps(result, indent=2))


def matmul_peak(dtype: Any, size: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of the best of `repeats` large square GEMMs. Only call it for bf16 where the CPU has bf16
    matmuls: emulated, one 4096 GEMM takes minutes."""
    import torch  # here: the other helpers serve benches that never load torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
