"""The diversification axes: an LLM prompt with two worked examples per axis, and chatter removal.

SmolLM2-Instruct was tuned on SmolTalk's "smol-rewrite" data, whose system prompts read "You're an AI
assistant for text re-writing. Rewrite the input text to make it more <quality> while preserving its core
meaning."; the prompts follow that form. Measured on the DELIA task with the 135M model: given the bare
instruction, the model *answers* it instead of rewriting it; quoting it after "Rewrite this instruction:"
and showing two demonstrations (each with the required token as many times as the instruction has it)
made it rewrite. Axes with two directions (length, register, persona) pick one per rewrite.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from delia.core.errors import ConfigError
from delia.generation.base import Message
from delia.synth.rules import RULES, sentences

# Two demonstration instructions; "{tok}" is the first keep token, "{tail}" repeats it when the instruction
# being rewritten holds it twice (the model copies the token count it is shown).
DEMOS = (
    "Read the review above and decide whether it is positive or negative. "
    "Write your answer in the {tok} format.{tail}",
    "Translate the sentence below into French and give the result in the {tok} format.{tail}",
)
TAIL = " Make sure you follow what {tok} asks for."


@dataclass(frozen=True)
class Direction:
    directive: str  # the rewrite the system turn asks for
    demos: tuple[str, str]  # the rewrites of DEMOS along this direction


AXES: dict[str, tuple[Direction, ...]] = {
    "vocabulary": (
        Direction(
            "Rewrite the input text using different words and synonyms while preserving its core meaning.",
            (
                "Go through the review above and judge whether it is favourable or unfavourable. "
                "Give your verdict in the {tok} format.{tail}",
                "Render the sentence below in French and provide the output in the {tok} format.{tail}",
            ),
        ),
    ),
    "syntax": (
        Direction(
            "Rewrite the input text with a different sentence structure while preserving its core meaning.",
            (
                "Whether the review above is positive or negative is for you to decide after reading it, "
                "and your answer should be written in the {tok} format.{tail}",
                "The sentence below should be translated into French, with the result given in the {tok} "
                "format.{tail}",
            ),
        ),
    ),
    "length": (
        Direction(
            "Rewrite the input text to make it more concise while preserving its core meaning.",
            (
                "Is the review above positive or negative? Answer in the {tok} format.{tail}",
                "Translate the sentence below into French ({tok} format).{tail}",
            ),
        ),
        Direction(
            "Rewrite the input text to make it more detailed and explicit while preserving its core meaning.",
            (
                "Carefully read the review above from start to finish, weigh what the writer says, and then "
                "decide whether their overall opinion is positive or negative. When you answer, write it in "
                "the {tok} format.{tail}",
                "Take the sentence below, translate it into natural, accurate French, and when you give the "
                "result, make sure it is written in the {tok} format.{tail}",
            ),
        ),
    ),
    "register": (
        Direction(
            "Rewrite the input text to make it more professional and formal while retaining its essential "
            "content.",
            (
                "Kindly peruse the review above and determine whether its sentiment is positive or negative. "
                "Your answer is to be provided in the {tok} format.{tail}",
                "Please provide a French translation of the sentence below, presented in the {tok} "
                "format.{tail}",
            ),
        ),
        Direction(
            "Rewrite the input text to make it more friendly and approachable while maintaining its main "
            "points.",
            (
                "Have a read of that review up there and tell me if it's positive or negative! "
                "Just answer in the {tok} format.{tail}",
                "Could you turn the sentence below into French for me? Pop the result in the {tok} "
                "format.{tail}",
            ),
        ),
    ),
    "persona": (
        Direction(
            "Rewrite the input text as a manager would say it to a team member, keeping the same task.",
            (
                "I need you to read the review above and tell me whether it is positive or negative. "
                "Please put your answer in the {tok} format for me.{tail}",
                "I'd like you to translate the sentence below into French for our client and hand it back "
                "in the {tok} format.{tail}",
            ),
        ),
        Direction(
            "Rewrite the input text as a teacher would say it to a student, keeping the same task.",
            (
                "For this exercise, read the review above and work out whether it is positive or negative. "
                "Remember to write your answer in the {tok} format.{tail}",
                "Your task today is to translate the sentence below into French and to write your answer in "
                "the {tok} format.{tail}",
            ),
        ),
    ),
    "constraint_order": (
        Direction(
            "Rewrite the input text so that its requirements come in a different order while preserving its "
            "core meaning.",
            (
                "Write your answer in the {tok} format, after reading the review above and deciding whether "
                "it is positive or negative.{tail}",
                "In the {tok} format, give the French translation of the sentence below.{tail}",
            ),
        ),
    ),
    "question_vs_command": (
        Direction(
            "Rewrite the input text as a polite question while preserving its core meaning.",
            (
                "Could you read the review above and decide whether it is positive or negative, writing "
                "your answer in the {tok} format?{tail}",
                "Would you translate the sentence below into French and give the result in the {tok} "
                "format?{tail}",
            ),
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


def _fill(template: str, token: str, twice: bool) -> str:
    return template.format(tok=token, tail=TAIL.format(tok=token) if twice else "")


def rewrite_prompt(axis: str, direction: int, instruction: str, keep_tokens: list[str]) -> list[Message]:
    """smol-rewrite style system turn + two demonstration exchanges + the quoted instruction."""
    spec = AXES[axis][direction]
    present = [t for t in keep_tokens if t in instruction]
    token = present[0] if present else "JSON"
    twice = bool(present) and instruction.count(token) >= 2
    kept = " and ".join(present) if present else "names and special tokens"
    system = (
        f"You're an AI assistant for text re-writing. {spec.directive} Keep {kept} exactly as written. "
        "Do not answer or carry out the instruction: only rewrite it."
    )
    messages: list[Message] = [{"role": "system", "content": system}]
    for demo, rewritten in zip(DEMOS[::-1], spec.demos[::-1], strict=True):
        messages.append({"role": "user", "content": _quote(_fill(demo, token, twice))})
        messages.append({"role": "assistant", "content": f'"{_fill(rewritten, token, twice)}"'})
    messages.append({"role": "user", "content": _quote(instruction)})
    return messages


def _quote(instruction: str) -> str:
    return f'Rewrite this instruction:\n"{instruction}"'


def is_question(text: str) -> bool:
    """The first sentence or the whole text ends with a question mark."""
    parts = sentences(text)
    return bool(parts) and (parts[0].rstrip().endswith("?") or text.rstrip().endswith("?"))


def axis_problem(axis: str, direction: int, original: str, rewrite: str) -> str | None:
    """Checks that an axis was applied, where one is cheap and sure; other axes are not verified."""
    if axis == "question_vs_command" and is_question(rewrite) == is_question(original):
        return "axis_not_applied"
    if axis == "length":
        ratio = len(rewrite) / max(1, len(original))
        if (direction == 0 and ratio > 0.9) or (direction == 1 and ratio < 1.1):
            return "axis_not_applied"
    return None


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
