"""Method registry. Every module in this package defining Method subclasses is imported on first use,
so adding a method means adding one file."""

from __future__ import annotations

import importlib
import pkgutil

from delia.errors import ConfigError
from delia.methods.base import Method, Plan

_REGISTRY: dict[str, type[Method]] = {}


def _subclasses(cls: type[Method]) -> list[type[Method]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _load() -> dict[str, type[Method]]:
    if not _REGISTRY:
        for info in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
        for cls in _subclasses(Method):
            if cls.name:
                _REGISTRY[cls.name] = cls
    return _REGISTRY


def available() -> dict[str, str]:
    """Method name -> one-line description, sorted by name."""
    return {name: cls.description for name, cls in sorted(_load().items())}


def get_method(name: str) -> Method:
    registry = _load()
    if name not in registry:
        raise ConfigError("method", f"unknown method {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]()


__all__ = ["Method", "Plan", "available", "get_method"]
