"""LoRA SFT: the optimizer-step loop, with gradient accumulation, checkpoints, logs and hooks.

One optimizer step = `effective_batch_size` examples, tokenised when the step starts (memory stays flat
however large the mixed data), split into micro-batches (packed rows by default). Each micro-batch's summed
label loss is divided by the label-token count of the whole step, so the accumulated gradient is exactly
the gradient of the step's mean per-token loss, however the tokens fall into micro-batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from delia.core.config import RunConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.models import autocast
from delia.generation.threads import ThreadPolicy
from delia.train import checkpoint
from delia.train.attention import packed_attention_for
from delia.train.batching import StepPlan, effective_batch_size, plan_steps, shard, split_micro
from delia.train.collate import Encoded, EncodeStats, MicroBatch, collate, encode_examples
from delia.train.compile import checkpointed_layers, compiled_layers
from delia.train.hooks import TrainerHooks
from delia.train.logs import SourceLosses, TrainLog
from delia.train.lora import adapter_parameters, trainable_parameters, wrap_lora
from delia.train.loss import LabelLoss, LossOutput
from delia.train.precision import autocast_is_bf16, bf16_frozen_weights
from delia.train.runtime import Runtime
from delia.train.sharding import full_tensors, load_optimizer_state, optimizer_state

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TrainResult:
    steps: int
    adapter_dir: Path
    final_loss: float | None
    seconds: float
    tokens_per_second: float
    n_examples: int
    tokens: int = 0  # real (non-padding) input tokens processed in this session
    label_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    resumed_from: int = 0


@dataclass
class Trained:
    """A finished run: the result plus the in-memory PEFT model and tokenizer."""

    result: TrainResult
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass
class StepReport:
    loss: float | None
    sources: SourceLosses
    tokens: int
    label_tokens: int
    seconds: float


@dataclass
class Totals:
    tokens: int = 0
    label_tokens: int = 0
    seconds: float = 0.0
    last_loss: float | None = None
    stats: EncodeStats = field(default_factory=EncodeStats)


def plan_fingerprint(examples: list[Example], plan: StepPlan, config: RunConfig) -> str:
    """Identifies data + order: resuming with anything else would not continue the same run."""
    blob = json.dumps(
        [[e.id for e in examples], plan.steps, config.train.micro_batch_size, config.train.max_length]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup: int, total: int) -> Any:
    from transformers import get_scheduler

    if name == "constant" and warmup > 0:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


# The mixed file's order is the schedule itself (DMT's stages, Algorithm 1's interleaving): keep it.
ORDERED_SCHEDULES = ("two_stage", "interleave")


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        token_ids: list[int],
        examples: list[Example],
        out_dir: Path,
        eval_examples: list[Example] | None,
        hooks: TrainerHooks | None,
    ) -> None:
        self.config, self.cfg = config, config.train
        self.tokenizer, self.examples, self.out_dir = tokenizer, examples, Path(out_dir)
        self.hooks = hooks or TrainerHooks()
        self.runtime = Runtime.create(config.model.device)
        if self.runtime.sharded and type(self.hooks) is not TrainerHooks:
            # Gradient surgery and extra losses see whole gradients and weights; under FSDP they hold shards.
            raise DeliaError(f"method {config.method!r} changes training itself and runs under DDP, not FSDP")
        self.threads = ThreadPolicy(
            self.cfg.threads, self.runtime.device, int(os.environ.get("LOCAL_WORLD_SIZE", self.runtime.world))
        )
        torch.manual_seed(self.cfg.seed)  # LoRA's initial weights and dropout masks
        self.model = wrap_lora(model.to(self.runtime.device), config.lora, token_ids)
        if not config.tokens.trainable:
            for name, param in self.model.named_parameters():
                if "trainable_tokens_delta" in name:
                    param.requires_grad_(False)  # still saved with the adapter: the rows' initial values
        self.model.train()
        self.hooks.setup(self.model, tokenizer, examples)
        self.plan = plan_steps(
            len(examples),
            effective_batch_size(self.cfg, len(examples)),
            self.cfg.epochs,
            self.cfg.max_steps,
            self.cfg.seed,
            shuffle=config.mix.schedule not in ORDERED_SCHEDULES,
        )
        bf16 = autocast_is_bf16(self.runtime.device, self.cfg.autocast)
        self.loss_module = self.runtime.prepare(LabelLoss(self.model), bf16)  # before the optimizer: FSDP
        params = [p for _, p in trainable_parameters(self.model)]
        # fused: one kernel per parameter instead of ~10 elementwise passes (matters for 400+ LoRA tensors)
        fused = torch.device(self.runtime.device).type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(
            params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused or None
        )
        # Floor, not ceil: with warmup 1 the first optimizer step would run at lr 0 and a short run waste it.
        warmup = int(self.cfg.warmup_ratio * len(self.plan))
        self.scheduler = make_scheduler(self.optimizer, self.cfg.scheduler, warmup, len(self.plan))
        self.sources = sorted({e.source for e in examples} | {"task"})
        self.source_index = {name: i for i, name in enumerate(self.sources)}
        self.fingerprint = plan_fingerprint(examples, self.plan, config)
        self.eval_batches = self._eval_batches(eval_examples or [])

    # -- data ------------------------------------------------------------------------------------

    def _micro_batches(self, encoded: list[Encoded], packing: bool) -> list[MicroBatch]:
        groups = split_micro(
            [len(e.input_ids) for e in encoded], self.cfg.micro_batch_size, self.cfg.group_by_length
        )
        pad_id = self.tokenizer.pad_token_id
        return [collate([encoded[i] for i in group], self.source_index, pad_id, packing) for group in groups]

    def _eval_batches(self, eval_examples: list[Example]) -> list[list[Encoded]]:
        chosen = [e for e in eval_examples[: self.cfg.eval_examples]]
        encoded = encode_examples(chosen, self.tokenizer, self.cfg.max_length) if chosen else []
        size = self.cfg.micro_batch_size
        return [encoded[i : i + size] for i in range(0, len(encoded), size)]

    # -- steps -----------------------------------------------------------------------------------

    def _forward(self, batch: MicroBatch) -> LossOutput:
        with autocast(self.runtime.device, self.cfg.autocast):
            return self.loss_module(batch)

    def _step(self, index: int, packing: bool, totals: Totals) -> StepReport:
        start = time.perf_counter()
        self.threads.update()
        chosen = [self.examples[i] for i in self.plan.steps[index]]
        encoded = encode_examples(chosen, self.tokenizer, self.cfg.max_length, totals.stats)
        step_labels = sum(e.n_labels for e in encoded)
        micro = self._micro_batches(encoded, packing) if encoded else []
        mine = shard(list(range(len(micro))), self.runtime.rank, self.runtime.world) if micro else []
        sums = torch.zeros(len(self.sources), dtype=torch.float64)
        counts = torch.zeros(len(self.sources), dtype=torch.float64)
        for position, (micro_index, real) in enumerate(mine):
            batch = micro[micro_index].to(self.runtime.device)
            with self.runtime.no_sync(self.loss_module, skip=position < len(mine) - 1):
                outputs = self._forward(batch)
                loss = outputs.loss_sum
                extra = self.hooks.extra_loss(self.model, self._hook_batch(batch, chosen), outputs)
                if extra is not None:
                    loss = loss + extra * batch.n_labels
                # DDP averages gradients over ranks; scale back up so the sum over ranks is the step's mean.
                scale = self.runtime.world / step_labels if real else 0.0
                (loss * scale).backward()
            if real:
                source_ids = batch.sources[outputs.label_mask].cpu()
                sums += torch.bincount(source_ids, outputs.token_losses.cpu().double(), len(self.sources))
                counts += torch.bincount(source_ids, minlength=len(self.sources)).double()
        if step_labels:
            self.hooks.before_optimizer_step(self.model, self.optimizer)
            if self.cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    self.optimizer.param_groups[0]["params"], self.cfg.max_grad_norm
                )
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        reduced = self.runtime.sum([*sums.tolist(), *counts.tolist()])
        sources = SourceLosses(self.sources)
        sources.add_totals(reduced[: len(self.sources)], [int(c) for c in reduced[len(self.sources) :]])
        loss = sum(sources.sums) / step_labels if step_labels else None
        tokens = sum(len(e.input_ids) for e in encoded)
        return StepReport(loss, sources, tokens, step_labels, time.perf_counter() - start)

    def _hook_batch(self, batch: MicroBatch, chosen: list[Example]) -> dict[str, Any]:
        by_id = {e.id: e for e in chosen}
        return {**vars(batch), "examples": [by_id[i] for i in batch.example_ids]}

    @torch.no_grad()
    def _eval_loss(self, packing: bool) -> float | None:
        if not self.eval_batches:
            return None
        self.model.eval()
        total, count = 0.0, 0
        for group in self.eval_batches:
            batch = collate(group, self.source_index, self.tokenizer.pad_token_id, packing).to(
                self.runtime.device
            )
            outputs = self._forward(batch)
            total += float(outputs.loss_sum)
            count += batch.n_labels
        self.model.train()
        return total / count if count else None

    # -- run -------------------------------------------------------------------------------------

    def _resume(self) -> tuple[int, float]:
        latest = checkpoint.latest_checkpoint(self.out_dir / "checkpoints")
        if latest is None:
            return 0, 0.0
        saved = checkpoint.read_checkpoint(latest, self.scheduler)
        if saved.state.get("fingerprint") != self.fingerprint:
            raise DeliaError(
                f"{latest} was made with other data or train settings; "
                f"remove {latest.parent} or drop --resume"
            )
        saved.restore_weights(self.model)
        load_optimizer_state(self.loss_module, self.optimizer, saved.optimizer_state, self.runtime.sharded)
        return int(saved.state["step"]), float(saved.state.get("elapsed", 0.0))

    def trainable_weights(self) -> dict[str, torch.Tensor]:
        """The adapter's parameters, whole and on the CPU; every rank must call it (FSDP gathers)."""
        return full_tensors(adapter_parameters(self.model))

    def _save_checkpoint(self, step: int, elapsed: float) -> None:
        self.runtime.barrier()
        weights = self.trainable_weights()
        optimizer = optimizer_state(self.loss_module, self.optimizer, self.runtime.sharded)
        if self.runtime.is_main:
            state = {"fingerprint": self.fingerprint, "elapsed": elapsed, "steps_total": len(self.plan)}
            checkpoint.save_checkpoint(
                self.out_dir / "checkpoints", step, self.model, weights, optimizer, self.scheduler, state
            )
        self.runtime.barrier()

    def _row(self, step: int, report: StepReport, elapsed: float) -> dict[str, Any]:
        return {
            "step": step,
            "loss": None if report.loss is None else round(report.loss, 6),
            **report.sources.columns(),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": report.tokens,
            "label_tokens": report.label_tokens,
            "tokens_per_s": round(report.tokens / report.seconds, 1) if report.seconds else None,
            "elapsed": round(elapsed, 3),
            "threads": torch.get_num_threads(),
            "epoch": round(step * self.plan.effective_batch / len(self.examples), 4),
        }

    def steps(self, start_step: int, totals: Totals) -> Iterator[tuple[int, StepReport, bool]]:
        """Train step after step, yielding (step number, report, packing); the caller decides what
        happens between steps (logging, checkpoints, or a benchmark alternating with another trainer)."""
        base = self.model.get_base_model()
        # Under FSDP the mixed-precision policy casts the weights (runtime.prepare).
        bf16 = autocast_is_bf16(self.runtime.device, self.cfg.autocast) and not self.runtime.sharded
        with (
            packed_attention_for(base) as packed_ok,
            bf16_frozen_weights(base, bf16),
            compiled_layers(base, self.cfg.compile),
            checkpointed_layers(base, self.cfg.gradient_checkpointing),
        ):
            packing = self.cfg.packing and packed_ok
            for index in range(start_step, len(self.plan)):
                report = self._step(index, packing, totals)
                totals.tokens += report.tokens
                totals.label_tokens += report.label_tokens
                totals.seconds += report.seconds
                totals.last_loss = report.loss if report.loss is not None else totals.last_loss
                yield index + 1, report, packing

    def run(self, resume: bool) -> TrainResult:
        start_step, elapsed = self._resume() if resume else (0, 0.0)
        log = TrainLog(self.out_dir, start_step, self.cfg.tensorboard, enabled=self.runtime.is_main)
        totals = Totals()
        bar = tqdm(
            total=len(self.plan),
            initial=start_step,
            desc="train",
            unit="step",
            disable=not self.runtime.is_main,
        )
        every = self.cfg.checkpoint_every
        try:
            for step, report, packing in self.steps(start_step, totals):
                elapsed += report.seconds
                row = self._row(step, report, elapsed)
                if self.cfg.eval_every and step % self.cfg.eval_every == 0:
                    row["eval_loss"] = self._eval_loss(packing)
                log.write(row)
                bar.set_postfix(loss=row["loss"], tok_s=round(totals.tokens / totals.seconds))
                bar.update(1)
                if (every and step % every == 0) or step == len(self.plan):
                    self._save_checkpoint(step, elapsed)
        finally:
            bar.close()
            log.close()
        return TrainResult(
            steps=len(self.plan),
            adapter_dir=self.out_dir / "adapter",
            final_loss=totals.last_loss if totals.last_loss is not None else _last_logged_loss(log.path),
            seconds=round(totals.seconds, 3),
            tokens_per_second=round(totals.tokens / totals.seconds, 1) if totals.seconds else 0.0,
            n_examples=len(self.examples),
            tokens=totals.tokens,
            label_tokens=totals.label_tokens,
            truncated=totals.stats.truncated,
            dropped=totals.stats.dropped,
            resumed_from=start_step,
        )


def _last_logged_loss(path: Path) -> float | None:
    """A resumed run that had nothing left to do reports the loss its log ended with."""
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [row["loss"] for row in rows if row.get("loss") is not None]
    return losses[-1] if losses else None
