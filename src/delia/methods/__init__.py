"""Methods: DELIA and the peers it is compared with. Each module here registers its Method subclasses in
`delia.core.registry.METHODS` by defining them, so adding a method means adding one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delia.core.registry import METHODS
from delia.methods.base import Method, MethodPlan


def available() -> dict[str, str]:
    """Method name -> one-line description, sorted by name."""
    return {name: cls.description for name, cls in METHODS.items()}


def get_method(name: str) -> Method:
    return METHODS.get(name)()


def load_trained(model_spec: str, adapter_dir: str | Path | None, device: str = "cpu") -> tuple[Any, Any]:
    """A trained run's model and tokenizer in eval mode, with whatever its method saved beside the adapter
    loaded back (TKI's latents); without `adapter_dir`, the base model. Loaders above this floor use this,
    not `delia.train.load_adapter_model`, so a method's artefacts are never forgotten."""
    from delia.train import load_adapter_model

    return load_adapter_model(model_spec, adapter_dir, device=device)


__all__ = ["Method", "MethodPlan", "available", "get_method", "load_trained"]
