"""TKI's trainer hooks: set up latent task adaptation and KR stage one, add the KR objective (with PCGrad)
to every micro-batch, save the artefact next to the task LoRA and load it back."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.tki import kr, pcgrad
from delia.methods.tki.artifacts import attach_saved_latents, is_tki_adapter, save_tki
from delia.methods.tki.encoder import BaseModelEncoder, default_cache_dir, make_encoder
from delia.methods.tki.lta import LatentAdapter, LatentSpec, find_targets
from delia.methods.tki.routing import UserTurnExtractor
from delia.train import TrainerHooks

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from delia.core.config import RunConfig


class TkiHooks(TrainerHooks):
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.options = config.options("tki")
        self.adapter: LatentAdapter | None = None
        self.reinstated: dict[str, torch.Tensor] = {}  # example id -> q (input span, hidden)
        self.stats: dict[str, Any] = {
            "kr_micro_batches": 0,
            "kr_examples": 0,
            "kr_reinstated_harder": 0,  # examples where max(...) picked CE(q_i)
            "kr_missing": 0,  # examples without a reinstated input (CE(q) taken as CE(x))
            "pcgrad_micro_batches": 0,
            "pcgrad_conflicts": 0,
        }
        self.stage_one: dict[str, float] | None = None

    # ------------------------------------------------------------------------------------------ setup

    def setup(self, model: Any, tokenizer: Any, examples: list[Example]) -> None:
        if self.options.lta:
            self.adapter = build_latents(model, tokenizer, examples, self.config)
        if self.options.kr:
            self._stage_one(model, tokenizer, examples)

    def _stage_one(self, model: Any, tokenizer: Any, examples: list[Example]) -> None:
        """Reinstated inputs for every training example at theta_0 (task LoRA off, latents bypassed),
        tokenised exactly as the trainer does, in padded micro-batches."""
        from delia.train.collate import encode_examples, pad

        unique = list({e.id: e for e in examples}.values())
        encoded = sorted(
            encode_examples(unique, tokenizer, self.config.train.max_length), key=lambda e: len(e.input_ids)
        )
        size = max(1, self.config.train.micro_batch_size)
        chunks = [encoded[i : i + size] for i in range(0, len(encoded), size)]
        sources = {e.source: 0 for e in encoded}
        device = next(model.parameters()).device
        totals = {"ce_before": 0.0, "ce_after": 0.0, "w2_after": 0.0}
        for chunk in tqdm(chunks, desc="TKI knowledge reinstatement", unit="batch"):
            batch = vars(pad(chunk, sources, tokenizer.pad_token_id).to(device))
            with self._theta_zero(model):
                queries, summary = kr.reinstate(
                    model, batch, self.options.kr_steps, self.options.kr_lr, self.options.kr_distance_weight
                )
            for example_id, q in zip(batch["example_ids"], queries, strict=True):
                self.reinstated[example_id] = q
            for name in totals:
                totals[name] += summary[name] * len(chunk)
        self.stage_one = {name: value / max(1, len(encoded)) for name, value in totals.items()}

    @contextlib.contextmanager
    def _theta_zero(self, model: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if hasattr(model, "disable_adapter"):
                stack.enter_context(model.disable_adapter())
            if self.adapter is not None:
                stack.enter_context(self.adapter.bypass())
            yield

    # ------------------------------------------------------------------------------------------ stage two

    def extra_loss(self, model: Any, batch: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """alpha * mean_i max(CE(q_i), CE(x_i)), in the trainer's units (a per-label-token mean, added to
        the micro-batch's mean label loss); with PCGrad, a surrogate with the same value whose gradient
        makes the step's gradient the PCGrad combination."""
        from delia.core.models import autocast

        if not self.options.kr:
            return None
        segments = kr.batch_segments(batch)
        span = kr.input_span(segments, batch["targets"])
        queries = [self.reinstated.get(example_id) for example_id in batch["example_ids"]]
        self.stats["kr_missing"] += sum(q is None for q in queries)
        device = batch["input_ids"].device
        with autocast(device, self.config.train.autocast):
            embeds = kr.embeddings_with_inputs(model, batch, span, queries)
            ce_q = kr.per_example_ce(model, batch, segments, embeds)
        ce_x = kr.ce_from_outputs(outputs, batch, segments)
        harder_q = (ce_q.detach() > ce_x.detach()).to(ce_x.dtype)
        self.stats["kr_micro_batches"] += 1
        self.stats["kr_examples"] += segments.count
        self.stats["kr_reinstated_harder"] += int(harder_q.sum())
        alpha, n = self.options.alpha, max(segments.count, 1)
        # max(CE(q), CE(x)) split by which side is larger: the x side trains on the original inputs like the
        # label loss does, the q side on the reinstated ones; PCGrad arbitrates between these two.
        from_x = alpha * ((1 - harder_q) * ce_x).sum() / n
        from_q = alpha * (harder_q * ce_q).sum() / n
        if not self.options.pcgrad or not bool(harder_q.any()):
            return from_x + from_q
        main = outputs.loss_sum / max(int(batch["n_labels"]), 1)
        return from_x + self._pcgrad_correction(model, main + from_x, from_q)

    def _pcgrad_correction(
        self, model: Any, original: torch.Tensor, reinstated: torch.Tensor
    ) -> torch.Tensor:
        """A term whose gradient turns grad(original) into PCGrad(grad(original), grad(reinstated)); its
        value is reinstated's, so the loss the trainer sees is unchanged.

        The trainer backpropagates its label loss + this extra loss itself; PCGrad needs the two task
        gradients apart, so they are taken here first (graph retained) and the difference is returned as
        a linear term in the parameters.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        first = torch.autograd.grad(original, params, retain_graph=True, allow_unused=True)
        second = torch.autograd.grad(reinstated, params, retain_graph=True, allow_unused=True)
        combined, conflicts = pcgrad.combine([list(first), list(second)])
        self.stats["pcgrad_micro_batches"] += 1
        self.stats["pcgrad_conflicts"] += int(conflicts > 0)
        linear = reinstated.new_zeros(())
        for param, total, own in zip(params, combined, first, strict=True):
            if total is not None:
                change = total if own is None else total - own
                linear = linear + (change.detach().to(param.dtype) * param).sum()
        return linear - linear.detach() + reinstated.detach()

    # ------------------------------------------------------------------------------------------ save

    def summary(self) -> dict[str, Any]:
        adapter = self.adapter
        return {
            "options": self.options.model_dump(mode="json"),
            "kr_stage_one": self.stage_one,
            "latent_parameters": sum(p.numel() for p in adapter.parameters()) if adapter else 0,
            "training_inputs": len(adapter.group_of) if adapter else 0,
            "routed_as_unseen_in_training": adapter.unknown_in_training if adapter else 0,
            "encoder_cache": {"hits": adapter.encoder.hits, "misses": adapter.encoder.misses}
            if adapter
            else None,
            **self.stats,
        }

    def save(self, model: PeftModel, adapter_dir: Path) -> None:
        save_tki(adapter_dir, self.adapter, self.summary())

    @classmethod
    def load(
        cls, model: PeftModel, tokenizer: PreTrainedTokenizerBase, adapter_dir: Path, device: str
    ) -> None:
        if is_tki_adapter(adapter_dir):  # the latent increments with retrieval, on top of the PEFT adapter
            attach_saved_latents(model, tokenizer, adapter_dir, device)


def build_latents(model: Any, tokenizer: Any, examples: list[Example], config: RunConfig) -> LatentAdapter:
    """Encode the training inputs, split them into groups at random, attach the latent increments."""
    options = config.options("tki")
    if not 1 <= options.top_k <= options.latents:
        raise ConfigError("tki.top_k", f"must be between 1 and tki.latents ({options.latents})")
    if options.groups < 1 or options.rank < 1:
        raise ConfigError("tki.groups" if options.groups < 1 else "tki.rank", "must be at least 1")
    targets = find_targets(model, config.lora.target_modules)
    if not targets:
        raise ConfigError(
            "lora.target_modules", "no linear layer matched: nowhere to put the latent increments"
        )
    device = next(model.parameters()).device
    encoder = make_encoder(options.encoder, model, tokenizer, str(device), default_cache_dir())
    extractor = UserTurnExtractor(tokenizer)
    texts = list(dict.fromkeys(extractor.prompt_text(e.prompt_messages) for e in examples))
    embeddings = encoder.encode(texts)
    spec = LatentSpec(
        groups=options.groups,
        latents=options.latents,
        top_k=options.top_k,
        rank=options.rank,
        scaling=config.lora.alpha / config.lora.r,
        dropout=config.lora.dropout,
        dim=encoder.dim,
        encoder="base" if isinstance(encoder.inner, BaseModelEncoder) else options.encoder,
        weighting=options.weighting,
        temperature=options.temperature,
        inference_groups=options.inference_groups,
        seed=config.train.seed,
        targets=targets,
    )
    adapter = LatentAdapter(spec)
    if isinstance(encoder.inner, BaseModelEncoder):
        encoder.inner.bypass = adapter.bypass
    adapter.encoder = encoder
    if texts:
        adapter.center.copy_(embeddings.mean(0))
    order = list(range(len(texts)))
    random.Random(config.train.seed).shuffle(order)
    adapter.group_of = {texts[i]: rank % options.groups for rank, i in enumerate(order)}
    adapter.to(device)
    adapter.attach(model, tokenizer)
    return adapter
