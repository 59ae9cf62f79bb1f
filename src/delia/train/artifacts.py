"""The trained adapter on disk, and loading it back onto its base model.

Only the PEFT adapter: what a method saved beside it (TKI's latents) is its hooks' to load back, which
`delia.methods.load_trained` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.config import RunConfig
from delia.core.errors import DeliaError
from delia.core.io import atomic_dir, read_json

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from delia.train.hooks import TrainerHooks

MANIFEST = "delia_adapter.json"


def save_artifacts(
    out_dir: Path,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    config: RunConfig,
    token_ids: list[int],
    weights: dict[str, torch.Tensor] | None = None,
    hooks: TrainerHooks | None = None,
) -> Path:
    """out_dir/adapter: PEFT adapter, tokenizer with its new tokens, config.yaml, delia_adapter.json, and
    whatever the method's `hooks` save beside them.

    Written to a temp directory and swapped into place, so a reader never sees half an adapter. `weights`:
    the trainable parameters gathered whole, where the model holds only shards of them (FSDP).
    """
    target = out_dir / "adapter"
    with atomic_dir(target) as tmp:
        # The new rows travel as trainable-token values inside the adapter, so no whole embedding is saved.
        model.save_pretrained(tmp, state_dict=weights, save_embedding_layers=False)
        tokenizer.save_pretrained(tmp)
        (tmp / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        manifest = adapter_manifest(tokenizer, config, token_ids)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if hooks is not None:
            hooks.save(model, tmp)
    (out_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    return target


def adapter_manifest(
    tokenizer: PreTrainedTokenizerBase, config: RunConfig, token_ids: list[int]
) -> dict[str, Any]:
    """What delia_adapter.json records: the base model, the new tokens, the LoRA and the method."""
    import delia

    return {
        "base_model": config.model.name,
        "new_tokens": {tokenizer.convert_ids_to_tokens(i): i for i in token_ids},
        "tokens_init": config.tokens.init,
        "vocab_size": len(tokenizer),
        "lora": config.lora.model_dump(),
        "method": config.method,
        "delia_version": getattr(delia, "__version__", "unknown"),
    }


def read_manifest(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's delia_adapter.json, or {} when it has none."""
    return read_json(Path(adapter_dir) / MANIFEST) or {}


def load_adapter_model(
    model_spec: str, adapter_dir: str | Path | None, device: str = "cpu"
) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
    """Base model + tokenizer (the adapter's, so new tokens exist) + adapter, in eval mode.

    Without `adapter_dir` this is the plain base model, so a baseline goes through the same path.
    """
    from delia.core.models import load_model, load_tokenizer

    if adapter_dir is None:
        model = load_model(model_spec, device=device)
        return model.eval(), load_tokenizer(model_spec)
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise DeliaError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)")
    if not (adapter_dir / "adapter_model.safetensors").exists():
        raise DeliaError(
            f"{adapter_dir} has no adapter_model.safetensors: only safetensors adapters are loaded "
            "(a pickled adapter_model.bin could run code when unpickled)"
        )
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model(model_spec or read_manifest(adapter_dir).get("base_model", ""), device=device)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer
