"""Config schema: the paper's defaults, YAML, `--set` overrides, errors naming the field, stage hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from delia.core.config import (
    MixConfig,
    RunConfig,
    build_config,
    load_config,
    parse_overrides,
)
from delia.core.errors import ConfigError
from delia.core.models import EMBEDDED


def test_defaults_are_the_papers() -> None:
    config = RunConfig()
    assert config.model.name == EMBEDDED
    assert config.lora.r == 16
    assert config.train.lr == 2e-4
    assert config.train.epochs == 1
    assert config.tokens.add == ["<sep>"]
    assert config.mix.schedule == "shuffle"
    assert (config.sample.sampling.temperature, config.sample.sampling.top_p) == (0.7, 0.95)


def test_checkpoint_spacing_and_tensorboard_leave_stage_hashes_as_they_were() -> None:
    """A grid can turn checkpoints on for its long cells without invalidating the finished ones."""
    plain = RunConfig()
    spaced = build_config({"train": {"checkpoint_every": 25, "tensorboard": True}})
    assert spaced.stage_hash("train", "lora") == plain.stage_hash("train", "lora")
    assert spaced.model_dump(mode="json")["train"]["checkpoint_every"] == 25  # config.yaml keeps what was set
    assert build_config({"train": {"lr": 1e-3}}).stage_hash("train") != plain.stage_hash("train")


def test_yaml_load_and_override_types(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: demo\ntrain:\n  lr: 0.001\n  epochs: 4\nlora:\n  r: 8\n", encoding="utf-8")
    config = load_config(path, ["train.epochs=2", "lora.target_modules=[q_proj, v_proj]", "mix.ratio=2.5"])
    assert config.name == "demo"
    assert config.train.lr == 1e-3  # from the file
    assert config.train.epochs == 2  # the override wins
    assert config.lora.r == 8 and config.lora.alpha == 32  # other keys keep their defaults
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.mix.ratio == 2.5


def test_override_values_are_parsed_as_yaml() -> None:
    assert parse_overrides(["a.b=3", "a.c=true", "d=[x, y]", "e=null", "f=text", "g="]) == {
        "a": {"b": 3, "c": True},
        "d": ["x", "y"],
        "e": None,
        "f": "text",
        "g": "",
    }
    config = load_config(None, ["train.lr=1e-3", "name=2024", "train.batch_size=null", "train.threads=2"])
    assert config.train.lr == 1e-3 and config.name == "2024"  # a number given to a text field stays text
    assert config.train.batch_size is None and config.train.threads == 2


def test_a_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["train.lr=0.001", "mix.schedule=interleave", "mix.ratio=3"])
    (tmp_path / "c.yaml").write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], r"config train\.lrr \(--set train\.lrr=1\): unknown key 'lrr'; did you mean 'lr'"),
        (["trian.lr=1"], r"config trian \(--set trian\.lr=1\): unknown key 'trian'; did you mean 'train'\?"),
        (["train.lr=fast"], r"config train\.lr \(--set train\.lr=fast\): Input should be a valid number"),
        (["mix.ratio=-1"], r"config mix\.ratio \(--set mix\.ratio=-1\): ratio must be a finite number >= 0"),
        (["mix.ratio=.nan"], r"config mix\.ratio \(--set mix\.ratio=\.nan\): ratio must be a finite number"),
        (["mix.schedule=random"], r"config mix\.schedule \(--set mix\.schedule=random\): Input should be"),
        (["train.lr"], r"config --set train\.lr: expected section\.key=value \(e\.g\. --set train\.lr=1e-4"),
    ],
)
def test_bad_overrides_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_a_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.001\n  epoch: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config train\.epoch \(.*run\.yaml\): unknown key") as err:
        load_config(path)
    assert err.value.field.startswith("train.epoch")


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  lr: [0.1\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("name: x\n\ttrain: 1\n", encoding="utf-8")  # a tab indent: the error is on line 2
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: invalid YAML"):
        load_config(path)
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert load_config(tmp_path / "empty.yaml") == RunConfig()


def test_ratio_below_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"mix\.ratio"):
        build_config({"mix": {"ratio": -0.5}})
    assert MixConfig(ratio=0).ratio == 0  # zero is allowed: task data only


def test_sections_refuse_a_typo_on_assignment() -> None:
    config = RunConfig()
    with pytest.raises(ValueError, match="ratio must be"):
        config.mix.ratio = -1


def test_stage_hash_is_stable_and_sensitive() -> None:
    base = RunConfig()
    same = load_config(None, [])
    assert base.stage_hash("mix", "sample") == same.stage_hash("mix", "sample")
    assert len(base.stage_hash("mix")) == 12
    changed_mix = load_config(None, ["mix.seed=1"])
    assert changed_mix.stage_hash("mix") != base.stage_hash("mix")
    # A stage is keyed only by the sections it reads...
    changed_train = load_config(None, ["train.lr=0.001"])
    assert changed_train.stage_hash("mix", "sample") == base.stage_hash("mix", "sample")
    assert changed_train.stage_hash("train") != base.stage_hash("train")
    # ...and by the stages upstream of it.
    assert base.stage_hash("mix", upstream=("a",)) != base.stage_hash("mix", upstream=("b",))
    assert base.stage_hash("mix") != base.stage_hash("sample")
    # The same values however they were given (kwargs, overrides in another order) give the same key.
    built = RunConfig(mix=MixConfig(seed=1, ratio=10.0))
    assert built.stage_hash("mix") == load_config(None, ["mix.ratio=10", "mix.seed=1"]).stage_hash("mix")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epochs=0"], r"config train\.epochs \(--set [^)]*\): Input should be greater than 0"),
        (["train.lr=-1e-4"], r"config train\.lr \(--set [^)]*\): Input should be greater than 0"),
        (
            ["train.micro_batch_size=0"],
            r"config train\.micro_batch_size \(--set [^)]*\): .*greater than or equal to 1",
        ),
        (["train.batch_size=0"], r"config train\.batch_size \(--set [^)]*\): .*greater than or equal to 1"),
        (["train.max_length=0"], r"config train\.max_length"),
        (["train.warmup_ratio=1.5"], r"config train\.warmup_ratio \(--set [^)]*\): .*less than or equal"),
        (["eval.batch_size=0"], r"config eval\.batch_size"),
        (["diversify.k=0"], r"config diversify\.k"),
        (["sample.sampling.top_p=0"], r"config sample\.sampling\.top_p"),
        (["fact_based.n_facts=0"], r"config fact_based\.n_facts"),
    ],
)
def test_bad_values_fail_at_load(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_values_at_the_edges_are_valid() -> None:
    config = load_config(None, ["train.epochs=0.5", "train.batch_size=3", "train.micro_batch_size=2"])
    assert config.train.epochs == 0.5  # fractional epochs train on part of the data
    assert config.train.batch_size == 3  # the last micro-batch of a step may be short
    assert load_config(None, ["train.warmup_ratio=0", "train.max_grad_norm=null"]).train.max_grad_norm is None
