"""The paired headline, truncation flags and per-cell facts, on fake run directories written from each cell's
own config and plan (no model runs): change the config, and the report's facts change with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from delia.core.io import write_json
from delia.experiment import expand
from delia.experiment.grid import cell_config, cell_dir
from delia.experiment.records import Cell, ExperimentResults, read_record, write_record
from delia.experiment.report import write_report
from delia.experiment.results import write_results
from delia.experiment.runner import CELL_FILE, cell_record
from delia.experiment.spec import ExperimentSpec
from delia.methods import get_method
from delia.pipeline import load_task_examples

ITEMS = 10
# json_format per item: how many of the 10 items each method answers in format (the first ones).
IN_FORMAT = {"delia": 7, "common_it": 4, "common_it_matched": 9, "icl": 2, "w/o diverse": 6}
TRUNCATED = {"common_it": 2}  # items cut off: 20%, over the 5% flag


def item_scores(cell: Cell, index: int) -> dict[str, object]:
    hits = IN_FORMAT[cell.method] + (cell.seed if cell.method == "delia" else 0)  # DELIA's seeds disagree
    truncated = index >= ITEMS - TRUNCATED.get(cell.method, 0)
    return {"json_format": int(index < hits), "label": "x", "truncated": truncated}


def phrasing_of(index: int) -> tuple[str, str]:
    """(group, phrasing) of a fake eval item: even items seen (3 phrasings), odd ones unseen (2)."""
    return (
        ("seen", f"seen phrase {index % 3}")
        if index % 2 == 0
        else ("unseen", f"unseen phrase {index // 2 % 2}")
    )


def write_phrased_files(run_dir: Path, rows: list[dict[str, object]]) -> dict[str, object]:
    """Tag the items with their phrasing (prompt and group), write the training file the facts read
    (task examples phrased "seen phrase 0" and "1"; a diverse one that happens to read like an unseen
    phrasing, which must not count), and return metrics.json's `by_phrasing`."""
    for index, row in enumerate(rows):
        group, phrasing = phrasing_of(index)
        row["phrasing"], row["prompt"] = (
            group,
            [{"role": "user", "content": f"context {index}\n\n{phrasing}"}],
        )
    trained = [("task", "seen phrase 0"), ("task", "seen phrase 1"), ("diverse", "unseen phrase 1")]
    mixed = [
        {
            "messages": [
                {"role": "user", "content": f"ctx\n\n{text}"},
                {"role": "assistant", "content": "a"},
            ],
            "source": source,
        }
        for source, text in trained
    ]
    (run_dir / "mix").mkdir(parents=True, exist_ok=True)
    (run_dir / "mix" / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    by_phrasing = {}
    for group in ("seen", "unseen"):
        members = [r for r in rows if r["phrasing"] == group]
        values = {
            name: {"value": sum(float(r["scores"][name]) for r in members) / len(members), "n": len(members)}
            for name in ("json_format", "truncated")
        }
        by_phrasing[group] = {"n": len(members), "values": values}
    return by_phrasing


def write_fake_cell(spec: ExperimentSpec, cell: Cell, steps: int, phrased: bool = False) -> None:
    """A finished run directory as the pipeline leaves it, its plan.json from the cell's real plan; with
    `phrased`, eval items asked with seen and unseen phrasings."""
    run_dir = cell_dir(spec, cell)
    config = cell_config(spec, cell, spec.entry(cell.method))
    plan = get_method(config.method).plan(config, load_task_examples(config))
    write_json(run_dir / "plan.json", {"use_diverse": plan.use_diverse, "diversify": plan.diversify})
    if plan.diversify:
        counts = {"task_in": 4, "task_out": 8, "fallbacks": 1}
        write_json(run_dir / "diversify" / "manifest.json", {"hash": "h", "counts": counts, "seconds": 1.0})
        report = {"requested": 4, "accepted": 3, "accepted_llm": 2, "accepted_rule": 1, "fallbacks": 1}
        write_json(run_dir / "diversify" / "task.report.json", report)
    write_json(run_dir / "train" / "manifest.json", {"hash": "t", "steps": steps, "seconds": 2.0})
    rows: list[dict[str, object]] = [{"id": f"e{i}", "scores": item_scores(cell, i)} for i in range(ITEMS)]
    groups = write_phrased_files(run_dir, rows) if phrased else None
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = {
        name: {"value": sum(float(r["scores"][name]) for r in rows) / ITEMS, "n": ITEMS}
        for name in ("json_format", "truncated")
    }
    metrics = {"metric": "json_format", "n": ITEMS, "values": values}
    write_json(run_dir / "metrics.json", {**metrics, "by_phrasing": groups} if groups else metrics)
    write_record(run_dir / CELL_FILE, cell_record(spec, cell, 3.0))


def fake_experiment(spec: ExperimentSpec, phrased: bool = False) -> tuple[ExperimentResults, str]:
    expansion = expand(spec)
    for cell in expansion.cells:
        steps = 6 if cell.method in ("delia", "common_it_matched") else 2
        write_fake_cell(spec, cell, steps, phrased)
    results = write_results(spec, expansion, "delia experiment tiny.yaml")
    md, _ = write_report(Path(spec.out))
    return results, md.read_text()


@pytest.fixture
def tiny_grid(tmp_path: Path, tiny_spec: Callable[..., ExperimentSpec]) -> Callable[..., ExperimentSpec]:
    def build(name: str, **grid: object) -> ExperimentSpec:
        grid.setdefault("ratios", [1])
        spec = tiny_spec(tmp_path / name, **grid)
        spec.metrics = ["json_format", "truncated"]
        return spec

    return build


def test_paired_rows_are_delia_minus_each_control_over_seeds_and_items(
    tiny_grid: Callable[..., ExperimentSpec],
) -> None:
    results, text = fake_experiment(tiny_grid("a"))
    paired = {(r.control, r.metric): r for r in results.paired}
    matched = paired[("common_it_matched", "json_format")]
    # DELIA answers 7 (seed 0) and 8 (seed 1) of 10 in format; the matched control 9 in both.
    assert matched.difference == pytest.approx((7 + 8 - 18) / 20)
    assert matched.seeds == [0, 1] and matched.n_items == ITEMS and matched.n_seeds == 2
    assert matched.ci_low <= matched.difference <= matched.ci_high
    assert matched.pairs[0] == ["delia__n4__r1__s0", "common_it_matched__n4__r1__s0"]
    common = paired[("common_it", "json_format")]
    assert common.difference == pytest.approx((7 + 8 - 8) / 20) and common.control_ratio is None
    assert ("icl", "json_format") not in paired  # only the controls are paired
    # The report leads with the paired table; the t-intervals are the secondary column.
    first_section = text.split("\n## ")[1]
    assert first_section.startswith("Headline: DELIA minus its controls")
    assert "delia - common_it_matched" in first_section and "**-0.150**" in first_section
    assert "t over seeds" in first_section
    on_disk = read_record(Path(results.spec.out) / "results.json", ExperimentResults)
    assert on_disk is not None and on_disk.paired == results.paired


def test_truncation_is_shown_beside_format_scores_and_flagged(
    tiny_grid: Callable[..., ExperimentSpec],
) -> None:
    results, text = fake_experiment(tiny_grid("b"))
    common = next(r for r in results.summary if r.method == "common_it" and r.metric == "json_format")
    assert common.truncated == [0.2, 0.2]
    assert "; truncated 0.200 **2/2 cells > 5%**" in text
    assert "; truncated 0.000" in text  # DELIA's cells: none truncated, no flag
    assert "`common_it__n4__s0`: 20.0% of its answers truncated" in text
    assert "`delia__n4__r1__s0`: " not in text


def test_the_report_states_what_the_run_dirs_say_and_follows_a_config_change(
    tiny_grid: Callable[..., ExperimentSpec],
) -> None:
    on, on_text = fake_experiment(tiny_grid("on"))
    facts = {f.cell: f for f in on.facts}
    delia = facts["delia__n4__r1__s0"]
    assert delia.diversified and delia.rewrites is not None and delia.rewrites.accepted == 3
    assert delia.train_steps == 6
    assert not facts["common_it__n4__s0"].diversified and facts["common_it__n4__s0"].train_steps == 2
    row = "| `delia__n4__r1__s0` | yes | 3/4 (llm 2, rule 1); 1 without one; task examples 4 -> 8 | 6 |"
    assert row in on_text

    off_spec = tiny_grid("off")
    off_spec.set = ["delia.diversify=false"]  # DELIA's plan no longer rewrites instructions
    off, off_text = fake_experiment(off_spec)
    assert not any(f.diversified for f in off.facts)
    assert "| `delia__n4__r1__s0` | no (plan: diversify false) | - | 6 |" in off_text
    assert row not in off_text


def test_a_results_file_without_the_new_fields_still_reports(
    tiny_grid: Callable[..., ExperimentSpec],
) -> None:
    spec = tiny_grid("old")
    fake_experiment(spec)
    path = Path(spec.out) / "results.json"
    data = json.loads(path.read_text())
    for key in ("paired", "facts"):
        del data[key]
    for row in data["cells"]:
        del row["truncated"]
    for row in data["summary"]:
        del row["truncated"]
    path.write_text(json.dumps(data))
    md, _ = write_report(Path(spec.out))
    text = md.read_text()
    assert "Not recorded: this results.json was written before paired differences" in text
    assert "Not recorded: this results.json was written before per-cell facts" in text
    # the truncated share still comes from the `truncated` metric's own rows
    assert "; truncated 0.200 **2/2 cells > 5%**" in text


def test_the_committed_experiments_reports_regenerate(tmp_path: Path) -> None:
    from delia.experiment.report.render import experiment_document

    root = Path(__file__).resolve().parents[2] / "experiments"
    for name in ("sep-json", "translation"):
        results = read_record(root / name / "results.json", ExperimentResults)
        assert results is not None, name
        text = experiment_document(results, None, None, None, tmp_path / name).to_markdown(tmp_path)
        assert "Headline: DELIA minus its controls" in text and "Every summary row" in text


def test_seen_and_unseen_phrasings_are_reported_apart_with_what_each_cell_trained_on(
    tiny_grid: Callable[..., ExperimentSpec],
) -> None:
    results, text = fake_experiment(tiny_grid("phrased"), phrased=True)
    summary = {(r.method, r.metric): r for r in results.summary}
    delia = summary[("delia", "json_format")].by_phrasing
    # DELIA's first 7 (seed 0) and 8 (seed 1) items are in format: seen = even items, unseen = odd ones.
    assert delia is not None and delia["seen"].values == [0.8, 0.8] and delia["unseen"].values == [0.6, 0.8]
    assert delia["unseen"].mean == pytest.approx(0.7) and delia["unseen"].n_eval == 5
    common = summary[("common_it", "json_format")].by_phrasing
    assert common is not None and common["seen"].truncated == [0.2, 0.2]  # item 8 is seen, item 9 unseen
    section = text.split("## Seen and unseen instruction phrasings")[1].split("\n## ")[0]
    line = next(row for row in section.splitlines() if row.startswith("| 4 | delia (r=1) |"))
    assert "| 0.800 [0.800, 0.800] (2 seeds, n=5); truncated 0.000 |" in line and "| -0.100 |" in line
    assert "| 6/10 (60%) | 0/10 (0%) |" in line  # 3 of 5 seen items per seed; the diverse look-alike not
    common_line = next(row for row in section.splitlines() if row.startswith("| 4 | common_it |"))
    assert "truncated 0.200 **2/2 seeds > 5%**" in common_line
    unseen = next(
        r
        for r in results.paired
        if (r.control, r.metric, r.phrasing) == ("common_it_matched", "json_format", "unseen")
    )
    # matched: the first 9 items in format in both seeds -> unseen 4/5; DELIA 3/5 and 4/5
    assert unseen.difference == pytest.approx((0.6 - 0.8 + 0.8 - 0.8) / 2) and unseen.n_items == 5
    assert "json_format (unseen phrasings)" in text
    assert not any(r.phrasing for r in results.paired if r.metric != "json_format")  # headline metric only
    facts = {fact.cell: fact for fact in results.facts}
    coverage = facts["delia__n4__r1__s0"].phrasings
    assert coverage is not None
    assert (coverage["seen"].items, coverage["seen"].phrasings, coverage["seen"].trained) == (5, 3, 3)
    assert (coverage["unseen"].items, coverage["unseen"].phrasings, coverage["unseen"].trained) == (5, 2, 0)
    assert "seen 3/5 (3 phrasings); unseen 0/5 (2 phrasings)" in text


def test_without_groups_or_measurements_the_report_says_so(tiny_grid: Callable[..., ExperimentSpec]) -> None:
    results, text = fake_experiment(tiny_grid("plain"))
    assert all(row.by_phrasing is None for row in results.summary)
    assert all(row.phrasing is None for row in results.paired)
    assert all(fact.phrasings is None for fact in results.facts)
    assert "Not measured: no eval example carried a phrasing group" in text
    assert "Not measured: no cell has per-cell probe results" in text
    assert "eval items whose phrasing it trained on" not in text


def test_a_corpus_metric_is_paired_as_its_sentence_mean_under_its_own_name() -> None:
    """chrF++ of a corpus is not the mean of sentence chrF++: the pairing says which one it is."""
    from types import SimpleNamespace

    from delia.experiment.paired import CellItems, paired_metric, paired_row

    assert paired_metric("chrf++") == "sentence chrf++" and paired_metric("json_format") == "json_format"
    rows = {
        name: SimpleNamespace(cell=f"{name}-s{seed}", seed=seed, ratio=None)
        for name, seed in (("delia", 0), ("common_it", 0))
    }
    items = {
        "delia-s0": CellItems(scores={"a": {"chrf++": 40.0}, "b": {"chrf++": 20.0}}),
        "common_it-s0": CellItems(scores={"a": {"chrf++": 30.0}, "b": {"chrf++": 20.0}}),
    }
    pairs = [(rows["delia"], rows["common_it"])]
    row = paired_row((None, 40, 1.0), "common_it", "sentence chrf++", pairs, items)  # type: ignore[arg-type]
    assert row is not None and row.metric == "sentence chrf++"
    assert (row.difference, row.delia_mean, row.control_mean, row.n_items) == (5.0, 30.0, 25.0, 2)
