"""The fused top-k + top-p warper against transformers' two warpers applied in turn."""

from __future__ import annotations

import pytest
import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

from delia.generation._seeded import TopKTopP


def reference(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    return TopPLogitsWarper(top_p)(None, TopKLogitsWarper(top_k)(None, scores))


@pytest.mark.parametrize(("top_k", "top_p"), [(50, 0.95), (5, 0.5), (1, 0.9), (50, 0.01), (200, 0.999)])
def test_the_fused_warper_keeps_exactly_what_the_two_warpers_keep(top_k: int, top_p: float) -> None:
    scores = torch.randn((16, 1000), generator=torch.Generator().manual_seed(top_k)) * 3
    fused = TopKTopP(top_k, top_p)(None, scores)
    assert torch.equal(fused, reference(scores, top_k, top_p))
    assert (fused > float("-inf")).sum(dim=-1).max() <= top_k


def test_a_tie_at_the_kth_score_keeps_every_tied_token_as_top_k_does() -> None:
    scores = torch.tensor([[4.0, 3.0, 2.0, 2.0, 2.0, -1.0], [1.0, 0.5, 0.0, -0.5, -1.0, -2.0]])
    fused = TopKTopP(3, 0.999)(None, scores)
    assert torch.equal(fused, reference(scores, 3, 0.999))
    assert (fused[0] > float("-inf")).sum() == 5  # the three tokens tied at 2.0 all stay


def test_scores_already_masked_stay_masked() -> None:
    scores = torch.randn((4, 300), generator=torch.Generator().manual_seed(0))
    scores[:, 10:] = float("-inf")  # only 10 candidates, fewer than k
    fused = TopKTopP(50, 0.9)(None, scores)
    assert torch.equal(fused, reference(scores, 50, 0.9))
