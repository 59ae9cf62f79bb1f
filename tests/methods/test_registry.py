"""The method registry: every method of the issue listed, options validated through it, a new method with
options added by one file."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from delia.core.config import RunConfig, Section, build_config, load_config
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.core.registry import METHODS
from delia.methods import available, get_method
from delia.methods.base import Method, MethodPlan, StageDirs

ISSUE_METHODS = {
    "delia",
    "common_it",
    "common_it_matched",
    "random_init",
    "mean_embedding",
    "dmt",
    "fact_based",
    "icl",
    "dipmt",
    "ctg",
    "tell",
}


def test_registry_lists_every_method_of_the_issue_with_a_one_line_description() -> None:
    methods = available()
    assert set(methods) >= ISSUE_METHODS, ISSUE_METHODS - set(methods)
    for name in ISSUE_METHODS:
        assert methods[name].strip() and "\n" not in methods[name], name


def test_delia_methods_command_lists_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.cli import main

    monkeypatch.setattr("sys.argv", ["delia", "methods", "--json"])
    main()
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) >= ISSUE_METHODS and listed["tell"] == available()["tell"]


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("no_such_method")


def test_method_options_are_validated_at_load_under_the_method_name() -> None:
    config = load_config(None, ["method=tki", "tki.groups=8"])
    assert config.options("tki").groups == 8 and config.options("delia").diverse is True  # the defaults
    assert config.method_sections() == ("tki",)
    assert load_config(None, ["method=common_it"]).method_sections() == ()  # common_it has no options
    with pytest.raises(ConfigError, match=r"config delia\.divers \(--set delia\.divers=1\): unknown key"):
        load_config(None, ["delia.divers=1"])
    with pytest.raises(ConfigError, match=r"config common_it \(--set common_it\.x=1\): unknown"):  # no opts
        load_config(None, ["common_it.x=1"])
    with pytest.raises(ConfigError, match=r"config tell\.anchor \(config\): the anchor is empty"):
        build_config({"tell": {"anchor": "  "}})


@pytest.fixture()
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Methods defined inside a test are forgotten after it (every later config would carry their options)."""
    METHODS.names()  # discover the shipped methods first, so the copy holds them
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield


def test_a_toy_method_with_one_option_needs_nothing_but_its_own_definition(scratch_registry: None) -> None:
    class ToyOptions(Section):
        option: int = 1

    class Toy(Method):
        name = "toy"
        description = "a toy: trains on the task data for `toy.option` extra notes"
        Options = ToyOptions

        def plan(
            self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None
        ) -> MethodPlan:
            return MethodPlan(notes=[f"option {config.options(self.name).option}"])

    config = load_config(None, ["method=toy", "toy.option=7"])
    assert get_method("toy").plan(config, []).notes == ["option 7"]
    assert config.method_sections() == ("toy",) and config.stage_hash("toy") != load_config(
        None, ["method=toy"]
    ).stage_hash("toy")
    with pytest.raises(ConfigError, match=r"toy\.optoin"):
        load_config(None, ["toy.optoin=7"])
    assert Toy in dict(METHODS.items()).values()
