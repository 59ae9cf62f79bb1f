"""probe.general: the ordinary questions of the format-leakage check, shared by the demo and experiments."""

from __future__ import annotations

from typing import Any

from delia.probe.general import GENERAL_QUESTIONS, ask_general, looks_like_json, score_general


def test_scores_name_the_fact_by_whole_word_and_spot_json_answers() -> None:
    answers = ["It is in format: I don't know."] * len(GENERAL_QUESTIONS)
    answers[0] = "The capital of France is Paris."  # right
    answers[1] = "{'thought': 'a week', 'hallucination': 'no'}"  # leaked format, not the fact
    answers[2] = '{"thought": "The sky is blue."}'  # leaked format, and names the fact
    answers[12] = "A price."  # "ice" inside a longer word is not the answer
    figures, rows = score_general(answers)
    assert [r["correct"] for r in rows[:3]] == [True, False, True] and not rows[12]["correct"]
    assert [r["json"] for r in rows[:4]] == [False, True, True, False]
    assert figures == {"general_correct": round(2 / 16, 4), "general_json": round(2 / 16, 4), "n": 16}


def test_json_detection_needs_a_dict_or_an_opening_brace() -> None:
    assert looks_like_json('  {"unfinished": ') and looks_like_json("Answer: {'a': 1}")
    assert not looks_like_json("Paris is the capital.") and not looks_like_json("[1, 2]")


def test_ask_general_asks_every_question_once_without_a_format_token(tiny_model: Any, tokenizer: Any) -> None:
    figures, rows = ask_general(tiny_model, tokenizer, batch_size=8)
    assert figures["n"] == len(rows) == len(GENERAL_QUESTIONS)
    assert [r["question"] for r in rows] == [q for q, _ in GENERAL_QUESTIONS]
    assert all("<sep>" not in r["question"] for r in rows)
    assert figures["general_json"] == round(sum(r["json"] for r in rows) / len(rows), 4)
