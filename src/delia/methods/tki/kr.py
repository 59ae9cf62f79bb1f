"""Knowledge reinstatement.

Stage one (before training, model frozen at theta_0): for each example, the input embeddings q_i start as
x_i's token embeddings and are optimised to raise p(y_i | q_i), penalised by their 2-Wasserstein distance to
x_i's embeddings. Stage two (every training step): the extra objective alpha * max(CE(q_i), CE(x_i)).

Batches are delia.train micro-batches (as dicts of their fields): next-token `targets` (IGNORE where nothing
is learned), padded rows or packed rows. An example's input span is its tokens up to and including the
position that predicts its first answer token: system prompt, chat markup and the user turn.

The distance: the exact squared 2-Wasserstein distance between the two empirical distributions of token
vectors (uniform weights, same number of points). Its optimal plan is a permutation (Birkhoff), found with
the Hungarian algorithm; the gradient is taken through the matched pairs (the plan is locally constant).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from delia.methods.tki.segments import Segments, find_segments

IGNORE = -100
_MODEL_FIELDS = (
    "input_ids",
    "position_ids",
    "targets",
    "sources",
    "attention_mask",
    "cu_seq_lens",
    "max_seq_len",
)


def batch_segments(batch: dict[str, Any]) -> Segments:
    """Which example each token of a micro-batch belongs to (order = batch["example_ids"])."""
    ids = batch["input_ids"]
    return find_segments(
        tuple(ids.shape),
        batch.get("attention_mask"),
        batch.get("position_ids"),
        batch.get("cu_seq_lens"),
        ids.device,
    )


def input_span(segments: Segments, targets: torch.Tensor) -> torch.Tensor:
    """(rows, positions) bool: each example's tokens up to the one predicting its first answer token."""
    owner = segments.token_segment.reshape(-1)
    position = torch.arange(owner.numel(), device=owner.device)
    labelled = (targets.reshape(-1) != IGNORE) & (owner >= 0)
    first = torch.full((max(segments.count, 1),), owner.numel(), dtype=torch.long, device=owner.device)
    first = first.scatter_reduce(0, owner[labelled], position[labelled], reduce="amin")
    span = (owner >= 0) & (position <= first[owner.clamp_min(0)])
    return span.reshape(targets.shape)


def wasserstein2_squared(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact W2^2 between the uniform empirical distributions of the rows of q and x (same row count)."""
    if q.shape[0] == 0:
        return q.sum() * 0
    cost = torch.cdist(q.float(), x.float()).pow(2)
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


def span_rows(embeds: torch.Tensor, span: torch.Tensor, segments: Segments) -> list[torch.Tensor]:
    """Each example's input-span vectors, in example order."""
    owner = segments.token_segment[span]
    vectors = embeds[span]
    return [vectors[owner == s] for s in range(segments.count)]


def embeddings_with_inputs(
    model: Any, batch: dict[str, Any], span: torch.Tensor, inputs: list[torch.Tensor | None]
) -> torch.Tensor:
    """The model's input embeddings for the batch, with example s's span read from inputs[s] (None: keep)."""
    embeds = model.get_input_embeddings()(batch["input_ids"])
    flat = embeds.reshape(-1, embeds.shape[-1])
    positions = span.reshape(-1).nonzero().squeeze(-1)  # sorted: examples are contiguous and in order
    original = flat[positions]
    owner = batch_segments(batch).token_segment.reshape(-1)[positions]
    pieces = []
    for s, replacement in enumerate(inputs):
        own = original[owner == s]
        use = replacement is not None and replacement.shape == own.shape
        pieces.append(replacement.to(device=own.device, dtype=own.dtype) if use else own)
    if not pieces:
        return embeds
    return flat.index_put((positions,), torch.cat(pieces)).reshape(embeds.shape)


def per_example_ce(
    model: Any, batch: dict[str, Any], segments: Segments, inputs_embeds: torch.Tensor | None = None
) -> torch.Tensor:
    """(examples,) mean answer-token CE, computed the trainer's way (head only at label positions)."""
    from delia.train.collate import MicroBatch
    from delia.train.loss import causal_lm_of, decoder_of

    fields = {name: batch[name] for name in _MODEL_FIELDS if name in batch}
    fields.setdefault("sources", torch.zeros_like(batch["targets"]))
    model_inputs = MicroBatch(**fields).model_inputs()
    if inputs_embeds is not None:
        del model_inputs["input_ids"]
        model_inputs["inputs_embeds"] = inputs_embeds
    causal_lm = causal_lm_of(model)
    hidden = decoder_of(causal_lm)(**model_inputs, use_cache=False).last_hidden_state
    return ce_at_labels(causal_lm, hidden, batch["targets"], segments)


def ce_at_labels(
    causal_lm: Any, hidden: torch.Tensor, targets: torch.Tensor, segments: Segments
) -> torch.Tensor:
    from delia.train.loss import finish_logits

    mask = targets != IGNORE
    logits = finish_logits(causal_lm.config, causal_lm.get_output_embeddings()(hidden[mask])).float()
    return segment_mean(
        F.cross_entropy(logits, targets[mask], reduction="none"), segments.token_segment[mask], segments.count
    )


def ce_from_outputs(outputs: Any, batch: dict[str, Any], segments: Segments) -> torch.Tensor:
    """(examples,) CE(x_i) from the trainer's LossOutput (its per-token losses, in the graph)."""
    return segment_mean(outputs.token_loss_terms, segments.token_segment[outputs.label_mask], segments.count)


def segment_mean(values: torch.Tensor, owners: torch.Tensor, count: int) -> torch.Tensor:
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(0, owners, values)
    counts = torch.bincount(owners, minlength=count).clamp_min(1).to(values.dtype)
    return sums / counts


def reinstate(
    model: Any, batch: dict[str, Any], steps: int, lr: float, distance_weight: float
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Stage one for a micro-batch: optimised input-span embeddings per example (detached, CPU), and a
    summary. Only q receives gradients (autograd.grad on q alone); the model's parameters and their .grad
    are never touched, and dropout is off so the frozen model is deterministic."""
    segments = batch_segments(batch)
    span = input_span(segments, batch["targets"])
    with torch.no_grad():
        originals = [
            r.detach().float()
            for r in span_rows(model.get_input_embeddings()(batch["input_ids"]), span, segments)
        ]
    queries = [o.clone().requires_grad_(True) for o in originals]
    optimiser = torch.optim.Adam(queries, lr=lr)
    first_ce = last_ce = last_distance = float("nan")
    with _frozen(model):
        for step in range(steps + 1):
            embeds = embeddings_with_inputs(model, batch, span, list(queries))
            ce = per_example_ce(model, batch, segments, embeds)
            distances = torch.stack(
                [wasserstein2_squared(q, o) for q, o in zip(queries, originals, strict=True)]
            )
            if step == 0:
                first_ce = ce.mean().item()
            last_ce, last_distance = ce.mean().item(), distances.mean().item()
            if step == steps:  # the last pass only measures
                break
            grads = torch.autograd.grad((ce + distance_weight * distances).sum(), queries)
            for q, g in zip(queries, grads, strict=True):
                q.grad = g
            optimiser.step()
    summary = {"ce_before": first_ce, "ce_after": last_ce, "w2_after": last_distance}
    return [q.detach().cpu() for q in queries], summary


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
