"""Training speed of delia's trainer per setting, on bench_train's data and model (batch 8, LoRA r16 on all
linear layers, 6 steps, the first 2 untimed): how much a setting changes real tokens/s, nothing else changed.

  default        the trainer as bench_train runs it (lora.dropout 0, the default; eager layers)
  compile        train.compile: torch.compile of the decoder layers
  dropout-0.05   lora.dropout 0.05 (the default before 2026-12-01): on CPU, torch draws dropout masks one
                 number at a time (a profile put 15 % of a step in aten::bernoulli_)
Each setting trains in a fresh process. Writes bench/results/step.json.

    .venv/bin/python bench/bench_step.py [--settings default,compile,dropout-0.05] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import RESULTS, busy_cores_now, finish, load_average

RESULT = RESULTS / "step.json"
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "compile": {"compile": True},
    "dropout-0.05": {"dropout": 0.05},
}
UNTIMED = 2  # the first step compiles (with train.compile) and warms the allocator


def train_once(setting: str, steps: int, threads: int) -> dict[str, Any]:
    """In the child: `steps` steps of bench_train's delia side with one setting; its timings."""
    import torch
    from _common import matmul_peak
    from bench_train import DeliaSide, mixed_examples, run_config, useful_gflops

    torch.set_num_threads(threads)
    options = SETTINGS[setting]
    config = run_config(8, steps, 0, options.get("compile", False), threads)
    if "dropout" in options:
        config = config.model_copy(
            update={"lora": config.lora.model_copy(update={"dropout": options["dropout"]})}
        )
    side = DeliaSide(config, mixed_examples(256, 0), Path(tempfile.mkdtemp(prefix="bench_step_")))
    side.train(steps)
    side.close()
    base = side.trainer.model.get_base_model()
    hidden, vocab = base.config.hidden_size, base.get_output_embeddings().weight.shape[0]
    n_params = sum(p.numel() for n, p in base.named_parameters() if "embed" not in n and "lora" not in n)
    timed = [r for r in side.records if r["step"] > UNTIMED]
    tokens, seconds = sum(r["tokens"] for r in timed), sum(r["seconds"] for r in timed)
    peak = matmul_peak(torch.float32)
    gflops = useful_gflops(side.records, UNTIMED, n_params, hidden, vocab)
    return {
        "lora_dropout": config.lora.dropout,
        "compile": config.train.compile,
        "tokens_per_s": round(tokens / seconds, 1),
        "useful_gflop_per_s": round(gflops, 1),
        "fp32_peak_gflop_per_s": round(peak, 1),
        "fraction_of_fp32_peak": round(gflops / peak, 4),
        "step_seconds": [round(r["seconds"], 2) for r in side.records],
        "losses": [round(r["loss"], 4) for r in side.records],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args.child, args.steps, args.threads)))
        return
    load_before, busy_before = load_average(), busy_cores_now()
    results: dict[str, Any] = {}
    for setting in args.settings.split(","):
        argv = [sys.executable, __file__, "--child", setting, "--steps", str(args.steps)]
        done = subprocess.run(
            [*argv, "--threads", str(args.threads)], capture_output=True, text=True, check=True
        )
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
        print(setting, results[setting]["tokens_per_s"], "tokens/s", file=sys.stderr)
    base = results.get("default", {}).get("tokens_per_s")
    speedups = {
        name: round(r["tokens_per_s"] / base, 2) for name, r in results.items() if base and name != "default"
    }
    setup = {"batch": 8, "steps": args.steps, "untimed_steps": UNTIMED, "threads": args.threads}
    finish(Path(args.out), {"speedup_vs_default": speedups, "settings": results, "setup": setup},
           load_before, busy_before)  # fmt: skip


if __name__ == "__main__":
    main()
