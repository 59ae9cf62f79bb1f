"""File paths in a config: a relative path written in a config file names a file beside that file, wherever
delia runs from; one given with `--set` (or a flag) names a file relative to the working directory.

`load_config` joins each relative input path of a file to the file's directory and holds it as seen from the
working directory (`../shared/data/x.jsonl` for `configs/../../shared/data/x.jsonl` run from the repository
root), so a stage hash, which hashes the path as held, is what it was before paths followed the file. A config
written back into a run directory gets its paths rewritten relative to that directory
(`relocate_config_paths`), so reloading it names the same files and gives the same hashes.

Only inputs move: `run_dir` (an output) and `matched_to` (a run, looked up under `run_dir` too) stay relative
to the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from delia.core.errors import ConfigError

# Dotted config keys whose value is always a file (or checkpoint directory) to read.
INPUT_PATH_KEYS = (
    "task.train",
    "eval.file",
    "sample.queries",
    "sample.data",
    "eval.bleurt_checkpoint",
    "eval.comet_checkpoint",
)
# Builder options that name files (the halueval builder's); checked in task.* and eval.* builder_options.
BUILDER_PATH_OPTIONS = ("instructions_from", "exclude_queries_from", "eval_instructions")
BUILDER_SECTIONS = ("task", "eval")
# model.name is a path only when the config's directory holds it: else it is a hub id or a built-in name.
MODEL_KEY = "model.name"

Rewrite = Callable[[str], str]


def seen_from_cwd(path: str | Path) -> str:
    """`path` relative to the working directory, normalised (absolute where no relative path exists)."""
    absolute = os.path.abspath(path)
    try:
        return os.path.relpath(absolute)
    except ValueError:  # another drive (Windows): no relative path reaches it
        return absolute


def is_relative(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not Path(value).expanduser().is_absolute()


def resolve_config_paths(data: dict[str, Any], config_dir: str | Path) -> dict[str, Any]:
    """A config file's sections with each relative input path joined to the file's directory `config_dir`,
    held as seen from the working directory."""
    base = Path(config_dir)

    def from_file(value: str) -> str:
        return seen_from_cwd(base / Path(value).expanduser())

    def model_from_file(value: str) -> str:
        return from_file(value) if (base / value).exists() else value

    return _rewritten(data, from_file, model_from_file)


def relocate_config_paths(data: dict[str, Any], directory: str | Path | None) -> dict[str, Any]:
    """A config (as held, paths relative to the working directory) with its relative input paths rewritten
    relative to `directory`, where it is about to be written; unchanged for `directory` None."""
    if directory is None:
        return data
    target = os.path.abspath(directory)

    def to_directory(value: str) -> str:
        try:
            return os.path.relpath(os.path.abspath(Path(value).expanduser()), target)
        except ValueError:
            return os.path.abspath(value)

    def model_to_directory(value: str) -> str:
        return to_directory(value) if Path(value).exists() else value

    return _rewritten(data, to_directory, model_to_directory)


def _rewritten(data: dict[str, Any], rewrite: Rewrite, rewrite_model: Rewrite) -> dict[str, Any]:
    """A copy of `data` with `rewrite` applied to each relative input path it holds (`rewrite_model` to
    model.name); sections that are not mappings are left for the schema to refuse."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for dotted, chosen in [*((key, rewrite) for key in INPUT_PATH_KEYS), (MODEL_KEY, rewrite_model)]:
        section, key = dotted.split(".")
        node = out.get(section)
        if isinstance(node, dict) and is_relative(node.get(key)):
            node[key] = chosen(node[key])
    for options in _builder_options(out):
        for key in BUILDER_PATH_OPTIONS:
            if is_relative(options.get(key)):
                options[key] = rewrite(options[key])
    return out


def _builder_options(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each section's builder_options, copied into `data` so that rewriting them leaves the caller's dict."""
    for section in BUILDER_SECTIONS:
        node = data.get(section)
        if isinstance(node, dict) and isinstance(node.get("builder_options"), dict):
            node["builder_options"] = dict(node["builder_options"])
            yield node["builder_options"]


def require_file(key: str, value: str) -> str:
    """`value`, the file the config key `key` names; a ConfigError naming the key and the full path the
    value came to when no such file exists."""
    if Path(value).exists():
        return value
    raise ConfigError(
        key,
        f"file does not exist: {os.path.abspath(value)} (relative paths in a config file are read from that "
        "file's directory; --set paths from the working directory)",
    )
