"""Generation backends (local transformers, OpenAI-compatible servers, vLLM) behind one `make_backend`."""

from __future__ import annotations

from typing import Any

from delia.core.config import BackendConfig
from delia.core.errors import ConfigError
from delia.generation.base import Backend


def make_backend(
    cfg: BackendConfig,
    model_spec: str,
    model: Any = None,
    tokenizer: Any = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
) -> Backend:
    """The configured backend. `cfg.model` overrides `model_spec` (None: sample from the model being tuned).

    For kind "local", an already loaded `model` and `tokenizer` are reused when given and `cfg.model` is
    unset.
    """
    spec = cfg.model or model_spec
    if cfg.kind == "local":
        from delia.generation.local import LocalBackend

        if model is not None and tokenizer is not None and cfg.model is None:
            return LocalBackend(model, tokenizer, batch_size=cfg.batch_size, progress=progress)
        return LocalBackend.from_spec(
            spec, device=device, dtype=dtype, batch_size=cfg.batch_size, progress=progress
        )
    if cfg.kind == "openai":
        from delia.generation.openai import OpenAIBackend

        if not cfg.base_url:
            raise ConfigError(
                "backend.base_url", "the openai backend needs a base URL, e.g. http://127.0.0.1:8000/v1"
            )
        return OpenAIBackend(
            cfg.base_url,
            spec,
            api_key_env=cfg.api_key_env,
            concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s,
            progress=progress,
        )
    if cfg.kind == "vllm":
        from delia.generation.vllm import VllmBackend

        return VllmBackend(spec)
    raise ConfigError("backend.kind", f"unknown backend {cfg.kind!r}; choose local, openai or vllm")
