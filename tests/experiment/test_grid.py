"""Grid expansion: cells per method, ratio detection, cell configs, rejected ratios, spec errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from delia.core.errors import ConfigError
from delia.experiment import expand
from delia.experiment.grid import cell_config
from delia.experiment.records import Cell
from delia.experiment.spec import ExperimentSpec


def test_grid_runs_ratio_free_methods_once_per_size_and_seed(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = tiny_spec(tmp_path, task_sizes=[4, 6])
    cells = expand(spec).cells
    by_method: dict[str, list[Cell]] = {}
    for cell in cells:
        by_method.setdefault(cell.method, []).append(cell)
    # 2 sizes x 2 seeds, times 2 ratios for the ratio-reading ones
    assert len(by_method["delia"]) == 8 and {c.ratio for c in by_method["delia"]} == {0, 1}
    assert len(by_method["common_it_matched"]) == 8
    for name in ("common_it", "icl", "w/o diverse"):
        assert len(by_method[name]) == 4, name
        assert {c.ratio for c in by_method[name]} == {None}
    assert len({c.name for c in cells}) == len(cells)
    # a matched cell comes after the cell whose steps it copies, and names it
    position = {c.name: i for i, c in enumerate(cells)}
    for cell in by_method["common_it_matched"]:
        assert cell.match in position and position[cell.match] < position[cell.name]
        assert cell_config(spec, cell, spec.entry(cell.method)).matched_to.endswith(cell.match)


def test_cell_config_sets_seed_size_ratio_and_entry_overrides(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = tiny_spec(tmp_path)
    cell = Cell("w/o diverse", "delia", 4, None, 3)
    config = cell_config(spec, cell, spec.entry("w/o diverse"))
    assert (config.seed, config.train.seed, config.mix.seed, config.task.size) == (3, 3, 3, 4)
    assert config.options("delia").diverse is False and config.method == "delia"
    assert config.name == "wo-diverse__n4__s3"
    assert config.run_dir == str(tmp_path / "out" / "runs")


def test_a_ratio_the_method_rejects_is_skipped_with_its_reason(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = tiny_spec(tmp_path, methods=["dmt"], seeds=[0])
    expansion = expand(spec)
    assert [c.ratio for c in expansion.cells] == [1]
    assert len(expansion.skipped) == 1 and "ratio" in expansion.skipped[0].reason


def test_spec_errors_name_the_field(tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]) -> None:
    with pytest.raises(ConfigError, match="no entry named"):
        tiny_spec(tmp_path, methods=[{"name": "m", "method": "common_it_matched", "match": "x"}])
    with pytest.raises(ConfigError, match=r"grid\.bogus"):
        tiny_spec(tmp_path, bogus=1)
    with pytest.raises(ConfigError, match="two entries"):
        tiny_spec(tmp_path, methods=["delia", "delia"])


def test_a_grid_with_delia_gets_the_step_matched_control(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = tiny_spec(tmp_path, methods=["delia", "common_it"], seeds=[0, 1])
    control = spec.entry("common_it_matched")
    assert (control.method, control.match) == ("common_it_matched", "delia")
    cells = expand(spec).cells
    delia = {(c.task_size, c.ratio, c.seed, c.variant): c.name for c in cells if c.method == "delia"}
    matched = [c for c in cells if c.method == "common_it_matched"]
    assert {(c.task_size, c.ratio, c.seed, c.variant): c.match for c in matched} == delia
    for cell in matched:
        assert cell_config(spec, cell, control).matched_to == str(spec.runs_dir / cell.match)


def test_the_control_is_not_added_twice_nor_when_opted_out_nor_without_delia(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    listed = tiny_spec(tmp_path)  # lists common_it_matched itself
    assert [e.method for e in listed.grid.methods].count("common_it_matched") == 1
    opted_out = tiny_spec(tmp_path, methods=["delia", "common_it"], controls=False)
    assert [e.name for e in opted_out.grid.methods] == ["delia", "common_it"]
    no_delia = tiny_spec(tmp_path, methods=["common_it", "icl"])
    assert [e.name for e in no_delia.grid.methods] == ["common_it", "icl"]


def test_a_record_without_an_answer_stops_the_grid_before_any_cell(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    from delia.core.errors import DeliaError
    from delia.experiment.runner import run_grid

    task = tmp_path / "task.jsonl"
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    task.write_text(
        json.dumps({"messages": turns}) + "\n" + json.dumps({"messages": turns[:1]}) + "\n", encoding="utf-8"
    )
    spec = tiny_spec(tmp_path, methods=["common_it"], seeds=[0])
    assert isinstance(spec.base, dict)
    spec = spec.model_copy(update={"base": spec.base | {"task": {"train": str(task), "format": "messages"}}})
    with pytest.raises(DeliaError, match=r"task\.jsonl:2: no final assistant turn"):
        run_grid(spec, expand(spec).cells, quiet=True)
    assert not any(Path(spec.out).rglob("cell.json"))  # no cell ran


def test_a_malformed_set_entry_is_named_by_its_place_in_the_experiment_file(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = tiny_spec(tmp_path, methods=["common_it"], seeds=[0])
    spec.source = "grid.yaml"
    spec.set = [*spec.set, "model.device"]
    with pytest.raises(ConfigError) as raised:
        expand(spec)
    assert (
        str(raised.value)
        == "config grid.yaml: set: model.device: expected section.key=value (e.g. train.lr=1e-4)"
    )
    spec.set = spec.set[:-1]
    spec.grid.methods[0].set = ["=3"]
    with pytest.raises(ConfigError, match=r"grid\.yaml: grid\.methods\[common_it\]\.set: =3: expected"):
        expand(spec)


def test_cell_key_ignores_checkpoint_spacing(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    """Turning checkpoints on in a grid's `set:` keeps its finished cells finished."""
    from delia.experiment.grid import config_hash

    spec = tiny_spec(tmp_path)
    cell = expand(spec).cells[0]
    config = cell_config(spec, cell, spec.entry(cell.method))
    spaced = config.model_copy(update={"train": config.train.model_copy(update={"checkpoint_every": 5})})
    assert config_hash(spaced) == config_hash(config)
    slower = config.model_copy(update={"train": config.train.model_copy(update={"lr": 0.5})})
    assert config_hash(slower) != config_hash(config)
