"""Attention for packed rows: causal attention inside each sequence, none across sequences.

transformers turns packed position ids into a dense block-diagonal mask for sdpa, which costs attention over
the whole row (quadratic in the sum of lengths). flash-attention's varlen kernels are GPU-only, so on other
devices this runs SDPA once per sequence: exact, and quadratic only in each sequence's own length. A layer
with a sliding window (Gemma 3's local layers pass `sliding_window`) masks a sequence longer than its window
the way transformers' own mask does: key k is seen from query q when q - window < k <= q.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NAME = "delia_packed"


def packed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query (1, heads, T, dim), key/value (1, kv_heads, T, dim) -> (1, T, heads, dim), as transformers'
    sdpa returns; without `cu_seq_lens_q` (generation, eval) it is plain sdpa."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    cuts = bounds.tolist()
    sizes = [end - start for start, end in itertools.pairwise(cuts)]
    gqa = query.shape[1] != key.shape[1]
    # split, not slicing: slicing's backward writes each piece's gradient into a zeroed full-size tensor
    # (one per sequence per layer), split's backward is a single concatenation.
    window = kwargs.get("sliding_window")
    pieces = [
        F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=_window_mask(q.shape[2], window, q.device),
            dropout_p=dropout,
            is_causal=window is None or q.shape[2] <= window,
            scale=scaling,
            enable_gqa=gqa,
        )
        for q, k, v in zip(
            query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2), strict=True
        )
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _window_mask(length: int, window: int | None, device: torch.device) -> torch.Tensor | None:
    """(length, length) bool, causal and within the window; None where plain causal attention is the same."""
    if window is None or length <= window:
        return None
    position = torch.arange(length, device=device)
    offset = position[:, None] - position[None, :]  # query minus key
    return (offset >= 0) & (offset < window)


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)


@contextmanager
def packed_attention_for(model: PreTrainedModel) -> Iterator[bool]:
    """Switch the model to packed attention for training and back; yields False when the model's
    attention cannot be swapped (older architectures), so the caller pads instead.

    A flash-attention model keeps its own kernel: it reads the same `cu_seq_lens_*` arguments natively.
    """
    previous = model.config._attn_implementation
    if previous is not None and previous.startswith("flash_attention"):
        yield True
        return
    register()
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError):
        yield False
        return
    try:
        yield model.config._attn_implementation == NAME
    finally:
        model.set_attn_implementation(previous or "sdpa")
