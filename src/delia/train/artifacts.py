"""The trained adapter on disk, and loading it back onto its base model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from delia.core.config import RunConfig
from delia.core.errors import DeliaError

MANIFEST = "delia_adapter.json"


def save_artifacts(
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    config: RunConfig,
    token_ids: list[int],
    weights: dict[str, Any] | None = None,
) -> Path:
    """out_dir/adapter: PEFT adapter, tokenizer with its new tokens, config.yaml, delia_adapter.json.

    Written to a temp directory and renamed, so a reader never sees half an adapter. `weights`: the trainable
    parameters gathered whole, where the model holds only shards of them (FSDP).
    """
    import delia

    target = out_dir / "adapter"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".adapter."))
    try:
        # The new rows travel as trainable-token values inside the adapter, so no whole embedding is saved.
        model.save_pretrained(tmp, state_dict=weights, save_embedding_layers=False)
        tokenizer.save_pretrained(tmp)
        (tmp / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        manifest = {
            "base_model": config.model.name,
            "new_tokens": {tokenizer.convert_ids_to_tokens(i): i for i in token_ids},
            "tokens_init": config.tokens.init,
            "vocab_size": len(tokenizer),
            "lora": config.lora.model_dump(),
            "method": config.method,
            "delia_version": getattr(delia, "__version__", "unknown"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            old = target.with_name(f".adapter.old.{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in out_dir.glob(".adapter.*"):  # temp dirs of an earlier run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    (out_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    return target


def read_manifest(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_adapter_model(
    model_spec: str, adapter_dir: str | Path | None, device: str = "cpu"
) -> tuple[Any, Any]:
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
    from delia.methods.tki.artifacts import attach_saved_latents, is_tki_adapter

    if is_tki_adapter(adapter_dir):  # TKI: latent increments with retrieval, on top of the PEFT adapter
        attach_saved_latents(model, tokenizer, adapter_dir, device)
    return model.eval(), tokenizer
