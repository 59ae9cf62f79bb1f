"""delia.core.registry: one Registry for every kind of plug-in, discovery on first lookup, clear errors."""

from __future__ import annotations

import pytest

from delia.core.errors import ConfigError
from delia.core.registry import BACKENDS, METHODS, METRICS, STAGES, TASK_BUILDERS, Registry


def test_each_kind_discovers_its_plugins_on_first_lookup() -> None:
    assert {"delia", "common_it", "base", "tki"} <= set(METHODS.names())
    assert TASK_BUILDERS.names() == ["demo", "halueval", "translation"]
    assert BACKENDS.names() == ["local", "openai", "vllm"]
    assert METRICS.names() == ["exact", "json_format", "translation"]
    assert {"task", "diversify", "sample", "mix", "train", "eval"} <= set(STAGES.names())


def test_an_unknown_name_is_a_config_error_at_the_kinds_key() -> None:
    expected = r"config task.builder: unknown task builder 'nope'; choose one of demo"
    with pytest.raises(ConfigError, match=expected):
        TASK_BUILDERS.get("nope")


def test_two_plugins_under_one_name_is_refused() -> None:
    registry: Registry[object] = Registry("widget", "widget", "delia.core")
    first, second = object(), object()
    registry.register("w")(first)
    registry.register("w")(first)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="two widgets registered as 'w'"):
        registry.register("w")(second)
    assert registry.get("w") is first and "w" in registry
