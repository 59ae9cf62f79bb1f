"""The paper's JSON-format metric, piece by piece: find the earliest {...}, parse it leniently, read a label.

Hand-written rather than json_repair: that library also invents missing commas, unquoted keys and closing
braces, so it would count answers the paper's metric rejects; we repair quotes only.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

QUOTES = "'\""
# A quote closes a string only when the next non-space character could follow a string in a dict, so
# apostrophes inside a single-quoted value ('the user's request') stay inside it.
CLOSERS = ",:}]"


def _string_end(text: str, start: int) -> int | None:
    """Index just past the string literal opened at text[start], or None when it never closes."""
    quote = text[start]
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == quote:
            after = index + 1
            while after < len(text) and text[after].isspace():
                after += 1
            if after == len(text) or text[after] in CLOSERS:
                return index + 1
        index += 1
    return None


def _brace_pairs(text: str, quote_aware: bool) -> dict[int, int]:
    """Opening-brace index -> closing-brace index for every pair closed in one left-to-right pass. Quoted
    strings are skipped only inside braces (prose apostrophes outside don't matter); an unterminated string
    ends the quote-aware pass, since nothing after it can be placed."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if quote_aware and stack and char in QUOTES:
            end = _string_end(text, index)
            if end is None:
                break
            index = end
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
        index += 1
    return pairs


def earliest_object(text: str) -> str | None:
    """The earliest balanced `{...}` in text: braces inside quoted strings don't count; if quotes are too
    broken to track, plain brace counting decides. None when no opening brace is ever closed."""
    quoted = _brace_pairs(text, quote_aware=True)
    plain = _brace_pairs(text, quote_aware=False)
    start = min(quoted.keys() | plain.keys(), default=None)
    if start is None:
        return None
    end = quoted.get(start, plain.get(start))
    return text[start : end + 1]


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _unescape(body: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def repair_quotes(candidate: str) -> str | None:
    """Re-emit every quoted string (single or double, with stray inner quotes) as a JSON string literal,
    leaving everything between strings as it was. None when a string never closes."""
    out: list[str] = []
    index = 0
    while index < len(candidate):
        char = candidate[index]
        if char in QUOTES:
            end = _string_end(candidate, index)
            if end is None:
                return None
            out.append(json.dumps(_unescape(candidate[index + 1 : end - 1]), ensure_ascii=False))
            index = end
            continue
        out.append(char)
        index += 1
    return "".join(out)


def parse_object(candidate: str) -> tuple[Any, str | None]:
    """(value, how) with how in json / python / repaired, or (None, None) when nothing parses it."""
    try:
        return json.loads(candidate), "json"
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(candidate), "python"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    repaired = repair_quotes(candidate)
    if repaired is not None:
        try:
            return json.loads(repaired), "repaired"
        except (ValueError, RecursionError):
            pass
    return None, None


def parse_answer(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The dict in the earliest {...} of text and how it parsed, or (None, None)."""
    candidate = earliest_object(text)
    if candidate is None:
        return None, None
    value, how = parse_object(candidate)
    return (value, how) if isinstance(value, dict) else (None, None)


def normalise_label(value: Any) -> str:
    """For comparison only (stored labels are never rewritten): case, spaces, edge punctuation, booleans."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip().strip(".!\"'").strip().lower()


def reference_label(reference: str | None, label_key: str) -> Any:
    """A reference's label: its dict's value under label_key, or the whole reference when it is a bare
    label such as "yes" (Halu-CoT-JSON). None when there is no reference or its dict lacks the key."""
    if reference is None or not reference.strip():
        return None
    parsed, _ = parse_answer(reference)
    if parsed is not None:
        return parsed.get(label_key)
    return None if "{" in reference else reference.strip()


@dataclass
class JsonVerdict:
    """One answer judged by the json_format metric."""

    correct: bool
    strict: bool
    unclosed: bool
    parsed_with: str | None
    missing_keys: list[str] = field(default_factory=list)
    label: Any = None


def judge_answer(text: str, keys: list[str], label_key: str | None) -> JsonVerdict:
    parsed, how = parse_answer(text)
    unclosed = parsed is None and "{" in text and earliest_object(text) is None
    missing = list(keys) if parsed is None else [k for k in keys if k not in parsed]
    return JsonVerdict(
        correct=parsed is not None and not missing,
        strict=_strict_json(text, keys),
        unclosed=unclosed,
        parsed_with=how,
        missing_keys=missing,
        label=parsed.get(label_key) if parsed is not None and label_key else None,
    )


def _strict_json(text: str, keys: list[str]) -> bool:
    """The whole answer, as it stands, is a JSON object with the keys: what a plain json.loads accepts."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and all(k in value for k in keys)
