"""The data order: which examples each optimizer step sees, a pure function of the seed.

Being a pure function is what makes resume exact: a resumed run rebuilds the same plan and starts at the
checkpoint's step. Examples are tokenised per step (see loop), so memory does not grow with the data size.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from delia.core.config import TrainConfig
from delia.core.errors import DeliaError


@dataclass(frozen=True)
class StepPlan:
    steps: list[list[int]]  # example indices per optimizer step
    effective_batch: int
    epochs_covered: float

    def __len__(self) -> int:
        return len(self.steps)


def plan_steps(
    n_examples: int,
    effective_batch: int,
    epochs: float,
    max_steps: int | None,
    seed: int,
    shuffle: bool = True,
) -> StepPlan:
    """Epoch after epoch of seeded permutations, cut into steps of `effective_batch` examples.
    shuffle=False keeps the given order in every epoch (a mix schedule whose order matters: two_stage).

    With `max_steps` every step is full and the stream runs over as many epochs as needed; otherwise
    `epochs` (a float) decides how many examples are seen and the last step may be short.
    """
    if n_examples == 0:
        raise DeliaError("no training examples")
    if effective_batch < 1:
        raise DeliaError(f"train.batch_size must be >= 1, got {effective_batch}")
    if max_steps is not None and max_steps < 1:
        raise DeliaError(f"train.max_steps must be >= 1, got {max_steps}")
    if max_steps is None and epochs <= 0:
        raise DeliaError(f"train.epochs must be > 0, got {epochs}")
    total = max_steps * effective_batch if max_steps is not None else max(1, round(epochs * n_examples))
    rng = random.Random(seed)
    stream: list[int] = []
    while len(stream) < total:
        order = list(range(n_examples))
        if shuffle:
            rng.shuffle(order)
        stream.extend(order)
    del stream[total:]
    steps = [stream[i : i + effective_batch] for i in range(0, total, effective_batch)]
    return StepPlan(steps, effective_batch, total / n_examples)


def split_micro(lengths: list[int], micro_batch_size: int, group_by_length: bool) -> list[list[int]]:
    """Positions (into `lengths`) per micro-batch; grouped by length so padded batches waste little."""
    order = list(range(len(lengths)))
    if group_by_length:
        order.sort(key=lambda i: -lengths[i])
    return [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]


def shard(micro_batches: list[int], rank: int, world: int) -> list[tuple[int, bool]]:
    """This process's micro-batches; (batch, False) repeats a batch with zero weight so every rank runs
    the same number of backward passes (DDP hangs otherwise)."""
    if world == 1:
        return [(batch, True) for batch in micro_batches]
    per_rank = math.ceil(len(micro_batches) / world)
    mine = micro_batches[rank::world]
    return [(batch, True) for batch in mine] + [(micro_batches[0], False)] * (per_rank - len(mine))


def effective_batch_size(config: TrainConfig, n_examples: int) -> int:
    """The paper's rule: batch 64, or 16 when the training set is below 256 examples."""
    if config.batch_size is not None:
        return config.batch_size
    return 16 if n_examples < 256 else 64
