"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): when two task gradients conflict
(negative dot product), each is projected onto the normal plane of the other before they are summed.

A task gradient is a list of per-parameter tensors (None where a parameter gets no gradient); the dot
products run over all parameters at once, as if the lists were one flat vector.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

Grads = list[torch.Tensor | None]


def dot(first: Sequence[torch.Tensor | None], second: Sequence[torch.Tensor | None]) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for a, b in zip(first, second, strict=True):
        if a is not None and b is not None:
            total = total + (a.double() * b.double()).sum().cpu()
    return total


def project_conflicting(grads: Sequence[Grads], seed: int | None = None) -> tuple[list[Grads], int]:
    """Each task's gradient with its conflicting components removed, and how many projections happened.

    Follows the paper's algorithm: task i is projected against the *original* gradients of the other
    tasks, in a random order (seeded); with two tasks the order does not matter.
    """
    order_rng = random.Random(seed)
    projected: list[Grads] = []
    n_projections = 0
    norms_sq = [dot(g, g) for g in grads]
    for i, own in enumerate(grads):
        current: Grads = [None if t is None else t.clone() for t in own]
        others = [j for j in range(len(grads)) if j != i]
        order_rng.shuffle(others)
        for j in others:
            overlap = dot(current, grads[j])
            if overlap < 0 and norms_sq[j] > 0:
                coefficient = (overlap / norms_sq[j]).item()
                current = [_axpy(c, -coefficient, o) for c, o in zip(current, grads[j], strict=True)]
                n_projections += 1
        projected.append(current)
    return projected, n_projections


def combine(grads: Sequence[Grads], seed: int | None = None) -> tuple[Grads, int]:
    """The PCGrad update direction: the sum of the projected task gradients."""
    projected, n_projections = project_conflicting(grads, seed)
    summed: Grads = []
    for per_param in zip(*projected, strict=True):
        present = [t for t in per_param if t is not None]
        summed.append(torch.stack(present).sum(0) if present else None)
    return summed, n_projections


def _axpy(
    current: torch.Tensor | None, coefficient: float, other: torch.Tensor | None
) -> torch.Tensor | None:
    if other is None:
        return current
    if current is None:
        return coefficient * other
    return current + coefficient * other.to(current.dtype)
