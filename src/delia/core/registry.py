"""The one plug-in registry: methods, task builders, generation backends, metrics and pipeline stages.

A plug-in registers itself where it is defined (`@METHODS.register("delia")`). Each kind names the package
whose modules hold its plug-ins; the first lookup imports them, so adding a plug-in is adding one module and
nothing lists it by hand. The import is by name because a lower layer (the config schema) asks about
plug-ins that higher layers define: that is the one upward reach, and it happens only here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from delia.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plug-in of one kind; `field` is the config key whose value names one, for error messages."""

    def __init__(self, kind: str, field: str, package: str) -> None:
        self.kind = kind
        self.field = field
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file the decorated object under `name` (a second object under one name is a bug)."""

        def add(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"two {self.kind}s registered as {name!r}: {existing!r} and {obj!r}")
            self._entries[name] = obj
            return obj

        return add

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        # Top-level modules and packages only: a plug-in package (methods/tki/) registers in its __init__, and
        # walking into it would import its torch-heavy submodules whenever a config is loaded.
        for info in pkgutil.iter_modules(getattr(package, "__path__", []), prefix=f"{self.package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)

    def get(self, name: str) -> T:
        """The plug-in named `name`; an unknown name is a ConfigError at `field` listing the known ones."""
        self._discover()
        if name not in self._entries:
            raise ConfigError(
                self.field, f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        for name in sorted(self._entries):
            yield name, self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries


METHODS: Registry[Any] = Registry("method", "method", "delia.methods")
TASK_BUILDERS: Registry[Any] = Registry("task builder", "task.builder", "delia.data.builders")
BACKENDS: Registry[Any] = Registry("backend", "backend.kind", "delia.generation")
METRICS: Registry[Any] = Registry("metric", "eval.metric", "delia.evaluate.metrics")
STAGES: Registry[Any] = Registry("stage", "stage", "delia.pipeline.stages")
