"""Command flags as config overrides. Every default lives in the schema (delia.core.config): a flag's own
default is None, "not given", and a value given overrides its config key after `--config` and `--set`."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import typer

from delia.core.config import RunConfig, build_config, deep_merge, load_config

FLAG_SOURCE = "command line"
SET_METAVAR = "<section.key=value>"
# A flag given with a value that means "none" (e.g. `--label-key ''`): None itself means "not given".
EXPLICIT_NONE = object()


@cache
def _schema_defaults() -> RunConfig:
    return RunConfig()


def schema_default(dotted: str) -> Any:
    """The schema's default of a dotted RunConfig key: 0.7 for sample.sampling.temperature, 0.9 for
    diversify.sampling.temperature (a section's own factory may differ from the class default)."""
    node: Any = _schema_defaults()
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _shown(value: Any, flag: str) -> str:
    if isinstance(value, bool) and "/" in flag:
        on, off = flag.split("/")
        return (on if value else off).lstrip("-")
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, str):
        return value.encode("unicode_escape").decode("ascii")  # "\n\n" shown as typed on a command line
    return str(value)


def config_option(dotted: str, flag: str, help: str = "") -> Any:
    """A typer option that sets config key `dotted` when given (None otherwise); the help names the key
    and shows the schema's default."""
    default = schema_default(dotted)
    # Parentheses, not typer's "[default: ...]": rich help would read square brackets as markup.
    note = f"(config {dotted})" if default is None else f"(config {dotted}; default {_shown(default, flag)})"
    return typer.Option(None, flag, help=f"{help} {note}" if help else note, show_default=False)


def config_file_option() -> Any:
    return typer.Option(None, "--config", help="Run config YAML (defaults otherwise).")


def set_option() -> Any:
    return typer.Option(
        [], "--set", metavar=SET_METAVAR, help="Override a config value: section.key=value (repeatable)."
    )


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return tree


def command_config(config_path: str | Path | None, overrides: list[str], flags: dict[str, Any]) -> RunConfig:
    """The RunConfig of one command: `--config`, then `--set`, then the flags given (dotted key -> value,
    None when not given); a bad flag value is a ConfigError naming its key, from the schema's validation."""
    config = load_config(config_path, overrides)
    given = {
        dotted: None if value is EXPLICIT_NONE else value
        for dotted, value in flags.items()
        if value is not None
    }
    if not given:
        return config
    return build_config(deep_merge(config.model_dump(), _nested(given)), source=FLAG_SOURCE)
