"""`--search budget`: each method's candidates scored on the dev split at each budget, the best one tested
with every grid seed, DELIA paired with the others on the same test items; resumable like a grid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from delia.core.errors import DeliaError
from delia.experiment.budget_search import BUDGET_FILE, budget_spec, run_budget_search
from delia.experiment.grid import cell_config
from delia.experiment.records import Cell
from delia.experiment.spec import ExperimentSpec

DEV = ["eval.builder_options.split=train", "eval.limit=2"]  # other contexts than the test cells'


def budget_grid(tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]) -> ExperimentSpec:
    spec = tiny_spec(tmp_path, methods=["delia", "common_it"], seeds=[0, 1])
    spec.budget.steps = [2]
    spec.budget.candidates = {"delia": [["train.lr=1e-5", "mix.ratio=1"], ["train.lr=3e-3", "mix.ratio=0"]]}
    spec.budget.set = DEV
    spec.budget.metric = "json_format"
    return spec


def test_every_cell_has_its_budget_and_only_dev_cells_the_dev_split(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = budget_grid(tmp_path, tiny_spec)
    derived = budget_spec(spec, {(2, "delia"): ["train.lr=3e-3", "mix.ratio=0"]})
    dev = cell_config(derived, Cell("delia", "delia", 4, None, 0, "b2-delia-c0"), derived.entry("delia"))
    assert (dev.train.max_steps, dev.train.lr, dev.mix.ratio, dev.eval.limit) == (2, 1e-5, 1, 2)
    test = cell_config(derived, Cell("delia", "delia", 4, None, 1, "b2-delia"), derived.entry("delia"))
    assert (test.train.max_steps, test.train.lr, test.mix.ratio) == (2, 3e-3, 0)
    assert test.eval.limit == spec_eval_limit(spec) and test.seed == 1
    assert "b2-common_it" not in derived.grid.variants  # not chosen yet: no test cell


def spec_eval_limit(spec: ExperimentSpec) -> int | None:
    base = spec.base if isinstance(spec.base, dict) else {}
    return base.get("eval", {}).get("limit")


def test_a_search_runs_dev_then_test_and_pairs_delia_with_the_others(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = budget_grid(tmp_path, tiny_spec)
    planned = run_budget_search(spec, log=lambda line: None, run_cells=False)
    assert [row.chosen for row in planned.rows] == [None, None]  # nothing has run: nothing chosen
    assert not (Path(spec.out) / BUDGET_FILE).exists()  # a dry run writes nothing

    result = run_budget_search(spec, log=lambda line: None)
    delia, common = result.rows
    assert [c.set for c in delia.candidates] == spec.budget.candidates["delia"]
    assert common.candidates[0].set == [] and common.chosen == []  # no candidates: as configured
    dev_scores = [c.value for c in delia.candidates]
    assert delia.chosen == delia.candidates[dev_scores.index(max(dev_scores))].set  # ties: the first listed
    for row in result.rows:
        assert row.test is not None and len(row.test.values) == 2  # every grid seed
        assert row.test.train_steps == [2, 2]  # exactly the budget
        assert all(c.train_steps == [2] for c in row.candidates)
    (pair,) = result.paired
    assert pair.control == "common_it" and pair.variant == "b2" and pair.n_seeds == 2
    written = json.loads((Path(spec.out) / BUDGET_FILE).read_text())
    assert written["rows"][0]["chosen"] == delia.chosen

    def no_cell_runs(line: str) -> None:
        assert not line.startswith("["), f"a finished cell ran again: {line}"  # cell logs are "[cell] ..."

    again = run_budget_search(spec, log=no_cell_runs)
    assert again.rows == result.rows  # resumed: every cell was finished


def test_candidates_for_a_method_not_in_the_grid_are_refused(
    tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]
) -> None:
    spec = budget_grid(tmp_path, tiny_spec)
    spec.budget.candidates["tell"] = [["train.lr=1e-4"]]
    with pytest.raises(DeliaError, match=r"budget.candidates names \['tell'\]"):
        run_budget_search(spec, log=lambda line: None, run_cells=False)
    spec.budget.candidates.pop("tell")
    spec.budget.methods = ["delia", "w/o all"]
    with pytest.raises(DeliaError, match=r"budget.methods names \['w/o all'\]"):
        run_budget_search(spec, log=lambda line: None, run_cells=False)
