"""Command flags as config overrides: schema defaults, flags applied after --config and --set."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from delia.cli._config import EXPLICIT_NONE, command_config, config_option, schema_default
from delia.core.config import SamplingConfig
from delia.core.errors import ConfigError


def test_schema_default_reads_a_sections_own_factory() -> None:
    assert schema_default("sample.sampling.temperature") == SamplingConfig().temperature
    assert schema_default("diversify.sampling.temperature") == 0.9  # DiversifyConfig's own sampling
    assert schema_default("eval.label_key") == "hallucination"


def test_a_flag_is_the_same_as_its_set_override() -> None:
    by_flag = command_config(None, [], {"sample.sampling.temperature": 0.5, "mix.ratio": None})
    by_set = command_config(None, ["sample.sampling.temperature=0.5"], {})
    assert by_flag == by_set
    assert by_flag.mix.ratio == schema_default("mix.ratio")  # None: not given


def test_flags_apply_after_the_file_and_set(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("mix:\n  ratio: 3\n  seed: 7\ntrain:\n  threads: 2\n")
    loaded = command_config(config, ["mix.seed=8"], {"mix.ratio": 5.0})
    assert (loaded.mix.ratio, loaded.mix.seed, loaded.train.threads) == (5.0, 8, 2)


def test_explicit_none_clears_a_key() -> None:
    assert command_config(None, [], {"eval.label_key": EXPLICIT_NONE}).eval.label_key is None


def test_a_bad_flag_value_names_its_key_and_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"config mix\.ratio \(command line\): ratio must be"):
        command_config(None, [], {"mix.ratio": -1.0})


def test_help_shows_the_key_and_the_schema_default() -> None:
    app = typer.Typer()

    @app.command()
    def show(
        temperature: float | None = config_option("sample.sampling.temperature", "--temperature"),
    ) -> None:
        print(temperature)

    wide = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["--help"]).output
    assert "(config sample.sampling.temperature; default 0.7)" in wide
    assert CliRunner().invoke(app, []).output.strip() == "None"
