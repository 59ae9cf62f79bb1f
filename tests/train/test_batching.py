"""train/batching.py: the paper's batch-size rule."""

from __future__ import annotations

import pytest

from delia.core.config import TrainConfig
from delia.train.batching import effective_batch_size


@pytest.mark.parametrize(("n_examples", "batch"), [(1, 16), (100, 16), (255, 16), (256, 64), (10_000, 64)])
def test_batch_size_rule(n_examples: int, batch: int) -> None:
    assert effective_batch_size(TrainConfig(), n_examples) == batch
    assert effective_batch_size(TrainConfig(batch_size=8), n_examples) == 8  # an explicit size wins
