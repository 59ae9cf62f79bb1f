"""Regional torch.compile: each decoder layer compiled for the duration of training.

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
