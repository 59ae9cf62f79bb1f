"""Methods: DELIA and the peers it is compared with. Each module here registers its Method subclasses in
`delia.core.registry.METHODS` by defining them, so adding a method means adding one file."""

from __future__ import annotations

from delia.core.registry import METHODS
from delia.methods.base import Method, MethodPlan


def available() -> dict[str, str]:
    """Method name -> one-line description, sorted by name."""
    return {name: cls.description for name, cls in METHODS.items()}


def get_method(name: str) -> Method:
    return METHODS.get(name)()


__all__ = ["Method", "MethodPlan", "available", "get_method"]
