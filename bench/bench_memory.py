"""Peak RSS and speed of training the embedded 135M model at micro-batch 8 x up to 512 tokens, per setting.

Each setting trains 3 optimizer steps (batch 8, LoRA r16 on all linear layers, the 24 longest Alpaca answers
among the first 4,000 records, packed) in a fresh process, so `ru_maxrss` is that setting's own peak:
  default                 the trainer as configured by default
  checkpointing           train.gradient_checkpointing: true
  checkpointing+mmap1MB   the same with MALLOC_MMAP_THRESHOLD_=1048576 (glibc returns freed big blocks)
Writes bench/results/memory.json.

    .venv/bin/python bench/bench_memory.py [--settings default,checkpointing,checkpointing+mmap1MB]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ALPACA, RESULTS, busy_cores_now, finish, load_average

RESULT = RESULTS / "memory.json"
SETTINGS: dict[str, tuple[bool, dict[str, str]]] = {
    "default": (False, {}),
    "checkpointing": (True, {}),
    "checkpointing+mmap1MB": (True, {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
}


def train_once(checkpointing: bool) -> dict[str, Any]:
    """In the child process: 3 steps, then this process's peak RSS."""
    from delia.core.config import build_config
    from delia.core.example import Example
    from delia.train import fit, load_for_training

    records = json.loads(gzip.decompress(ALPACA.read_bytes()))[:4000]
    records = sorted(records, key=lambda r: -len(r["output"]))[:24]
    examples = [
        Example(
            messages=[
                {"role": "user", "content": f"{r['instruction']} {r['input']}".strip()},
                {"role": "assistant", "content": r["output"]},
            ],
            source="diverse",
        )
        for r in records
    ]
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    train = {"batch_size": 8, "micro_batch_size": 8, "max_length": 512, "max_steps": 3}
    config = build_config(
        {
            "tokens": {"add": []},
            "lora": {"target_modules": linear},
            "train": {**train, "gradient_checkpointing": checkpointing},
        }
    )
    model, tokenizer, token_ids = load_for_training(config)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        trained = fit(config, model, tokenizer, token_ids, examples, Path(out))
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "seconds": round(time.perf_counter() - start, 1),
        "tokens_per_second": round(trained.result.tokens_per_second, 1),
        "final_loss": trained.result.final_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args.child == "on")))
        return
    load_before, busy_before = load_average(), busy_cores_now()
    results = {}
    for name in args.settings.split(","):
        checkpointing, env = SETTINGS[name]
        child = [sys.executable, __file__, "--child", "on" if checkpointing else "off"]
        done = subprocess.run(child, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        results[name] = {**json.loads(done.stdout.strip().splitlines()[-1]), "env": env}
        print(name, results[name], flush=True)
    import torch  # noqa: F401 - so machine_info records torch's threads and CPU capability

    result = {
        "settings": results,
        "goal": "peak RSS <= 2560 MiB at micro-batch 8 x 512 tokens",
        "goal_met_by": [name for name, r in results.items() if r["peak_rss_mib"] <= 2560],
        "model": "smollm2-135m-instruct",
    }
    finish(Path(args.out), result, load_before, busy_before)


if __name__ == "__main__":
    main()
