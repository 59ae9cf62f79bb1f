"""What the task builders share: validated options with a window (offset, limit), stable phrasing picks,
instructions read from a task file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from delia.core.config import config_error
from delia.core.errors import ConfigError, DataError
from delia.core.example import Example
from delia.data.io import read_examples

Builder = Callable[[str | None, dict[str, Any], str], list[Example]]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = 0  # skip this many records (after filtering), so train and eval can take disjoint parts
    limit: int | None = None
    seed: int = 0


def parse_options(cls: type[Options], options: dict[str, Any], field: str) -> Any:
    try:
        return cls.model_validate(options)
    except ValidationError as err:
        raise config_error(err, prefix=field, unknown="unknown option") from None


def window(items: list[Any], opts: Options) -> list[Any]:
    end = None if opts.limit is None else opts.offset + opts.limit
    return items[opts.offset : end]


def stable_pick(options: list[str], key: str, salt: int = 0) -> str:
    """The same record always gets the same phrasing, independent of its position in the file."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def last_paragraph(text: str) -> str:
    return text.rsplit("\n\n", 1)[-1].strip()


def instructions_from_file(path: str) -> list[str]:
    """The distinct last paragraphs of a task file's user turns (its instructions), in file order."""
    seen: dict[str, None] = {}
    for example in read_examples(path):
        seen.setdefault(last_paragraph(example.instruction), None)
    if not seen:
        raise DataError(path, None, "no instructions found")
    return list(seen)


def options_and_file(
    cls: type[Options], builder: str, path: str | None, options: dict[str, Any], field: str
) -> tuple[Any, str]:
    """A file-reading builder's validated options and its existing input file."""
    return parse_options(cls, options, field), require_path(path, builder, field)


def require_path(path: str | None, builder: str, field: str) -> str:
    if not path:
        raise ConfigError(field, f"the {builder!r} builder needs a file of raw records")
    if not Path(path).exists():
        raise DataError(path, None, "file does not exist")
    return path
