"""API keys stay out of what delia writes: `api_key_env` holds the name of the variable with the key, and
a value that names no set variable may be the key itself (pasted where its name belongs), so it is never
written or echoed."""

from __future__ import annotations

import os
from typing import Any

KEY_NAME_FIELD = "api_key_env"
# Shaped like a variable name, so that a config written with it still loads; it names no variable, so a run
# from that config stops at "names no environment variable that is set" rather than going without a key.
REDACTED = "REDACTED_NOT_A_SET_VARIABLE"


def redact_key_names(tree: Any) -> Any:
    """`tree` (a dumped config) with every `api_key_env` that is not a set variable's name replaced."""
    if isinstance(tree, dict):
        return {
            key: redacted_key_name(value) if key == KEY_NAME_FIELD else redact_key_names(value)
            for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [redact_key_names(item) for item in tree]
    return tree


def redacted_key_name(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value in os.environ):
        return value
    return REDACTED
