"""The diversification axes: one LLM prompt (with a worked example) per axis, and chatter removal.

A small model imitates far better than it follows directions, so each prompt is a system turn naming the
axis plus one demonstration exchange, then the instruction to rewrite. Axes with two directions (length,
register) pick one per rewrite.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from delia.errors import ConfigError
from delia.synth.backends.base import Message
from delia.synth.rules import RULES

DEMO = (
    "Read the review above and decide whether it is positive or negative. "
    "Write your answer in the {tok} format."
)


@dataclass(frozen=True)
class Direction:
    directive: str  # what the system turn asks for
    demo: str  # the demonstration rewrite of DEMO


AXES: dict[str, tuple[Direction, ...]] = {
    "vocabulary": (
        Direction(
            "Replace the words with synonyms and keep the sentence structure.",
            "Go through the review above and judge whether it is favourable or unfavourable. "
            "Give your verdict in the {tok} format.",
        ),
    ),
    "syntax": (
        Direction(
            "Change the sentence structure: merge or split sentences, reorder clauses, use passive voice.",
            "Whether the review above is positive or negative is for you to decide after reading it, "
            "and the answer should be written in the {tok} format.",
        ),
    ),
    "length": (
        Direction(
            "Make it shorter: say the same thing in fewer words.",
            "Decide if the review above is positive or negative; answer in the {tok} format.",
        ),
        Direction(
            "Make it longer: spell out the same request in more detail, adding no new requirement.",
            "Carefully read the review above from start to finish, weigh what the writer says, and then "
            "decide whether their overall opinion is positive or negative. When you answer, write it in the "
            "{tok} format.",
        ),
    ),
    "register": (
        Direction(
            "Make the tone more formal.",
            "Kindly peruse the review above and determine whether its sentiment is positive or negative. "
            "Your answer is to be provided in the {tok} format.",
        ),
        Direction(
            "Make the tone casual and friendly.",
            "Read that review up there and tell me if it's positive or negative, okay? "
            "Just answer in the {tok} format.",
        ),
    ),
    "persona": (
        Direction(
            "Say it as a specific person (a teacher, a manager, a coach) would, without changing the task.",
            "As your editor, I need you to read the review above and tell me whether it is positive or "
            "negative. Please write your answer in the {tok} format.",
        ),
    ),
    "constraint_order": (
        Direction(
            "Put the parts of the instruction in a different order, e.g. the format requirement first.",
            "Write your answer in the {tok} format, after reading the review above and deciding whether it "
            "is positive or negative.",
        ),
    ),
    "question_vs_command": (
        Direction(
            "Turn the command into a polite question (or a question into a command).",
            "Could you read the review above and decide whether it is positive or negative, writing your "
            "answer in the {tok} format?",
        ),
    ),
}


def check_axes(axes: list[str]) -> None:
    if not axes:
        raise ConfigError("diversify.axes", "needs at least one axis")
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise ConfigError("diversify.axes", f"unknown axes {unknown}; choose from {sorted(AXES)}")


def axis_kind(axis: str) -> str:
    """'llm+rule' when a rule-based fallback exists for the axis, else 'llm'."""
    return "llm+rule" if axis in RULES else "llm"


def pick_direction(axis: str, rng: random.Random) -> int:
    return rng.randrange(len(AXES[axis]))


def rewrite_prompt(axis: str, direction: int, instruction: str, keep_tokens: list[str]) -> list[Message]:
    """System turn (the axis) + one demonstration exchange + the instruction to rewrite."""
    spec = AXES[axis][direction]
    token = keep_tokens[0] if keep_tokens else "JSON"
    kept = ", ".join(keep_tokens) if keep_tokens else "names and special tokens"
    system = (
        f"You rewrite instructions. {spec.directive} Keep the meaning. Copy {kept} exactly as written. "
        "Reply with the rewritten instruction only."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Rewrite: {DEMO.format(tok=token)}"},
        {"role": "assistant", "content": spec.demo.format(tok=token)},
        {"role": "user", "content": f"Rewrite: {instruction}"},
    ]


PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|the rewritten|rewritten|new instruction|"
    r"instruction|rewrite)\b[^\n]*?:\s*",
    re.I,
)
LABEL = re.compile(r"^\s*(?:rewritten(?: instruction)?|rewrite|instruction|answer|output)\s*:\s*", re.I)
QUOTES = "\"'“”‘’`"


def clean_rewrite(text: str) -> str:
    """Strip chatter ('Here is the rewritten instruction:'), labels, wrapping quotes, and trailing notes."""
    text = text.replace("<|im_end|>", "").strip()
    text = PREAMBLE.sub("", text, count=1)
    text = LABEL.sub("", text, count=1)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    text = paragraphs[0] if paragraphs else ""
    text = re.sub(r"^\*\*|\*\*$", "", text).strip()
    if len(text) >= 2 and text[0] in QUOTES and text[-1] in QUOTES:
        text = text[1:-1].strip()
    return " ".join(text.split())
