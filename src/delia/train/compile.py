"""What is done to the decoder layers for the duration of training: regional torch.compile, and
activation checkpointing.

Compile: each decoder layer compiled for the duration of training.

The layers share their code, so one compiled graph (dynamic in the sequence length) serves all of them;
compiling once costs a minute or more on a small CPU, then every step runs fused elementwise kernels
(casts, norms, rotary, dropout, LoRA's scaling) instead of hundreds of small eager ops. Afterwards the
layers go back to eager, so generation never hits a graph compiled for training shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from delia.train.loss import causal_lm_of, decoder_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def decoder_layers(model: PreTrainedModel) -> list[Any]:
    layers = getattr(decoder_of(causal_lm_of(model)), "layers", None)
    return list(layers) if layers is not None else []


@contextmanager
def compiled_layers(model: PreTrainedModel, enabled: bool) -> Iterator[None]:
    layers = decoder_layers(model) if enabled else []
    if enabled and not layers:
        log.warning("train.compile: this architecture has no `layers` list to compile; running eager")
    for layer in layers:
        layer.compile(dynamic=True)
    try:
        yield
    finally:
        for layer in layers:
            layer._compiled_call_impl = None  # back to the eager forward


@contextmanager
def checkpointed_layers(model: PreTrainedModel, enabled: bool) -> Iterator[None]:
    """`train.gradient_checkpointing`: keep only each decoder layer's input and recompute the rest in the
    backward pass (transformers' own checkpointing, non-reentrant, so LoRA and packed-attention kwargs pass
    through and dropout replays the same masks). The 135M model at micro-batch 8 x 512 tokens kept 12 GB
    of fp32 activations without it."""
    if not enabled:
        yield
        return
    causal_lm = causal_lm_of(model)
    causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        causal_lm.gradient_checkpointing_disable()
