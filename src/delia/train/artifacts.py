"""The trained adapter on disk, and loading it back onto its base model.

Only the PEFT adapter: what a method saved beside it (TKI's latents) is its hooks' to load back, which
`delia.methods.load_trained` does. An adapter names its base by a portable spec (the embedded model's name,
a hub id, a local directory's name), never by the path it was loaded from here; delia_base.json beside it
says where the base's weights came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.adapters import ADAPTER_CONFIG, resolve_adapter_dir
from delia.core.config import RunConfig
from delia.core.errors import DeliaError
from delia.core.io import atomic_dir, read_json
from delia.core.models import base_record, portable_spec, spec_of_base_path

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from delia.train.hooks import TrainerHooks

MANIFEST = "delia_adapter.json"
BASE_RECORD = "delia_base.json"


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
        make_portable(tmp, config.model.name)
        (tmp / BASE_RECORD).write_text(json.dumps(base_record(config.model.name), indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        (tmp / "config.yaml").write_text(config.to_yaml(target), encoding="utf-8")
        manifest = adapter_manifest(tokenizer, config, token_ids)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if hooks is not None:
            hooks.save(model, tmp)
    (out_dir / "config.yaml").write_text(config.to_yaml(out_dir), encoding="utf-8")
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


def make_portable(adapter_dir: Path, spec: str | None = None) -> None:
    """Name the base in PEFT's adapter_config.json and model card by its portable spec, not by the path
    PEFT found it at on this machine (the dequantised cache, a local directory). `spec`: the model spec
    trained on; without it, the one the written path maps back to."""
    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    written = config.get("base_model_name_or_path") or ""
    portable = portable_spec(spec if spec is not None else spec_of_base_path(written))
    if written == portable:
        return
    config["base_model_name_or_path"] = portable
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = adapter_dir / "README.md"
    if written and card.exists():  # its front matter names the base too
        card.write_text(card.read_text(encoding="utf-8").replace(written, portable), encoding="utf-8")


def base_spec_of(adapter_dir: str | Path) -> str:
    """The spec of the base an adapter was trained on: delia_adapter.json's base_model, else the base PEFT's
    adapter_config.json names (an older adapter's absolute cache path maps back to the embedded model)."""
    adapter_dir = Path(adapter_dir)
    spec = read_manifest(adapter_dir).get("base_model")
    if spec:
        return str(spec)
    named = (read_json(adapter_dir / ADAPTER_CONFIG) or {}).get("base_model_name_or_path")
    if not named:
        raise DeliaError(f"{adapter_dir} names no base model: give one with --model")
    return spec_of_base_path(str(named))


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
    adapter_dir = resolve_adapter_dir(adapter_dir)  # a run directory holding adapter/ works too
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
    model = load_model(model_spec or base_spec_of(adapter_dir), device=device)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer
