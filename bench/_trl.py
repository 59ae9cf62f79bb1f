"""TRL's SFTTrainer for bench_train.py: over delia's examples in delia's order, steppable from outside."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from delia.core.config import RunConfig
from delia.core.example import Example
from delia.core.models import cpu_supports_bf16
from delia.train import load_for_training

# TRL as a user who wants speed would run it on a CPU: no gradient checkpointing (a 135M model fits), no
# padding (padding-free batches: transformers' SDPA path masks packed rows by their position ids), bf16 only
# where the CPU has bf16 matmuls (elsewhere it is emulated and ~40x slower than fp32).
TRL_SETTINGS: dict[str, dict[str, Any]] = {
    # Without bf16 matmuls TRL's default bf16 autocast is emulated (one step takes minutes): fp32 there.
    "defaults": {} if cpu_supports_bf16() else {"bf16": False},
    # max_length None: TRL enforces no truncation with padding-free rows; no example here reaches 1024 tokens.
    "fastest": {
        "gradient_checkpointing": False,
        "padding_free": True,
        "bf16": cpu_supports_bf16(),
        "max_length": None,
    },
}


def trl_side(
    config: RunConfig,
    examples: list[Example],
    order: list[int],
    out: Path,
    on_step: Any,
    overrides: dict[str, Any],
) -> tuple[Any, list[tuple[int, int]], dict[str, Any]]:
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
        seed=config.train.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **({"max_length": config.train.max_length} | overrides),
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


class TrlRunner:
    """One TRL trainer in its own thread, paused after every `segment` steps until `resume()`: its train()
    loop cannot be stepped from outside, and only one trainer may hold the cores at a time."""

    def __init__(self, name: str, config: RunConfig, examples: list[Example], order: list[int], out: Path,
                 segment: int, batch: int) -> None:  # fmt: skip
        self.name, self.segment, self.batch = name, segment, batch
        self.records: list[dict[str, Any]] = []
        self._go, self._paused = threading.Event(), threading.Event()
        self.finished = False
        self._last = 0.0
        self.trainer, self.counts, self.settings = trl_side(
            config, examples, order, out, self._after_step, TRL_SETTINGS[name]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.wait()
        self._go.clear()
        self._last = time.perf_counter()
        try:
            self.trainer.train()
        finally:
            self.finished = True
            self._paused.set()

    def _after_step(self, step: int) -> None:
        rows = self.counts[(step - 1) * self.batch : step * self.batch]
        self.records.append(
            {
                "step": step,
                "tokens": sum(n for n, _ in rows),
                "label_tokens": sum(m for _, m in rows),
                "seconds": time.perf_counter() - self._last,
                "loss": None,
            }
        )
        if step % self.segment == 0:
            self._paused.set()
            self._go.wait()
            self._go.clear()
        self._last = time.perf_counter()

    def resume(self) -> None:
        """Let the trainer run its next segment (or to its end) and wait for it to pause."""
        if self.finished:
            return
        self._paused.clear()
        self._go.set()
        self._paused.wait()

    def close(self) -> None:
        while not self.finished:
            self.resume()
        self._thread.join()
        losses = [row["loss"] for row in self.trainer.state.log_history if "loss" in row]
        for record, loss in zip(self.records, losses, strict=False):
            record["loss"] = loss


def _masks(data: Any) -> list[list[int] | None]:
    name = "completion_mask" if "completion_mask" in data.column_names else None
    return list(data[name]) if name else [None] * len(data)
