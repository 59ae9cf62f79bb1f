"""Find the instruction part of a task example's last user turn (the only part diversification rewrites)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from delia.core.errors import DeliaError
from delia.core.example import Example

BLANK_LINE_BLOCK = re.compile(r"\n[ \t]*\n\s*")  # one or more blank lines, with any trailing whitespace


@dataclass(frozen=True)
class InstructionSpan:
    """The last user turn split as head + instruction + tail; only `instruction` may change."""

    head: str
    instruction: str
    tail: str

    def join(self, instruction: str) -> str:
        return f"{self.head}{instruction}{self.tail}"


def _by_field(text: str, value: object, field: str, example_id: str) -> InstructionSpan:
    if not isinstance(value, str) or not value.strip():
        raise DeliaError(
            f"example {example_id}: meta field {field!r} (diversify.instruction_field) is missing or empty"
        )
    start = text.rfind(value)
    if start < 0:
        raise DeliaError(f"example {example_id}: meta[{field!r}] does not occur in the last user turn")
    return InstructionSpan(text[:start], value, text[start + len(value) :])


def _by_regex(text: str, pattern: str, example_id: str) -> InstructionSpan:
    try:
        match = re.search(pattern, text, flags=re.DOTALL)
    except re.error as err:
        raise DeliaError(f"diversify.regex {pattern!r} is not a valid regular expression ({err})") from None
    if match is None:
        raise DeliaError(
            f"example {example_id}: diversify.regex {pattern!r} does not match the last user turn"
        )
    group = 1 if match.re.groups else 0
    start, end = match.span(group)
    return InstructionSpan(text[:start], text[start:end], text[end:])


def _by_separator(text: str, separator: str) -> InstructionSpan:
    """Text after the last separator ("\\n\\n": the last blank-line block); none found: the whole turn."""
    if separator == "\n\n":
        blocks = list(BLANK_LINE_BLOCK.finditer(text))
        start = blocks[-1].end() if blocks else 0
    else:
        found = text.rfind(separator)
        start = found + len(separator) if found >= 0 else 0
    body = text[start:]
    stripped = body.rstrip()
    return InstructionSpan(text[:start], stripped, body[len(stripped) :])


def locate_instruction(
    example: Example, field: str | None = None, separator: str | None = "\n\n", regex: str | None = None
) -> InstructionSpan:
    """By meta field first, then regex (its first group), then separator; an empty instruction is an error."""
    text = example.instruction
    if field:
        span = _by_field(text, example.meta.get(field), field, example.id)
    elif regex:
        span = _by_regex(text, regex, example.id)
    else:
        span = _by_separator(text, separator or "\n\n")
    if not span.instruction.strip():
        raise DeliaError(
            f"example {example.id}: the located instruction part is empty (check separator/regex)"
        )
    return span
