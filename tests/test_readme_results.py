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
