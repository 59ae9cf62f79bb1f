"""The README's figures about a committed experiment are that experiment's own results.json, rounded."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def test_the_translation_controls_rows_match_their_results_file() -> None:
    readme = (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "experiments" / "translation-controls" / "results.json").read_text())
    paired = {(row["control"], row["metric"]): row for row in results["paired"]}
    for control, label in (
        ("common_it", "DELIA - common IT"),
        ("common_it_matched", "DELIA - matched common IT"),
    ):
        cells = []
        for metric in ("sentence chrf++", "sentence bleu"):
            row = paired[control, metric]
            text = f"{signed(row['difference'], 2)} [{signed(row['ci_low'], 2)}, {signed(row['ci_high'], 2)}]"
            cells.append(text)
        assert f"| {label} | {cells[0]} | {cells[1]} |" in readme
    summary = {(row["method"], row["metric"]): row for row in results["summary"]}
    for method, name in (
        ("delia", "DELIA"),
        ("common_it", "common IT"),
        ("common_it_matched", "matched common IT"),
    ):
        row = summary[method, "chrf++"]
        expected = f"{name} {row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
        assert re.search(re.escape(expected).replace(r"\ ", r"\s+"), readme), expected
    qa = {m: summary[m, "general_qa"]["mean"] for m in ("delia", "common_it", "common_it_matched")}
    assert f"DELIA answered {qa['delia']:.2f} of them correctly against {qa['common_it']:.2f}" in readme
    assert round(qa["common_it"], 2) == round(qa["common_it_matched"], 2)  # "for both common IT rows"
    assert all(summary[m, "format_leakage"]["mean"] == 0 for m in qa)
    assert all(row["ci_low"] < 0 < row["ci_high"] for row in results["paired"])  # "every interval contains 0"
    bleu = ", ".join(f"{summary[m, 'bleu']['mean']:.1f}" for m in ("delia", "common_it"))
    assert f"corpus BLEU {bleu} and {summary['common_it_matched', 'bleu']['mean']:.1f}" in readme


def test_the_sep_json_ratio_2_rows_match_their_results_file() -> None:
    readme = (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "experiments" / "sep-json-ratios" / "results.json").read_text())
    paired = {(row["control"], row["metric"], row["phrasing"]): row for row in results["paired"]}

    def interval(control: str, metric: str, phrasing: str | None = None) -> str:
        row = paired[control, metric, phrasing]
        return f"{signed(row['difference'], 3)} [{signed(row['ci_low'], 3)}, {signed(row['ci_high'], 3)}]"

    steps = {row["method"]: row["train_steps"] for row in results["facts"]}
    labels = {
        "common_it": f"DELIA - common IT ({steps['common_it']} steps)",
        "common_it_matched": f"DELIA - matched common IT ({steps['common_it_matched']} steps, DELIA's)",
    }
    assert steps["common_it_matched"] == steps["delia"]
    for control, label in labels.items():
        cells = [interval(control, "json_format"), interval(control, "label_accuracy")]
        cells.append(interval(control, "json_format", "unseen"))
        assert f"| {label} | {' | '.join(cells)} |" in readme
    matched = [row for key, row in paired.items() if key[0] == "common_it_matched"]
    assert all(row["ci_low"] <= 0 <= row["ci_high"] for row in matched)  # "every interval contains 0"
    assert {row["n_seeds"] for row in results["paired"]} == {1}  # "one seed"
    summary = {(row["method"], row["metric"]): row["mean"] for row in results["summary"]}
    methods = ("delia", "common_it", "common_it_matched")
    means = ", ".join(f"{summary[m, 'json_format']:.3f}" for m in methods)
    assert f"json_format {means}" in readme
    cut = ", ".join(f"{100 * summary[m, 'truncated']:.1f} %" for m in methods)
    assert f"truncated {cut}" in readme
    assert all(summary[m, "format_leakage"] == 0 for m in methods)
    qa = ", ".join(f"{summary[m, 'general_qa']:.2f}" for m in methods)
    assert f"named the known fact in {qa}" in readme
    seen, unseen = (paired["common_it_matched", "json_format", group] for group in ("seen", "unseen"))
    assert f"DELIA {unseen['delia_mean']:.3f} unseen vs {seen['delia_mean']:.3f}" in readme
    assert unseen["control_mean"] == seen["control_mean"]  # "matched ... both"
    assert f"matched {seen['control_mean']:.3f} both" in readme
    lead = paired["common_it_matched", "json_format", None]["difference"]
    label_gain = paired["common_it_matched", "label_accuracy", None]["difference"]
    assert f"matched is ahead on format by {-lead:.2f},\nDELIA on labels by {label_gain:.2f}" in readme
    facts = {row["method"]: row for row in results["facts"]}
    assert f"trained for DELIA's {steps['delia']} steps" in readme
    rewrites = facts["delia"]["rewrites"]
    assert f"{rewrites['accepted']} rewrites accepted of {rewrites['requested']}" in readme
    assert facts["delia"]["phrasings"]["seen"]["trained"] == 0  # "never trained on any eval phrasing"
