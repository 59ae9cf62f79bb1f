"""Knowledge reinstatement.

Stage one (before training, model frozen at theta_0): for each example, the input embeddings q_i start as
x_i's token embeddings and are optimised to raise p(y_i | q_i), penalised by their 2-Wasserstein distance to
x_i's embeddings. Stage two (every training step): the extra objective alpha * max(CE(q_i), CE(x_i)).

The input span of a row is every attended position before its first supervised token (system prompt,
chat markup and the user turn): what the model reads before it answers.

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

IGNORE = -100


def input_span(labels: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq) bool: attended positions before the row's first supervised label."""
    before_answer = torch.cumsum((labels != IGNORE).long(), dim=1) == 0
    if attention_mask is None:
        return before_answer
    return before_answer & attention_mask.bool()


def span_key(input_ids: torch.Tensor, span: torch.Tensor) -> tuple[int, ...]:
    """One row's input tokens: the key its reinstated embeddings are stored under."""
    return tuple(input_ids[span].tolist())


def wasserstein2_squared(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact W2^2 between the uniform empirical distributions of the rows of q and x (same row count)."""
    if q.shape[0] == 0:
        return q.sum() * 0
    cost = torch.cdist(q.float(), x.float()).pow(2)
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


def per_example_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(batch,) mean next-token cross-entropy over each row's supervised tokens."""
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shifted_labels.shape)
    counts = (shifted_labels != IGNORE).sum(1).clamp_min(1)
    return token_loss.sum(1) / counts


def embeddings_with_inputs(
    model: Any, input_ids: torch.Tensor, span: torch.Tensor, inputs: list[torch.Tensor]
) -> torch.Tensor:
    """The model's input embeddings with each row's input span replaced by the given vectors."""
    embeds = model.get_input_embeddings()(input_ids)
    rows = [
        row.masked_scatter(mask.unsqueeze(-1), q.to(row.dtype)) if q.numel() else row
        for row, mask, q in zip(embeds, span, inputs, strict=True)
    ]
    return torch.stack(rows)


def ce_with_inputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    inputs: list[torch.Tensor],
) -> torch.Tensor:
    """(batch,) CE(y_i | q_i): the same rows with their input spans read from `inputs`."""
    span = input_span(labels, attention_mask)
    embeds = embeddings_with_inputs(model, input_ids, span, inputs)
    outputs = model(inputs_embeds=embeds, attention_mask=attention_mask)
    return per_example_ce(outputs.logits, labels)


def reinstate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    steps: int,
    lr: float,
    distance_weight: float,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Stage one for a batch: optimised input embeddings per row (detached, on the CPU) and a summary.

    Only q receives gradients (autograd.grad on q alone); the model's parameters and their .grad are
    never touched, and dropout is off so the frozen model is deterministic.
    """
    span = input_span(labels, attention_mask)
    with torch.no_grad():
        originals = [row[mask].detach() for row, mask in zip(model.get_input_embeddings()(input_ids), span)]
    queries = [o.clone().float().requires_grad_(True) for o in originals]
    optimiser = torch.optim.Adam(queries, lr=lr)
    first_ce = last_ce = last_distance = float("nan")
    with _frozen(model):
        for step in range(steps + 1):
            ce = ce_with_inputs(model, input_ids, attention_mask, labels, queries)
            distances = torch.stack([wasserstein2_squared(q, o) for q, o in zip(queries, originals)])
            if step == 0:
                first_ce = ce.mean().item()
            last_ce, last_distance = ce.mean().item(), distances.mean().item()
            if step == steps:  # the last pass only measures
                break
            loss = (ce + distance_weight * distances).sum()
            grads = torch.autograd.grad(loss, queries)
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


def kr_objective(ce_reinstated: torch.Tensor, ce_original: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * mean_i max(CE(q_i), CE(x_i)): the harder of the two readings of each example."""
    return alpha * torch.maximum(ce_reinstated, ce_original).mean()
