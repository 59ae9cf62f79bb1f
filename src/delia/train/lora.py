"""Wrap a model with LoRA, making the new token rows trainable too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from delia.core.config import LoraConfig as LoraSection

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def module_name(model: PreTrainedModel, module: Any) -> str:
    """The attribute name under which `module` sits in `model` (e.g. "embed_tokens", "lm_head")."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError("module not found in model")


def is_tied(model: PreTrainedModel) -> bool:
    output = model.get_output_embeddings()
    return output is None or output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _targets(cfg: LoraSection) -> str | list[str]:
    return (
        "all-linear" if cfg.target_modules in (["all-linear"], ["all_linear"]) else list(cfg.target_modules)
    )


def wrap_lora(model: PreTrainedModel, cfg: LoraSection, token_ids: list[int]) -> PeftModel:
    """A PEFT model with LoRA on `cfg.target_modules`; rows `token_ids` of the embedding (and of an untied
    output matrix) trainable through `trainable_token_indices`, or `modules_to_save` on older PEFT."""
    from peft import LoraConfig, get_peft_model

    options: dict[str, Any] = {
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": _targets(cfg),
        "task_type": "CAUSAL_LM",
    }
    if not token_ids:
        return get_peft_model(model, LoraConfig(**options))
    embed = module_name(model, model.get_input_embeddings())
    rows = {embed: list(token_ids)}
    if not is_tied(model):
        rows[module_name(model, model.get_output_embeddings())] = list(token_ids)
    if "trainable_token_indices" in LoraConfig.__dataclass_fields__:
        return get_peft_model(model, LoraConfig(**options, trainable_token_indices=rows))
    log.warning(
        "this PEFT has no trainable_token_indices: training whole embedding modules, other rows masked"
    )
    peft_model = get_peft_model(model, LoraConfig(**options, modules_to_save=list(rows)))
    _freeze_other_rows(peft_model, token_ids)
    return peft_model


def _freeze_other_rows(peft_model: PeftModel, token_ids: list[int]) -> None:
    """modules_to_save trains every row: zero the gradient of all rows but the new tokens'."""
    base = peft_model.get_base_model()
    for module in {id(m): m for m in (base.get_input_embeddings(), base.get_output_embeddings())}.values():
        if module is None:
            continue
        for weight in (p for p in module.parameters() if p.requires_grad):
            keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
            keep[token_ids] = 1
            weight.register_hook(lambda grad, keep=keep: grad * keep)


def trainable_parameters(model: PreTrainedModel) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def adapter_parameters(model: PreTrainedModel) -> list[tuple[str, torch.nn.Parameter]]:
    """What the adapter file holds: PEFT names each of its tensors after the adapter ("lora_A.default.weight",
    "trainable_tokens_delta.default"), frozen or not."""
    adapter = getattr(model, "active_adapter", "default")
    return [
        (name, p)
        for name, p in model.named_parameters()
        if f".{adapter}." in name or name.endswith(f".{adapter}")
    ]
