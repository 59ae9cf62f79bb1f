"""delia's trainer vs TRL's SFTTrainer: same examples, model, LoRA, batch, order and seed, alternating.

Data: the 100 DELIA `<sep>` task examples plus Alpaca records (seeded sample) up to --examples, shuffled.
Both trainers start from the same SmolLM2 with `<sep>` added (same init, not trained: TRL 1.16's fused
LM head cannot take PEFT's trainable-token wrapper of a tied head), LoRA rank 16 on all linear layers,
batch 8, lr 2e-4, linear schedule, one epoch, and they see the same 8 examples at every step (TRL's
sampler is made sequential over delia's plan order). TRL runs with its SFTConfig defaults otherwise
(bf16 autocast, gradient checkpointing, padding to the longest, its fused label-only LM head).

They alternate in one process: delia trains --segment steps, then TRL (its own `train()` loop, paused by a
callback) trains --segment steps, and so on. The first --warmup steps of each are not timed. TRL's step time
runs from the end of its previous step to the end of this one (data loading, logging included), delia's
from tokenising the step's examples to the optimizer step. Throughput counts real tokens only (padding
excluded). The final loss of each trained model is measured by one evaluator (mean per-token loss over the
same examples, bf16 autocast, no dropout). Writes bench/results/train.json.

    .venv/bin/python bench/bench_train.py [--examples 256] [--batch 8] [--segment 2] [--max-steps N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from _common import busy_cores_now, others_busy

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
RESULT = ROOT / "bench" / "results" / "train.json"


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
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["all-linear"]},
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

    def close(self) -> None:
        self._steps.close()  # leaves the training contexts (packed attention, bf16 weight copies)

    def train(self, n_steps: int) -> None:
        for _ in range(n_steps):
            step = next(self._steps, None)
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


def trl_side(
    config: RunConfig, examples: list[Example], order: list[int], out: Path, on_step: Any
) -> tuple[Any, list[int], dict[str, Any]]:
    """A TRL SFTTrainer over the same examples in delia's order; `on_step` runs after each of its steps."""
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, _ = load_for_training(config)
    rows = [{"prompt": examples[i].prompt_messages, "completion": examples[i].messages[-1:]} for i in order]
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=config.train.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        max_steps=config.train.max_steps or -1,
        learning_rate=config.train.lr,
        lr_scheduler_type="linear",
        warmup_steps=config.train.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        max_length=config.train.max_length,
        seed=config.train.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    class OrderedSFT(SFTTrainer):
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return SequentialSampler(self.train_dataset)

    class StepHook(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_step(state.global_step)

    trainer = OrderedSFT(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[StepHook()],
    )
    data = trainer.train_dataset
    if len(data) != len(rows):
        raise SystemExit(f"TRL kept {len(data)} of {len(rows)} examples: the step alignment would break")
    counts = [
        (len(ids), sum(mask) if mask else 0)
        for ids, mask in zip(data["input_ids"], _masks(data), strict=True)
    ]
    settings = {
        "gradient_checkpointing": args.gradient_checkpointing,
        "bf16": args.bf16,
        "padding_free": args.padding_free,
        "packing": args.packing,
        "group_by_length": getattr(args, "train_sampling_strategy", None) == "group_by_length",
        "max_grad_norm": args.max_grad_norm,
        "optim": str(args.optim),
    }
    return trainer, counts, settings


def _masks(data: Any) -> list[list[int] | None]:
    name = "completion_mask" if "completion_mask" in data.column_names else None
    return list(data[name]) if name else [None] * len(data)


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


def matmul_peak(dtype: torch.dtype, size: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of the best of `repeats` large square GEMMs."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def machine() -> dict[str, Any]:
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_matmul": cpu_supports_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


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
    parser.add_argument("--max-steps", type=int, default=None, help="cap both runs (default: one epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-examples", type=int, default=None, help="final loss on the first N (default: all)"
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--compile", action="store_true", help="delia with train.compile (TRL unchanged)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for both (default: free cores)"
    )
    args = parser.parse_args()
    args.threads = args.threads or free_cores()  # one setting for both: threads are per process
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    busy_start = busy_cores_now()  # the load average lags, and at the end it counts this bench's own threads
    started = time.perf_counter()
    peaks = {"bf16": round(matmul_peak(torch.bfloat16), 1), "fp32": round(matmul_peak(torch.float32), 1)}
    examples = mixed_examples(args.examples, args.seed)
    config = run_config(args.batch, args.max_steps, args.seed, args.compile, args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    watch = MemoryWatch()
    delia = DeliaSide(config, examples, scratch / "delia")
    trl_records: list[dict[str, Any]] = []
    clock = {"last": 0.0}

    def after_trl_step(step: int) -> None:
        now = time.perf_counter()
        rows = counts[(step - 1) * args.batch : step * args.batch]
        tokens, labels = sum(n for n, _ in rows), sum(m for _, m in rows)
        trl_records.append(
            {
                "step": step,
                "tokens": tokens,
                "label_tokens": labels,
                "seconds": now - clock["last"],
                "loss": None,
            }
        )
        if step % args.segment == 0:
            watch.owner = "delia"
            delia.train(args.segment)
        watch.owner = "trl"
        clock["last"] = time.perf_counter()

    trl, counts, trl_settings = trl_side(config, examples, delia.order, scratch / "trl", after_trl_step)
    watch.owner = "delia"
    delia.train(args.segment)
    watch.owner = "trl"
    clock["last"] = time.perf_counter()
    trl.train()
    watch.owner = "delia"
    delia.train(len(delia.trainer.plan))  # whatever is left if TRL ran fewer steps
    delia.close()
    memory = watch.stop()
    losses = [row["loss"] for row in trl.state.log_history if "loss" in row]
    for record, loss in zip(trl_records, losses, strict=False):
        record["loss"] = loss

    tokenizer = delia.trainer.tokenizer
    scored = examples[: args.eval_examples]
    final = {
        "delia": mean_loss(delia.trainer.model, tokenizer, scored),
        "trl": mean_loss(trl.model, tokenizer, scored),
    }
    base = delia.trainer.model.get_base_model()
    hidden, vocab = base.config.hidden_size, base.get_output_embeddings().weight.shape[0]
    n_params = sum(p.numel() for n, p in base.named_parameters() if "embed" not in n and "lora" not in n)
    report: dict[str, Any] = {}
    for name, records in (("delia", delia.records), ("trl", trl_records)):
        gflops = useful_gflops(records, args.warmup, n_params, hidden, vocab)
        report[name] = {
            **summarise(records, args.warmup),
            "final_loss": round(final[name], 5),
            "peak_rss_mib": memory.get(name),
            "useful_gflop_per_s": round(gflops, 1),
            "fraction_of_bf16_peak": round(gflops / peaks["bf16"], 4),
            "fraction_of_fp32_peak": round(gflops / peaks["fp32"], 4),
        }
    report["trl"]["settings"] = trl_settings
    report["delia"]["settings"] = {
        "packing": config.train.packing,
        "autocast": config.train.autocast,
        "compile": config.train.compile,
    }
    load_end = os.getloadavg()
    cores = os.cpu_count() or 1
    shared = others_busy(busy_start, list(load_start))
    ratio = report["delia"]["tokens_per_s"] / report["trl"]["tokens_per_s"]
    result = {
        "bench": "train",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
        "busy_cores_start": busy_start,
        "machine_shared": shared,
        "note": (
            f"other processes kept cores busy as the bench started ({busy_start} of {cores}): absolute "
            "figures are low; the ratio comes from alternating segments under the same load"
            if shared
            else "machine otherwise idle"
        ),
        "setup": {
            "examples": len(examples),
            "task_examples": sum(e.source == "task" for e in examples),
            "alpaca_examples": sum(e.source == "diverse" for e in examples),
            "batch": args.batch,
            "lora": config.lora.model_dump()
            | {"target_modules": "all-linear", "trainable_tokens": ["<sep>"]},
            "lr": config.train.lr,
            "segment": args.segment,
            "untimed_warmup_steps": args.warmup,
            "seed": args.seed,
            "threads": args.threads,
            "final_loss_examples": len(scored),
            "useful_flops": "4 x non-embedding params x real tokens + 4 x hidden x vocab x label tokens",
        },
        "matmul_peak_gflop_per_s": peaks,
        "delia": report["delia"],
        "trl": report["trl"],
        "ratio": round(ratio, 2),
        "loss_rel_diff": round(abs(final["delia"] - final["trl"]) / final["trl"], 4),
        "peak_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio", "loss_rel_diff", "machine_shared")}, indent=2))
    print(
        f"delia {report['delia']['tokens_per_s']} tok/s, TRL {report['trl']['tokens_per_s']} tok/s "
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
