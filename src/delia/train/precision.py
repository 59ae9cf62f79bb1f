"""bf16 copies of the frozen linear weights while training under bf16 autocast.

Autocast casts a float32 weight to bf16 on every call and caches the cast only for weights that require
grad, so each frozen base weight (all of them, under LoRA) is re-cast in every forward: on SmolLM2 that is
106M parameters read and written per micro-batch, a third of a CPU step. The cast is deterministic, so
handing the matmul a bf16 copy made once gives bit-identical results. The float32 originals are kept
and put back afterwards: the trained model is returned exactly as it was loaded, plus the adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from delia.core.models import autocast
from delia.train.loss import causal_lm_of, decoder_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def autocast_is_bf16(device: str, mode: str) -> bool:
    return not isinstance(autocast(device, mode), contextlib.nullcontext)


def frozen_linears(model: PreTrainedModel) -> list[torch.nn.Linear]:
    """Frozen float32 nn.Linear modules inside the decoder (the output head and embeddings excluded)."""
    decoder = decoder_of(causal_lm_of(model))
    return [
        module
        for module in decoder.modules()
        if isinstance(module, torch.nn.Linear)
        and not module.weight.requires_grad
        and module.weight.dtype == torch.float32
    ]


@contextlib.contextmanager
def bf16_frozen_weights(model: PreTrainedModel, enabled: bool) -> Iterator[None]:
    originals: list[tuple[torch.nn.Linear, torch.Tensor]] = []
    if enabled:
        for module in frozen_linears(model):
            originals.append((module, module.weight.data))
            module.weight.data = module.weight.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for module, weight in originals:
            module.weight.data = weight
