"""The committed `<sep>` experiment configs hold what issue 18 asks of them: the methods and the matched
control, the sizes, ratio, seeds and eval contexts, diversification on, and instruction phrasings held out of
the task and asked at evaluation (checked on the real data, no model run)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from delia.experiment import expand, load_experiment
from delia.experiment.grid import cell_config
from delia.experiment.spec import ExperimentSpec
from delia.methods import get_method
from delia.pipeline import load_task_examples
from delia.pipeline.stages.task import load_eval_examples

ROOT = Path(__file__).resolve().parents[2]
SEP_JSON = ROOT / "configs" / "experiments" / "sep-json.yaml"
RATIOS = ROOT / "configs" / "experiments" / "sep-json-ratios.yaml"
ISSUE_METHODS = {
    "delia",
    "common_it",
    "common_it_matched",
    "w/o diverse",
    "w/o diversified",
    "w/o all",
    "random_init",
    "mean_embedding",
    "dmt",
    "tell",
    "diverse_only",
}


@pytest.fixture()
def in_root(monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    """The configs' paths are relative to the repository root, as `delia experiment` is run."""
    monkeypatch.chdir(ROOT)


def last_paragraph(text: str) -> str:
    return text.rsplit("\n\n", 1)[-1].strip()


def spec_cells(path: Path) -> tuple[ExperimentSpec, list]:
    spec = load_experiment(path)
    return spec, expand(spec).cells


def test_sep_json_has_the_issues_grid(in_root: None) -> None:
    spec, cells = spec_cells(SEP_JSON)
    assert {entry.name for entry in spec.grid.methods} == ISSUE_METHODS
    assert spec.grid.task_sizes == [30, 100] and spec.grid.ratios == [10] and spec.grid.seeds == [0, 1, 2]
    delia = [c for c in cells if c.method == "delia"]
    matched = [c for c in cells if c.method == "common_it_matched"]
    assert len(delia) == len(matched) == 6 and {c.match for c in matched} == {c.name for c in delia}
    assert {(c.method, c.seed) for c in cells} == {(m, s) for m in ISSUE_METHODS for s in (0, 1, 2)}


def test_sep_json_diversifies_delia_and_collapses_the_w_o_diversified_rows(in_root: None) -> None:
    spec, cells = spec_cells(SEP_JSON)
    plans = {}
    for label in ("delia", "w/o diversified", "w/o all", "w/o diverse"):
        cell = next(c for c in cells if c.method == label and c.task_size == 30 and c.seed == 0)
        config = cell_config(spec, cell, spec.entry(label))
        assert config.diversify.enabled and config.diversify.k == 4
        assert config.eval.limit is None
        plans[label] = get_method(config.method).plan(config, load_task_examples(config))
    assert plans["delia"].diversify and plans["w/o diverse"].diversify
    assert not plans["w/o diversified"].diversify and not plans["w/o all"].diversify
    assert plans["w/o diversified"].task_transform is not None and plans["delia"].task_transform is None


@pytest.mark.parametrize("path", [SEP_JSON, RATIOS], ids=["sep-json", "sep-json-ratios"])
def test_the_answer_budget_covers_twice_the_tasks_longest_answer(
    in_root: None, tokenizer: Any, path: Path
) -> None:
    """The eval's own references are templated and short: a budget from them would cut trained answers."""
    spec, cells = spec_cells(path)
    config = cell_config(spec, cells[0], spec.entry(cells[0].method))
    whole_task = config.task.model_copy(update={"size": None})
    answers = [e.response for e in load_task_examples(config.model_copy(update={"task": whole_task}))]
    longest = max(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"])
    assert isinstance(config.eval.max_new_tokens, int) and config.eval.max_new_tokens >= 2 * longest


@pytest.mark.parametrize("path", [SEP_JSON, RATIOS], ids=["sep-json", "sep-json-ratios"])
def test_phrasings_held_out_of_the_task_are_asked_at_evaluation(in_root: None, path: Path) -> None:
    spec, cells = spec_cells(path)
    cell = next(c for c in cells if c.method == "delia")
    config = cell_config(spec, cell, spec.entry("delia"))
    whole_task = config.task.model_copy(update={"size": None})  # every record, not the cell's subset
    full = load_task_examples(config.model_copy(update={"task": whole_task}))
    trained = {last_paragraph(example.instruction) for example in full}
    evals = load_eval_examples(config)
    groups = Counter(example.meta["phrasing"] for example in evals)
    assert groups == {"seen": 200, "unseen": 200}
    contexts = {example.instruction.rsplit("\n\n\n", 1)[0] for example in evals}
    assert len(contexts) == 200  # 200 dev500 contexts, each asked both ways
    unseen = {last_paragraph(e.instruction) for e in evals if e.meta["phrasing"] == "unseen"}
    seen = {last_paragraph(e.instruction) for e in evals if e.meta["phrasing"] == "seen"}
    assert not unseen & trained and seen <= trained
    assert len(trained) == 60 - 12 and len(unseen) > 12  # the held-out 12 and the new ones written for eval


def test_the_budget_search_tunes_on_contexts_the_test_never_uses(in_root: None) -> None:
    from delia.experiment.budget_search import budget_spec, cell_of, dev_variant, test_variant

    spec = load_experiment(SEP_JSON)
    budget = spec.budget.steps[0]
    chosen = {(budget, "delia"): spec.budget.candidates["delia"][0]}
    derived = budget_spec(spec, chosen)
    delia = spec.entry("delia")

    def contexts(variant: str) -> set[str]:
        config = cell_config(derived, cell_of(delia, 30, 0, variant), delia)
        assert config.train.max_steps == budget
        return {example.instruction.rsplit("\n\n\n", 1)[0] for example in load_eval_examples(config)}

    dev, test = contexts(dev_variant(budget, "delia", 0)), contexts(test_variant(budget, "delia"))
    assert len(dev) == 48 and len(test) == 200 and not dev & test
    assert [len(spec.budget.candidates[m]) for m in ("delia", "common_it")] == [4, 4]  # equal tuning effort


def test_a_grid_narrowed_by_set_keeps_the_files_labelled_entries(in_root: None) -> None:
    """`--set grid.methods=[...]` with the file's labels picks those entries, overrides and all."""
    spec = load_experiment(SEP_JSON, ["grid.methods=[delia, common_it, w/o diverse, w/o diversified]"])
    entries = {entry.name: entry for entry in spec.grid.methods}
    assert list(entries) == ["delia", "common_it", "w/o diverse", "w/o diversified", "common_it_matched"]
    assert (entries["w/o diverse"].method, entries["w/o diverse"].set) == ("delia", ["delia.diverse=false"])
    assert entries["w/o diversified"].set == [
        "delia.diversify=false",
        "delia.canonical_instruction=most_common",
    ]
    assert {cell.method for cell in expand(spec).cells} == set(entries)
