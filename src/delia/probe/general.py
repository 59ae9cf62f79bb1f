"""Side effects of tuning on ordinary questions: are facts the base model knows still answered, and are the
questions now answered in the task's JSON format anyway (format leakage)?

The questions are written for this project (none comes from a data set), each with the substrings an
answer must name. `make demo` asks them of every leg (delia.demo) and `delia experiment` of every cell
(experiment.cell_probes), so both report leakage the same way.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from delia.core.config import SamplingConfig
from delia.evaluate.jsonfmt import parse_answer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# (question, accepted answer substrings): facts the base model mostly gets right, checked by substring.
GENERAL_QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("How many days are in a week?", ("7", "seven")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is 2 plus 3?", ("5", "five")),
    ("What is the opposite of hot?", ("cold",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What language is spoken in Spain?", ("spanish",)),
    ("At what temperature in Celsius does water boil?", ("100",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("How many continents are there?", ("7", "seven")),
    ("What is frozen water called?", ("ice",)),
    ("What is the capital of Italy?", ("rome",)),
    ("How many hours are in a day?", ("24", "twenty-four")),
    ("What animal says 'moo'?", ("cow",)),
]
ANSWER_TOKENS = 24  # enough for a short factual answer; a JSON answer shows in its first token


def looks_like_json(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("{") or parse_answer(stripped)[0] is not None


def whole_word(answer: str) -> str:
    """The answer not inside a longer word or number ("ice" not in "price", "7" not in "93.7")."""
    return rf"(?<![\w.]){re.escape(answer)}(?![\w]|\.\d)"


def names_answer(prediction: str, answers: list[str] | tuple[str, ...]) -> bool:
    lowered = prediction.lower()
    return any(re.search(whole_word(answer), lowered) for answer in answers)


def general_prompts() -> list[list[dict[str, str]]]:
    """Each question as a one-turn chat, without any format token or task instruction."""
    return [[{"role": "user", "content": question}] for question, _ in GENERAL_QUESTIONS]


def score_general(predictions: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """({general_correct, general_json, n}, one row per question) for answers in GENERAL_QUESTIONS order."""
    rows = [
        {
            "question": question,
            "answers": list(answers),
            "prediction": prediction,
            "correct": names_answer(prediction, answers),
            "json": looks_like_json(prediction),
        }
        for prediction, (question, answers) in zip(predictions, GENERAL_QUESTIONS, strict=True)
    ]
    n = len(rows)
    figures = {
        "general_correct": round(sum(r["correct"] for r in rows) / n, 4),
        "general_json": round(sum(r["json"] for r in rows) / n, 4),
        "n": n,
    }
    return figures, rows


def ask_general(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy answers of `model` to the ordinary questions, scored (score_general)."""
    from delia.generation.local import LocalBackend  # torch

    backend = LocalBackend(model, tokenizer, batch_size=batch_size, progress=False)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=ANSWER_TOKENS)
    return score_general(backend.generate(general_prompts(), sampling))
