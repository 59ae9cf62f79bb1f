"""Wall time and peak memory of `delia mix` plus the first 20 training steps, at diverse ratio 10, 100, 500.

Each ratio runs the real CLI in fresh processes: `delia mix` (task + R x |task| diverse examples, shuffled)
then `delia train --data <mixed> --set train.max_steps=20`, so what is measured is what a user runs, data
reading included. Peak memory is each process's VmHWM (the high-water mark of its own address space, read
at exit): `getrusage(...).ru_maxrss` of a child would start from the parent's peak, which Linux carries over
at exec.

Data: task = DELIA's `<sep>` examples (/work/shared/data/delia-reproduce/train_dataset.jsonl, the first
--task-examples); diverse = Stanford Alpaca (52,002 records, 51,974 with an answer) converted once into a
messages JSONL in the scratch directory, so `delia mix` takes its streaming path (byte offsets, records
parsed when drawn). Alpaca's own outputs stand in for self-sampled answers: the bench measures data volume,
and self-sampling 50,000 answers would take days on this CPU. With 100 task examples, ratio 500 draws
50,000 distinct records (no upsampling).

Model: the embedded SmolLM2-135M-Instruct with `<sep>` added, LoRA rank 16 on every linear layer,
batch 8 = one micro-batch of 8, max_length 256, exactly 20 optimizer steps. Writes bench/results/scale.json.

    .venv/bin/python bench/bench_scale.py [--ratios 10 100 500] [--task-examples 100] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    ROOT,
    busy_cores_now,
    command_line,
    is_shared,
    load_average,
    machine_info,
    timestamp,
    write_result,
)

DATA = ROOT.parent / "shared" / "data"
TASK = DATA / "delia-reproduce" / "train_dataset.jsonl"
ALPACA = DATA / "alpaca" / "alpaca_data.json.gz"
RESULT = RESULTS / "scale.json"
EMBEDDED = "smollm2-135m-instruct"
LINEAR = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
RSS_GOAL = 1.2  # issue #9: peak RSS at the largest ratio within 1.2x of the smallest

# Runs the delia CLI; at exit writes a JSON object of memory figures (KiB) to the file named by argv[1]:
# "peak" (VmHWM), and for `train` "before_steps_rss"/"before_steps_peak" when training starts (model loaded,
# data read, optimizer built), which separates what the data costs from what the steps cost.
CHILD = """
import atexit, json, sys
marks_path, marks = sys.argv.pop(1), {}

def status_kib(field):
    lines = open('/proc/self/status').read().splitlines()
    return int(next(line.split()[1] for line in lines if line.startswith(field + ':')))

def write_marks():
    marks['peak'] = status_kib('VmHWM')
    open(marks_path, 'w').write(json.dumps(marks))

atexit.register(write_marks)
if sys.argv[1:2] == ['train']:
    from delia.train import loop
    run = loop.Trainer.run
    def run_noting_memory(self, *args, **kwargs):
        marks.update(before_steps_rss=status_kib('VmRSS'), before_steps_peak=status_kib('VmHWM'))
        return run(self, *args, **kwargs)
    loop.Trainer.run = run_noting_memory
from delia.cli import main
main()
"""


@dataclass
class Measured:
    """One finished CLI process."""

    returncode: int
    seconds: float
    memory_mib: dict[str, float]  # "peak", and for train "before_steps_rss", "before_steps_peak"
    stdout: str
    stderr: str

    @property
    def peak_rss_mib(self) -> float | None:
        return self.memory_mib.get("peak")


@dataclass
class Settings:
    model: str
    steps: int
    batch: int
    max_length: int
    lora_r: int
    seed: int


def run_cli(args: list[str], workdir: Path) -> Measured:
    """`delia ARGS` in a fresh process: exit code, wall seconds, peak RSS, output."""
    marks_file = workdir / f".memory-{time.monotonic_ns()}.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(marks_file), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    seconds = time.perf_counter() - start
    marks = json.loads(marks_file.read_text()) if marks_file.exists() else {}
    marks_file.unlink(missing_ok=True)
    memory = {name: round(kib / 1024, 1) for name, kib in marks.items()}
    return Measured(done.returncode, seconds, memory, done.stdout, done.stderr)


def checked(measured: Measured, what: str) -> Measured:
    if measured.returncode != 0:
        tail = "\n".join(measured.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {measured.returncode}):\n{tail}")
    return measured


def alpaca_as_messages(source: Path, target: Path) -> int:
    """Alpaca records with an answer, as messages JSONL (what `delia synth sample` writes); the count."""
    from delia.data import read_examples, write_jsonl

    examples = read_examples(source, "alpaca", source="diverse")
    return write_jsonl(target, (e for e in examples if e.messages[-1]["role"] == "assistant"))


def task_subset(source: Path, count: int, target: Path) -> int:
    """The first `count` task records, copied byte for byte."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    target.write_text("".join(lines[:count]), encoding="utf-8")
    return len(lines[:count])


def mix_args(task: Path, diverse: Path, ratio: float, seed: int, out: Path) -> list[str]:
    return [
        "mix",
        "--task", str(task),
        "--diverse", str(diverse),
        "--ratio", f"{ratio:g}",
        "--seed", str(seed),
        "--out", str(out),
        "--json",
    ]  # fmt: skip


def train_args(data: Path, out: Path, settings: Settings) -> list[str]:
    overrides = [
        f"model.name={settings.model}",
        "tokens.add=[<sep>]",
        f"lora.r={settings.lora_r}",
        f"lora.alpha={2 * settings.lora_r}",
        f"lora.target_modules={LINEAR}",
        f"train.max_steps={settings.steps}",
        f"train.batch_size={settings.batch}",
        f"train.micro_batch_size={settings.batch}",
        f"train.max_length={settings.max_length}",
        f"train.seed={settings.seed}",
    ]
    return ["train", "--data", str(data), "--out", str(out), "--json"] + [
        arg for item in overrides for arg in ("--set", item)
    ]


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object a `--json` command printed last (progress bars go to stderr, but be safe)."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{") :])


def step_rows(log_path: Path) -> list[dict[str, Any]]:
    """train_log.jsonl rows that are optimizer steps, with each step's own seconds added."""
    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if "step" in row and "elapsed" in row]
    previous = 0.0
    for row in rows:
        row["seconds"], previous = row["elapsed"] - previous, row["elapsed"]
    return rows


def step_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step time; the first step (allocator and kernel warm-up) is left out of the steady figures."""
    seconds = [row["seconds"] for row in rows]
    steady = seconds[1:] or seconds
    tokens = sum(row["tokens"] for row in rows)
    return {
        "steps": len(rows),
        "train_seconds": round(sum(seconds), 2),
        "seconds_per_step": round(sum(seconds) / len(seconds), 3),
        "first_step_seconds": round(seconds[0], 3),
        "median_step_seconds": round(statistics.median(steady), 3),
        "tokens_per_step": round(tokens / len(rows), 1),
        "tokens_per_s": round(tokens / sum(seconds), 1),
        "ms_per_token": round(1000 * sum(steady) / sum(row["tokens"] for row in rows[1:] or rows), 3),
    }


def run_ratio(ratio: float, task: Path, diverse: Path, scratch: Path, settings: Settings) -> dict[str, Any]:
    """`delia mix` then `delia train` (settings.steps steps) in fresh processes; their figures."""
    workdir = scratch / f"ratio-{ratio:g}"
    workdir.mkdir(parents=True, exist_ok=True)
    mixed, train_out = workdir / "mixed.jsonl", workdir / "train"
    load_before = load_average()
    mix_cli = mix_args(task, diverse, ratio, settings.seed, mixed)
    train_cli = train_args(mixed, train_out, settings)
    mixing = checked(run_cli(mix_cli, workdir), "delia mix")
    counts = last_json(mixing.stdout)
    training = checked(run_cli(train_cli, workdir), "delia train")
    summary = last_json(training.stdout)
    steps = step_figures(step_rows(train_out / "train_log.jsonl"))
    peaks = [peak for peak in (mixing.peak_rss_mib, training.peak_rss_mib) if peak is not None]
    return {
        "ratio": ratio,
        "records": counts["total"],
        "task": counts["task"],
        "diverse": counts["diverse"],
        "diverse_distinct": counts["diverse_distinct"],
        "mixed_file_mib": round(mixed.stat().st_size / 2**20, 2),
        "mix_seconds": round(mixing.seconds, 2),
        "mix_peak_rss_mib": mixing.peak_rss_mib,
        "train_wall_seconds": round(training.seconds, 2),
        **steps,
        "train_overhead_seconds": round(training.seconds - steps["train_seconds"], 2),
        "train_rss_before_steps_mib": training.memory_mib.get("before_steps_rss"),
        "train_peak_before_steps_mib": training.memory_mib.get("before_steps_peak"),
        "train_peak_rss_mib": training.peak_rss_mib,
        "peak_rss_mib": max(peaks) if peaks else None,
        "final_loss": summary.get("final_loss"),
        "truncated": summary.get("truncated"),
        "load_average": {"before": load_before, "after": load_average()},
        "commands": [shlex.join(["delia", *mix_cli]), shlex.join(["delia", *train_cli])],
    }


def ratio_of(rows: list[dict[str, Any]], key: str) -> float | None:
    """rows[-1][key] / rows[0][key]: the largest ratio against the smallest."""
    low, high = rows[0].get(key), rows[-1].get(key)
    return round(high / low, 3) if low and high is not None else None


def per_record_kib(rows: list[dict[str, Any]]) -> float | None:
    """Growth of the trainer's resident memory before its first step, per extra record in the mix."""
    low, high = rows[0].get("train_rss_before_steps_mib"), rows[-1].get("train_rss_before_steps_mib")
    extra = rows[-1]["records"] - rows[0]["records"]
    return round((high - low) * 1024 / extra, 3) if low is not None and high is not None and extra else None


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The flatness figures, named after the ratios compared (e.g. rss_ratio_500_vs_10)."""
    rows = sorted(rows, key=lambda row: row["ratio"])
    tag = f"{rows[-1]['ratio']:g}_vs_{rows[0]['ratio']:g}"
    rss = ratio_of(rows, "peak_rss_mib")
    return {
        f"rss_ratio_{tag}": rss,
        f"train_rss_ratio_{tag}": ratio_of(rows, "train_peak_rss_mib"),
        f"mix_rss_ratio_{tag}": ratio_of(rows, "mix_peak_rss_mib"),
        f"before_steps_rss_ratio_{tag}": ratio_of(rows, "train_rss_before_steps_mib"),
        "before_steps_kib_per_record": per_record_kib(rows),
        f"step_time_ratio_{tag}": ratio_of(rows, "median_step_seconds"),
        f"time_per_token_ratio_{tag}": ratio_of(rows, "ms_per_token"),
        f"mix_time_ratio_{tag}": ratio_of(rows, "mix_seconds"),
        "rss_goal": RSS_GOAL,
        "rss_flat": rss is not None and rss <= RSS_GOAL,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[10, 100, 500])
    parser.add_argument("--task-examples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", type=Path, default=TASK)
    parser.add_argument("--alpaca", type=Path, default=ALPACA)
    parser.add_argument("--scratch", type=Path, default=None, help="kept when given; a temp dir otherwise")
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_before = load_average()
    busy_before = busy_cores_now()
    started = time.perf_counter()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="delia_bench_scale_"))
    scratch.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.model, args.steps, args.batch, args.max_length, args.lora_r, args.seed)
    try:
        task = scratch / "task.jsonl"
        n_task = task_subset(args.task, args.task_examples, task)
        diverse = scratch / "alpaca_messages.jsonl"
        convert_start = time.perf_counter()
        n_diverse = alpaca_as_messages(args.alpaca, diverse)
        convert_seconds = time.perf_counter() - convert_start
        rows = []
        for ratio in sorted(args.ratios):
            print(f"ratio {ratio:g}: mix + {args.steps} steps ...", file=sys.stderr, flush=True)
            rows.append(run_ratio(ratio, task, diverse, scratch, settings))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    machine = machine_info(load_before, busy_before)
    shared = is_shared(machine)
    result = {
        "bench": "scale",
        "command": command_line(),
        "measured_at": timestamp(),
        "machine": machine,
        "machine_shared": shared,
        "note": (
            "other processes kept the cores busy as the bench started: time figures are indicative only; "
            "peak memory is what this bench is for"
            if shared
            else "machine otherwise idle"
        ),
        "setup": {
            "model": args.model,
            "tokens_added": ["<sep>"],
            "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "target_modules": LINEAR},
            "steps": args.steps,
            "batch_size": args.batch,
            "micro_batch_size": args.batch,
            "max_length": args.max_length,
            "seed": args.seed,
            "schedule": "shuffle",
            "task_file": str(args.task),
            "task_examples": n_task,
            "diverse_file": f"{args.alpaca} as messages JSONL (records with an answer)",
            "diverse_available": n_diverse,
            "diverse_conversion_seconds": round(convert_seconds, 2),
            "diverse_answers": "Alpaca's own outputs stand in for self-sampled answers",
            "peak_rss": "VmHWM of each process, read at its exit",
            "rss_before_steps": "the train process's VmRSS when Trainer.run starts (model, data, optimizer)",
        },
        "ratios": rows,
        **compare(rows),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if "ratio_" in k or k == "rss_flat"}, indent=2))
    return result


if __name__ == "__main__":
    main()
