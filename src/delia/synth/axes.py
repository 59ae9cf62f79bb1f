"""The diversification axes: one LLM prompt (with a worked example) per axis, and chatter removal.

SmolLM2-Instruct was tuned on SmolTalk's "smol-rewrite" data, whose system prompts read "You're an AI
assistant for text re-writing. Rewrite the input text to make it more <quality> while preserving its core
meaning." and whose user turn is the bare text. The prompts follow that form (a small model imitates far
better than it follows novel directions) plus one demonstration exchange. Axes with two directions (length,
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
    directive: str  # the rewrite the system turn asks for
    demo: str  # the demonstration rewrite of DEMO


AXES: dict[str, tuple[Direction, ...]] = {
    "vocabulary": (
        Direction(
            "Rewrite the input text using different words and synonyms while preserving its core meaning.",
            "Go through the review above and judge whether it is favourable or unfavourable. "
            "Give your verdict in the {tok} format.",
        ),
    ),
    "syntax": (
        Direction(
            "Rewrite the input text with a different sentence structure while preserving its core meaning.",
            "Whether the review above is positive or negative is for you to decide after reading it, "
            "and your answer should be written in the {tok} format.",
        ),
    ),
    "length": (
        Direction(
            "Rewrite the input text to make it more concise while preserving its core meaning.",
            "Decide if the review above is positive or negative; answer in the {tok} format.",
        ),
        Direction(
            "Rewrite the input text to make it more detailed and explicit while preserving its core meaning.",
            "Carefully read the review above from start to finish, weigh what the writer says, and then "
            "decide whether their overall opinion is positive or negative. When you answer, write it in the "
            "{tok} format.",
        ),
    ),
    "register": (
        Direction(
            "Rewrite the input text to make it more professional and formal while retaining its essential "
            "content.",
            "Kindly peruse the review above and determine whether its sentiment is positive or negative. "
            "Your answer is to be provided in the {tok} format.",
        ),
        Direction(
            "Rewrite the input text to make it more friendly and approachable while maintaining its main "
            "points.",
            "Have a read of that review up there and tell me if it's positive or negative! "
            "Just answer in the {tok} format.",
        ),
    ),
    "persona": (
        Direction(
            "Rewrite the input text as a manager would say it to a team member, keeping the same task.",
            "I need you to read the review above and tell me whether it is positive or negative. "
            "Please put your answer in the {tok} format for me.",
        ),
        Direction(
            "Rewrite the input text as a teacher would say it to a student, keeping the same task.",
            "For this exercise, read the review above and work out whether it is positive or negative. "
            "Remember to write your answer in the {tok} format.",
        ),
    ),
    "constraint_order": (
        Direction(
            "Rewrite the input text so that its requirements come in a different order while preserving its "
            "core meaning.",
            "Write your answer in the {tok} format, after reading the review above and deciding whether it "
            "is positive or negative.",
        ),
    ),
    "question_vs_command": (
        Direction(
            "Rewrite the input text as a polite question while preserving its core meaning.",
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
    """smol-rewrite style system turn + one demonstration exchange + the instruction as the bare user turn."""
    spec = AXES[axis][direction]
    token = keep_tokens[0] if keep_tokens else "JSON"
    kept = " and ".join(keep_tokens) if keep_tokens else "names and special tokens"
    system = (
        f"You're an AI assistant for text re-writing. {spec.directive} Keep {kept} exactly as written. "
        "Reply with the rewritten text only."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": DEMO.format(tok=token)},
        {"role": "assistant", "content": spec.demo.format(tok=token)},
        {"role": "user", "content": instruction},
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
