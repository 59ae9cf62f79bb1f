"""Real mixed batches for the gradient probe: task and diverse examples together, in the mix's proportion.

The probe's older "mixed" gradient, w g_task + (1 - w) g_diverse with w = 1 / (1 + ratio), is arithmetic on
two separately computed batches. Here mixed batch i holds the examples of task batch i plus
round(ratio * batch size) diverse examples, shuffled together, cut into micro-batches and run through the
train module's loss as a training step runs them: the gradients of every micro-batch's summed token loss,
added up and divided by the batch's label tokens.

Why the two can differ: at one parameter point the gradient of a batch's mean token loss is the
label-token-weighted sum of its examples' gradients (attention stays inside each row), so a real mixed batch
weighs its task part by its share of label tokens (not of examples), and it averages ratio x batch size
diverse examples, whose own disagreement shrinks the diverse part, where the arithmetic takes one diverse
batch of batch-size examples.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.train.collate import IGNORE, MicroBatch, encode_examples, pad
from delia.train.loss import LabelLoss, LossOutput

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class MixedBatch:
    """One mixed batch: task batch `task_batch`'s examples and diverse ones, in a seeded shuffled order."""

    task_batch: int
    examples: list[Example]
    n_task: int
    n_diverse: int


@dataclass(frozen=True)
class MixedGradient:
    vector: torch.Tensor  # gradient of the batch's mean token loss, flattened, float32
    loss: float  # the batch's mean token loss
    label_tokens: int
    task_label_tokens: int


def summed_gradient(
    model: PreTrainedModel, params: list[torch.nn.Parameter], batch: MicroBatch
) -> tuple[torch.Tensor, LossOutput]:
    """Flattened gradient of the batch's summed token loss (float32, on the CPU), and the loss output."""
    batch = batch.to(params[0].device)
    outputs = LabelLoss(model)(batch)
    grads = torch.autograd.grad(outputs.loss_sum, params, allow_unused=True)
    flat = torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).float().flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    )
    return flat.cpu(), outputs


def diverse_windows(diverse: list[Example], n_batches: int, per_batch: int, seed: int) -> list[list[Example]]:
    """`n_batches` windows of `per_batch` diverse examples from a seeded shuffle, wrapping round the pool.

    Within a window examples are distinct (per_batch is capped at the pool); across windows they repeat
    only when the pool is smaller than n_batches x per_batch.
    """
    per_batch = min(per_batch, len(diverse))
    order = list(diverse)
    random.Random(seed).shuffle(order)
    return [
        [order[(i * per_batch + j) % len(order)] for j in range(per_batch)] if per_batch else []
        for i in range(n_batches)
    ]


def build_mixed_batches(
    task_batches: list[list[Example]], diverse: list[Example], ratio: float, seed: int
) -> list[MixedBatch]:
    """Each task batch plus round(ratio x its size) diverse examples, shuffled together (seeded)."""
    if not task_batches:
        return []
    per_batch = round(ratio * len(task_batches[0]))
    windows = diverse_windows(diverse, len(task_batches), per_batch, seed + 1)
    batches = []
    for index, (task, extra) in enumerate(zip(task_batches, windows, strict=True)):
        examples = [*task, *extra]
        random.Random(seed + 2 + index).shuffle(examples)  # sources interleave as in a shuffled mix
        batches.append(MixedBatch(index, examples, len(task), len(extra)))
    return batches


def mixed_batch_gradient(
    model: PreTrainedModel,
    params: list[torch.nn.Parameter],
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_length: int,
    micro_batch_size: int,
    task_source: str = "task",
) -> MixedGradient:
    """The gradient a training step takes on `examples` as one batch (before clipping and the optimizer):
    micro-batches of `micro_batch_size`, summed token-loss gradients, divided by all label tokens."""
    encoded = encode_examples(examples, tokenizer, max_length)
    if not encoded:
        raise DeliaError(f"no example of a mixed batch has an answer token within --max-length {max_length}")
    source_index = {source: i for i, source in enumerate(sorted({item.source for item in encoded}))}
    total = torch.zeros(0)
    loss_sum, task_labels = 0.0, 0
    for start in range(0, len(encoded), micro_batch_size):
        batch = pad(encoded[start : start + micro_batch_size], source_index, tokenizer.pad_token_id)
        vector, outputs = summed_gradient(model, params, batch)
        total = vector if total.numel() == 0 else total + vector
        loss_sum += float(outputs.loss_sum.detach())
        if task_source in source_index:
            task_labels += int((batch.sources[batch.targets != IGNORE] == source_index[task_source]).sum())
    n_labels = sum(item.n_labels for item in encoded)
    return MixedGradient(total / n_labels, loss_sum / n_labels, n_labels, task_labels)


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] cosine of every row of a with every row of b (float64)."""
    unit_a = torch.nn.functional.normalize(a.double(), dim=-1)
    unit_b = torch.nn.functional.normalize(b.double(), dim=-1)
    return unit_a @ unit_b.T


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def dilution_figures(combined: torch.Tensor, task: torch.Tensor) -> dict[str, Any]:
    """How far combined gradient i turns away from task batch i's own gradient, and from the others'."""
    cosines = _cosine_rows(combined, task)
    n = combined.shape[0]
    own = [float(cosines[i, i]) for i in range(n)]
    others = [float(cosines[i, j]) for i in range(n) for j in range(task.shape[0]) if j != i]
    norms = combined.double().norm(dim=-1)
    task_norms = task[:n].double().norm(dim=-1).clamp_min(1e-30)
    return {
        "cosine_with_own_task_batch": _stats(own),
        "cosine_with_other_task_batches": _stats(others),
        "norm": {"mean": float(norms.mean()), "std": float(norms.std(unbiased=False))},
        "norm_over_own_task": float((norms / task_norms).mean()),
    }


def mixed_report(
    task: torch.Tensor,
    diverse: torch.Tensor,
    measured: torch.Tensor,
    batches: list[MixedBatch],
    gradients: list[MixedGradient],
    ratio: float,
) -> dict[str, Any]:
    """Measured mixed batches beside the arithmetic w g_task_i + (1 - w) g_diverse_(i mod n)."""
    weight = 1.0 / (1.0 + ratio)
    n = measured.shape[0]
    pairs = diverse.double()[torch.arange(n) % diverse.shape[0]]
    arithmetic = weight * task[:n].double() + (1.0 - weight) * pairs
    shares = [g.task_label_tokens / g.label_tokens for g in gradients]
    first = batches[0]
    return {
        "batches": n,
        "task_examples_per_batch": first.n_task,
        "diverse_examples_per_batch": first.n_diverse,
        "task_example_share": first.n_task / (first.n_task + first.n_diverse),
        "task_token_share": _stats(shares),
        "measured": dilution_figures(measured, task),
        "arithmetic": {"task_weight": weight, **dilution_figures(arithmetic, task)},
        "per_batch": [
            {
                "task_batch": b.task_batch,
                "examples": len(b.examples),
                "loss": g.loss,
                "label_tokens": g.label_tokens,
                "task_label_tokens": g.task_label_tokens,
                "norm": float(g.vector.norm()),
            }
            for b, g in zip(batches, gradients, strict=True)
        ],
    }
