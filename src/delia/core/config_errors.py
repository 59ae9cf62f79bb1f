"""Config errors in the user's terms: the key, the `--set` flag that gave it, what was expected there and
which keys are valid (with a "did you mean" for a misspelt one).

Kept apart from the schema (delia.core.config), which passes its root model in: these helpers only read a
pydantic model's fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from delia.core.errors import ConfigError

SET_FLAG = "--set"
SECTION_TYPES = ("model_type", "model_attributes_type", "dict_type")  # a section given a plain value
Sections = Mapping[str, type[BaseModel]]
# Keys whose value may be a credential (a key pasted as api_key_env, user:key@ in a base_url): a --set item
# naming one is shown without its value.
SECRET_KEYS = ("api_key_env", "base_url")


def split_override(item: str, top_keys: Sequence[str], where: str = SET_FLAG) -> tuple[list[str], str]:
    """`a.b=c` -> (["a", "b"], "c"); a ConfigError naming `where` the item came from (the flag, or an
    experiment file's `set:` list) when it has no `=` or an empty key."""
    example = "e.g. --set train.lr=1e-4" if where == SET_FLAG else "e.g. train.lr=1e-4"
    if "=" not in item:
        raise ConfigError(f"{where} {item}", f"expected section.key=value ({example})")
    dotted, raw = item.split("=", 1)
    parts = [part.strip() for part in dotted.split(".")]
    if not all(parts):
        what = "nothing before '='" if not dotted.strip() else f"an empty part in {dotted.strip()!r}"
        raise ConfigError(
            f"{where} {item}",
            f"expected section.key=value, got {what} ({example}); top-level keys: {', '.join(top_keys)}",
        )
    return parts, raw


def section_at(root: type[BaseModel], parts: Sequence[str], extra: Sections) -> type[BaseModel] | None:
    """The model of the section at dotted `parts` under `root` (`extra`: top-level sections that are not
    fields, the methods' options); None where `parts` does not lead to a section."""
    node = root
    for depth, part in enumerate(parts):
        field = node.model_fields.get(part)
        if field is None:
            if depth == 0 and part in extra:
                node = extra[part]
                continue
            return None
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        node = annotation
    return node


def section_keys(root: type[BaseModel], parts: Sequence[str], extra: Sections) -> list[str]:
    """The valid keys of the section at `parts` (none when it is not a section)."""
    section = section_at(root, parts, extra)
    if section is None:
        return []
    return [*section.model_fields, *(extra if not parts else ())]


def unknown_key(key: str, keys: Sequence[str], unknown: str) -> str:
    """`unknown` ("unknown key"), with the closest valid key and every valid one when they are known."""
    if not keys:
        return unknown
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]!r}?" if close else ";"
    return f"{unknown} {key!r}{guess} valid keys: {', '.join(keys)}"


def explain(
    error: Mapping[str, Any], parts: Sequence[str], unknown: str, root: type[BaseModel], extra: Sections
) -> str:
    """The message for pydantic's `error` at dotted `parts`: the validator's own words, except where the
    user's mistake has a plainer description (an unknown key, a section given a value, or the reverse)."""
    message = str(error["msg"]).removeprefix("Value error, ")  # pydantic prefixes a validator's message
    if error["type"] == "extra_forbidden":
        return unknown_key(parts[-1], section_keys(root, parts[:-1], extra), unknown) if parts else unknown
    keys = section_keys(root, parts, extra) if parts else []
    if error["type"] in SECTION_TYPES and keys:
        return (
            f"is a section, not a value: set one of its keys ({', '.join(keys)}), "
            f"e.g. {'.'.join(parts)}.{keys[0]}=..., got {error['input']!r}"
        )
    parent = section_at(root, parts[:-1], extra) if parts else None
    if isinstance(error.get("input"), dict) and parent is not None and parts[-1] in parent.model_fields:
        return f"is a value, not a section: give it one value ({message}), got {error['input']!r}"
    return message


def blamed_override(loc: Sequence[Any], overrides: Sequence[str]) -> str | None:
    """The `--set` item (the last one, which wins) that wrote at or under the failing key (pydantic's `loc`),
    or above it; None when the error came from elsewhere (the config file)."""
    parts = [str(part) for part in loc]
    if not parts:  # an error about the whole config is no one flag's
        return None
    for item in reversed(overrides):
        dotted = item.split("=", 1)[0]
        key = [part.strip() for part in dotted.split(".")]
        shared = min(len(key), len(parts))
        if key[:shared] == parts[:shared]:
            secret = any(name in item for name in SECRET_KEYS)
            return f"{SET_FLAG} {dotted}=..." if secret else f"{SET_FLAG} {item}"
    return None
