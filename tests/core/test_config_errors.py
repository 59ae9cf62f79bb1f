"""Config errors in the user's terms (delia.core.config_errors): the `--set` flag that gave a bad value,
what a malformed flag should look like, a section given a value, and "did you mean" for a misspelt key."""

from __future__ import annotations

from pathlib import Path

import pytest

from delia.core.config import load_config
from delia.core.config_errors import blamed_override, unknown_key
from delia.core.errors import ConfigError

MIX_KEYS = "schedule, ratio, two_stage_order, seed, two_stage_remix"
SECTION = "is a section, not a value: set one of its keys"
GUESS = "did you mean"
VALID = f"valid keys: {MIX_KEYS}"


EXPECTED = r"expected section\.key=value"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["=3"], rf"^config --set =3: {EXPECTED}, got nothing before '='.*top-level keys: name, method,"),
        (["train..lr=1"], rf"^config --set train\.\.lr=1: {EXPECTED}, got an empty part"),
        (["train"], rf"^config --set train: {EXPECTED} \(e\.g\. --set train\.lr=1e-4\)$"),
        (["mix=3"], rf"^config mix \(--set mix=3\): {SECTION} \({MIX_KEYS}\)"),
        (["train.lr.x=1"], r"^config train\.lr \(--set train\.lr\.x=1\): is a value, not a section"),
        (["mix.ratoi=2"], rf"^config mix\.ratoi \(.*\): unknown key 'ratoi'; {GUESS} 'ratio'\? {VALID}$"),
        (["trian.lr=1"], r"^config trian \(--set trian\.lr=1\): unknown key 'trian'; did you mean 'train'\?"),
        (["tki.grups=3"], r"^config tki\.grups \(.*\): unknown key 'grups'; did you mean 'groups'\?"),
        (["train.xyzzy=1"], r"^config train\.xyzzy \(.*\): unknown key 'xyzzy'; valid keys: lr, epochs,"),
    ],
)  # fmt: skip
def test_a_bad_set_flag_says_what_was_expected(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("train.epochs=0", "train.epochs", "Input should be greater than 0"),
        ("train.lr=-1", "train.lr", "Input should be greater than 0"),
        ("train.micro_batch_size=0", "train.micro_batch_size", "Input should be greater than or equal to 1"),
    ],
)
def test_values_that_cannot_train_are_refused_at_load(
    tmp_path: Path, override: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == f"config {key} (--set {override}): {message}"
    section, name = key.split(".")
    path = tmp_path / "run.yaml"
    path.write_text(f"{section}:\n  {name}: {override.split('=')[1]}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config {key} ({path}): {message}"  # the file, when the file gave it


def test_the_set_flag_is_blamed_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^config trian \(--set trian\.lr=1\): unknown key 'trian'"):
        load_config(path, ["mix.ratio=2", "trian.lr=1"])
    path.write_text("trian:\n  lr: 0.001\n", encoding="utf-8")  # now the file holds the typo
    with pytest.raises(ConfigError, match=rf"^config trian \({path}\): unknown key 'trian'; did you mean"):
        load_config(path, ["mix.ratio=2"])


def test_the_last_set_of_a_key_is_the_one_blamed() -> None:
    assert (
        blamed_override(("train", "lr"), ["train.lr=1", "mix.ratio=2", "train.lr=-1"]) == "--set train.lr=-1"
    )
    assert blamed_override(("train",), ["train.lr=1"]) == "--set train.lr=1"  # set under the failing key
    assert blamed_override(("mix", "ratio"), ["train.lr=1"]) is None
    assert blamed_override((), ["train.lr=1"]) is None  # the whole config is no one flag's


def test_unknown_key_without_known_keys_keeps_the_plain_words() -> None:
    assert unknown_key("n_facts", [], "unknown option") == "unknown option"
    assert unknown_key("ratoi", ["ratio", "seed"], "unknown key") == (
        "unknown key 'ratoi'; did you mean 'ratio'? valid keys: ratio, seed"
    )


@pytest.mark.parametrize(
    "override",
    ["sample.backend.api_key_env=sk-abc123", "sample.backend.base_url=http://user:sk-abc123@host/v1"],
)
def test_a_blamed_set_flag_never_shows_a_value_that_may_be_a_key(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    key = override.split("=")[0]
    assert f"config {key} (--set {key}=...): must " in str(err.value)
    assert "sk-abc123" not in str(err.value)
