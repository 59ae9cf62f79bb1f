"""delia's trainer vs TRL's SFTTrainer: same examples, model, LoRA, batch, order and seed, alternating.

Data: the 100 DELIA `<sep>` task examples plus Alpaca records (seeded sample) up to --examples, shuffled.
Every trainer starts from the same SmolLM2 with `<sep>` added (same init, not trained: TRL 1.16's fused
LM head cannot take PEFT's trainable-token wrapper of a tied head), LoRA rank 16 on all linear layers,
batch 8, lr 2e-4, linear schedule, one epoch (or --max-steps), and they see the same 8 examples at every step
(TRL's sampler is made sequential over delia's plan order). TRL runs twice (--trl): with its SFTConfig
defaults (bf16 autocast, gradient checkpointing, padding to the longest, its fused label-only LM head) and at
its fastest correct CPU settings (TRL_SETTINGS: no checkpointing, padding-free batches, bf16 only with
bf16 matmuls).

They alternate in one process: delia trains --segment steps, then each TRL trainer (its own `train()` loop
in a thread, paused by a callback) trains --segment steps, and so on. The first --warmup steps of each are
not timed.
A TRL step's time runs from its resume or previous step to the end of this one (data loading, logging
included), delia's from tokenising the step's examples to the optimizer step. Throughput counts real tokens
only (padding excluded). The final loss of each trained model is measured by one evaluator (mean per-token
loss over the same examples, no dropout). Writes bench/results/train.json with the goals of issue 17.

    .venv/bin/python bench/bench_train.py [--examples 256] [--batch 8] [--segment 2] [--max-steps N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, busy_cores_now, finish, load_average, matmul_peak
from _trl import TRL_SETTINGS, TrlRunner

from delia.core.config import RunConfig
from delia.core.example import Example
from delia.core.models import cpu_supports_bf16
from delia.data import read_examples
from delia.generation.threads import free_cores
from delia.train import load_for_training
from delia.train.attention import packed_attention_for
from delia.train.collate import encode_examples, pack
from delia.train.loop import Totals, Trainer
from delia.train.loss import LabelLoss

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TASK = DATA / "delia-reproduce" / "train_dataset.jsonl"
ALPACA = DATA / "alpaca" / "alpaca_data.json.gz"
RESULT = RESULTS / "train.json"


def mixed_examples(n: int, seed: int) -> list[Example]:
    """The task's examples (up to half of n) and seeded Alpaca records (source "diverse"), shuffled."""
    task = read_examples(TASK, source="task")[: n // 2]
    records = [r for r in json.loads(gzip.decompress(ALPACA.read_bytes())) if str(r["output"]).strip()]
    rng = random.Random(seed)
    diverse = []
    for record in rng.sample(records, n - len(task)):
        user = record["instruction"] + (f"\n\n{record['input']}" if str(record["input"]).strip() else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
        diverse.append(Example(messages=messages, source="diverse"))
    examples = task + diverse
    rng.shuffle(examples)
    return examples


def run_config(
    batch: int, max_steps: int | None, seed: int, compile_layers: bool = False, threads: int | None = None
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "seed": seed,
            "lora": {"r": 16, "alpha": 32, "target_modules": ["all-linear"]},  # dropout: the default
            # TRL 1.16's fused LM head reads `lm_head.bias`, which PEFT's trainable-token wrapper of a tied
            # head lacks, so TRL cannot train the <sep> row: neither side does, to keep the same parameters.
            "tokens": {"add": ["<sep>"], "init": "random", "trainable": False},
            "train": {
                "lr": 2e-4,
                "batch_size": batch,
                "micro_batch_size": batch,
                "epochs": 1,
                "max_steps": max_steps,
                "max_length": 1024,
                "seed": seed,
                "compile": compile_layers,
                "threads": threads,
            },
        }
    )


class MemoryWatch:
    """Peak RSS per phase ("delia" / "trl"), sampled every 20 ms by a daemon thread."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.owner = "setup"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            rss = self.process.memory_info().rss
            self.peaks[self.owner] = max(self.peaks.get(self.owner, 0), rss)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {owner: round(peak / 2**20, 1) for owner, peak in self.peaks.items()}


class DeliaSide:
    def __init__(self, config: RunConfig, examples: list[Example], out: Path) -> None:
        model, tokenizer, token_ids = load_for_training(config)
        self.token_ids = token_ids
        self.trainer = Trainer(config, model, tokenizer, token_ids, examples, out, None, None)
        self.totals = Totals()
        self._steps = self.trainer.steps(0, self.totals)
        self.records: list[dict[str, Any]] = []

    @property
    def order(self) -> list[int]:
        return [i for step in self.trainer.plan.steps for i in step]

    def remaining(self) -> bool:
        return len(self.records) < len(self.trainer.plan)

    def close(self) -> None:
        self._steps.close()  # leaves the training contexts (packed attention, bf16 weight copies)

    def train(self, n_steps: int) -> None:
        for _ in range(n_steps):
            step = next(self._steps, None) if self.remaining() else None
            if step is None:
                return
            number, report, _ = step
            self.records.append(
                {
                    "step": number,
                    "tokens": report.tokens,
                    "label_tokens": report.label_tokens,
                    "seconds": report.seconds,
                    "loss": report.loss,
                }
            )


@torch.no_grad()
def mean_loss(model: Any, tokenizer: Any, examples: list[Example], micro: int = 8) -> float:
    """Mean per-token loss over the examples' answers, eval mode, bf16 autocast: one evaluator for both."""
    from delia.core.models import autocast

    was_training = model.training
    model.eval()
    loss_module = LabelLoss(model)
    items = encode_examples(examples, tokenizer, 1024)
    total, count = 0.0, 0
    with packed_attention_for(loss_module.model.get_base_model()):
        for start in range(0, len(items), micro):
            batch = pack(items[start : start + micro], {e.source: 0 for e in examples})
            with autocast("cpu", "auto"):
                total += float(loss_module(batch).loss_sum)
            count += batch.n_labels
    model.train(was_training)
    return total / count


def summarise(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    timed = [r for r in records if r["step"] > warmup]
    tokens, seconds = sum(r["tokens"] for r in timed), sum(r["seconds"] for r in timed)
    return {
        "steps": len(records),
        "timed_steps": len(timed),
        "real_tokens_timed": tokens,
        "seconds_timed": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "step_seconds": [round(r["seconds"], 2) for r in records],
        "train_losses": [None if r["loss"] is None else round(r["loss"], 4) for r in records],
    }


def useful_gflops(
    records: list[dict[str, Any]], warmup: int, n_params: int, hidden: int, vocab: int
) -> float:
    """Work any trainer must do per step, whatever its tricks: LoRA training with a frozen base costs about
    4 FLOPs per weight per real token (forward + input gradients) plus the head at label positions."""
    timed = [r for r in records if r["step"] > warmup]
    flops = sum(4 * n_params * r["tokens"] + 4 * hidden * vocab * r["label_tokens"] for r in timed)
    seconds = sum(r["seconds"] for r in timed)
    return flops / seconds / 1e9 if seconds else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--segment", type=int, default=2, help="steps each trainer runs before handing over")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each trainer left untimed")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every run (default: one epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-examples", type=int, default=None, help="final loss on the first N (default: all)"
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--compile", action="store_true", help="delia with train.compile (TRL unchanged)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for all (default: free cores)"
    )
    parser.add_argument(
        "--trl", default="fastest,defaults", help=f"TRL settings among {sorted(TRL_SETTINGS)}"
    )
    args = parser.parse_args()
    args.threads = args.threads or free_cores()  # one setting for all: threads are per process
    torch.set_num_threads(args.threads)
    load_start, busy_start = load_average(), busy_cores_now()  # before this bench's own threads count
    started = time.perf_counter()
    bf16 = cpu_supports_bf16()
    peaks = {
        "bf16": round(matmul_peak(torch.bfloat16), 1) if bf16 else None,
        "fp32": round(matmul_peak(torch.float32), 1),
    }
    examples = mixed_examples(args.examples, args.seed)
    config = run_config(args.batch, args.max_steps, args.seed, args.compile, args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    watch = MemoryWatch()
    delia = DeliaSide(config, examples, scratch / "delia")
    runners = {
        name: TrlRunner(name, config, examples, delia.order, scratch / name, args.segment, args.batch)
        for name in args.trl.split(",")
    }
    while not all(r.finished for r in runners.values()) or delia.remaining():
        watch.owner = "delia"
        delia.train(args.segment)
        for name, runner in runners.items():
            watch.owner = f"trl_{name}"
            runner.resume()
    for runner in runners.values():
        runner.close()
    delia.close()
    memory = watch.stop()

    tokenizer = delia.trainer.tokenizer
    scored = examples[: args.eval_examples]
    base = delia.trainer.model.get_base_model()
    hidden, vocab = base.config.hidden_size, base.get_output_embeddings().weight.shape[0]
    n_params = sum(p.numel() for n, p in base.named_parameters() if "embed" not in n and "lora" not in n)
    sides = {"delia": (delia.trainer.model, delia.records)} | {
        f"trl_{name}": (r.trainer.model, r.records) for name, r in runners.items()
    }
    report: dict[str, Any] = {}
    for name, (model, records) in sides.items():
        gflops = useful_gflops(records, args.warmup, n_params, hidden, vocab)
        report[name] = {
            **summarise(records, args.warmup),
            "final_loss": round(mean_loss(model, tokenizer, scored), 5),
            "peak_rss_mib": memory.get(name),
            "useful_gflop_per_s": round(gflops, 1),
            "fraction_of_bf16_peak": round(gflops / peaks["bf16"], 4) if peaks["bf16"] else None,
            "fraction_of_fp32_peak": round(gflops / peaks["fp32"], 4),
        }
    for name, runner in runners.items():
        report[f"trl_{name}"]["settings"] = runner.settings
    report["delia"]["settings"] = {
        "packing": config.train.packing,
        "autocast": config.train.autocast,
        "compile": config.train.compile,
        "gradient_checkpointing": config.train.gradient_checkpointing,
    }
    fastest = "trl_fastest" if "trl_fastest" in report else next(k for k in report if k != "delia")
    result: dict[str, Any] = {
        "bench": "train",
        "fraction_of_bf16_peak": report["delia"]["fraction_of_bf16_peak"],
        "fraction_of_fp32_peak": report["delia"]["fraction_of_fp32_peak"],
        **{
            f"ratio_vs_{name}": round(report["delia"]["tokens_per_s"] / report[name]["tokens_per_s"], 2)
            for name in report
            if name != "delia"
        },
        "loss_rel_diff": round(abs(report["delia"]["final_loss"] / report[fastest]["final_loss"] - 1), 4),
        # In-process: the TRL models and their optimiser state stay resident beside delia's, so this is an
        # upper bound on delia's own peak; bench_memory.py measures one trainer per process.
        "peak_rss_mib": report["delia"]["peak_rss_mib"],
        "matmul_peak_gflop_per_s": peaks,
        "setup": {
            "examples": len(examples),
            "task_examples": sum(e.source == "task" for e in examples),
            "alpaca_examples": sum(e.source == "diverse" for e in examples),
            "batch": args.batch,
            "lora": config.lora.model_dump()
            | {"target_modules": "all-linear", "trainable_tokens": ["<sep>"]},
            "lr": config.train.lr,
            "max_steps": args.max_steps,
            "segment": args.segment,
            "untimed_warmup_steps": args.warmup,
            "seed": args.seed,
            "threads": args.threads,
            "final_loss_examples": len(scored),
            "loss_rel_diff_against": fastest,
            "useful_flops": "4 x non-embedding params x real tokens + 4 x hidden x vocab x label tokens",
        },
        **report,
        "peak_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    bf16_goal = "fraction_of_bf16_peak >= 0.30" if bf16 else "fraction_of_fp32_peak >= 0.50"
    result["goals"] = {
        bf16_goal: (result["fraction_of_bf16_peak"] or 0) >= 0.30
        if bf16
        else result["fraction_of_fp32_peak"] >= 0.50,
        "ratio_vs_trl_fastest >= 3": result.get("ratio_vs_trl_fastest", 0) >= 3,
        "loss_rel_diff <= 0.02": result["loss_rel_diff"] <= 0.02,
        "peak_rss_mib <= 2560": (result["peak_rss_mib"] or 0) <= 2560,
    }
    finish(args.out, result, load_start, busy_start)


if __name__ == "__main__":
    main()
