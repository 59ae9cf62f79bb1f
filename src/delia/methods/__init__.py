"""Methods: DELIA and the peers it is compared with. Each module here registers its Method subclasses in
`delia.core.registry.METHODS` by defining them, so adding a method means adding one file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from delia.core.adapters import resolve_adapter_dir
from delia.core.registry import METHODS
from delia.methods.base import Method, MethodPlan

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def available() -> dict[str, str]:
    """Method name -> one-line description, sorted by name."""
    return {name: cls.description for name, cls in METHODS.items()}


def get_method(name: str) -> Method:
    return METHODS.get(name)()


def load_trained(
    model_spec: str, adapter_dir: str | Path | None, device: str = "cpu"
) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
    """A trained run's model and tokenizer in eval mode, with whatever its method saved beside the adapter
    loaded back (TKI's latents); without `adapter_dir`, the base model. Loaders above this floor use this,
    not `delia.train.load_adapter_model`, so a method's artefacts are never forgotten."""
    # delia.train pulls in torch and transformers: imported on first load, not at CLI start-up.
    from delia.train.artifacts import load_adapter_model, read_manifest

    if adapter_dir is not None:  # a run directory holding adapter/ too: the manifest is the adapter's
        adapter_dir = resolve_adapter_dir(adapter_dir)
    model, tokenizer = load_adapter_model(model_spec, adapter_dir, device=device)
    if adapter_dir is not None:
        method = read_manifest(adapter_dir).get("method")
        hooks = get_method(method).hooks_type() if method in METHODS else None
        if hooks is not None:
            hooks.load(model, tokenizer, Path(adapter_dir), device)
    return model, tokenizer


__all__ = ["Method", "MethodPlan", "available", "get_method", "load_trained"]
