"""User-facing errors: the CLI prints these as one line and exits 2 (no traceback unless --debug)."""

from __future__ import annotations


class DeliaError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class DataError(DeliaError):
    """Bad input data, located by file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class ConfigError(DeliaError):
    """A bad config value, located by its dotted field name."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"config {field}: {message}")
