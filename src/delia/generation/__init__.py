"""Generation backends (local transformers, OpenAI-compatible servers, vLLM) behind one `make_backend`.

Each backend module registers a factory in `delia.core.registry.BACKENDS`; the registry imports them on the
first lookup, so importing this package stays light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.config import BackendConfig
from delia.core.registry import BACKENDS
from delia.generation.base import Backend, BackendFactory, BackendRequest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def make_backend(
    cfg: BackendConfig,
    model_spec: str,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
) -> Backend:
    """The configured backend. `cfg.model` overrides `model_spec` (None: sample from the model being tuned).

    For kind "local", an already loaded `model` and `tokenizer` are reused when given and `cfg.model` is
    unset.
    """
    factory: BackendFactory = BACKENDS.get(cfg.kind)
    return factory(BackendRequest(cfg, cfg.model or model_spec, model, tokenizer, device, dtype, progress))
