"""The demo's legs, its general probe's scoring and its field accuracy."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_legs_share_the_task_and_differ_in_method(tmp_path: Path) -> None:
    from delia.core.config import load_config
    from delia.demo import LEGS, leg_configs

    base = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    legs = leg_configs(base, tmp_path)
    assert [leg.method for leg in legs] == list(LEGS)
    assert len({leg.stage_hash("task", "seed") for leg in legs}) == 1
    matched = legs[LEGS.index("common_it_matched")]
    assert matched.matched_to == str(tmp_path / "delia")
    assert "<sep>" in base.tokens.add and base.task.builder == base.eval.builder == "demo"


def test_demo_probe_scoring_counts_facts_and_json_leaks() -> None:
    from delia.demo import score_probe

    expected = [
        {"kind": "general", "answers": ["7", "seven"]},
        {"kind": "general", "answers": ["ice"]},
        {"kind": "plain", "answers": ["oslo"]},
        {"kind": "plain", "answers": ["lima"]},
    ]
    predictions = ["About 93.7 million.", "It is called ice.", '{"name": "A", "city": "Oslo"}', "In Lima."]
    figures, rows = score_probe(predictions, expected)
    assert figures == {"general_correct": 0.5, "general_json": 0.0, "plain_correct": 1.0, "plain_json": 0.5}
    assert [r["json"] for r in rows] == [False, False, True, False]


def test_field_accuracy_needs_every_value(tmp_path: Path) -> None:
    from delia.demo import field_accuracy

    reference = '{"name": "Mara Lind", "city": "Oslo", "job": "baker"}'
    rows = [
        {"prediction": reference, "reference": reference},
        {"prediction": '{"name": "Mara Lind", "city": "Oslo", "job": "pilot"}', "reference": reference},
        {"prediction": "Mara Lind lives in Oslo.", "reference": reference},
        {"prediction": "{'name': 'Mara Lind', 'city': 'Oslo', 'job': 'baker'}", "reference": reference},
    ]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert field_accuracy(tmp_path) == 0.5
