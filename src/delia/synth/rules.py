"""Deterministic (seeded) rule-based rewrites for some axes: a fallback when the LLM's rewrites all fail.

These are honest string transformations, not paraphrases: a synonym table, sentence reordering, command <->
question, formal <-> casual markers, a persona frame. Each returns None when it cannot apply.
Axes without a rule (syntax, length) are LLM-only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z<])")

# Interchangeable words of the same part of speech and inflection (whole-word, case-preserving swaps).
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("analyze", "examine", "inspect", "review", "assess", "evaluate", "scrutinize", "judge"),
    ("determine", "decide", "establish", "ascertain", "find out"),
    ("response", "reply", "answer"),
    ("responses", "replies", "answers"),
    ("contains", "includes", "exhibits"),
    ("understand", "grasp", "comprehend"),
    ("requirement", "specification", "stipulation"),
    ("requirements", "specifications"),
    ("guidelines", "rules", "instructions"),
    ("carefully", "closely", "thoroughly"),
    ("given", "provided"),
    ("inaccuracies", "errors", "mistakes"),
    ("accurate", "correct"),
    ("crucial", "essential", "vital", "important"),
    ("entails", "involves", "implies", "means", "specifies", "demands", "necessitates", "requires"),
    ("follow", "observe", "adhere to"),
    ("identify", "pinpoint", "spot"),
    ("classify", "categorize"),
    ("summarize", "sum up"),
    ("write", "compose"),
    ("translate", "render"),
    ("text", "passage"),
)

IMPERATIVE_VERBS = frozenset(
    [
        "analyze",
        "analyse",
        "assess",
        "evaluate",
        "examine",
        "inspect",
        "judge",
        "review",
        "check",
        "scrutinize",
        "determine",
        "decide",
        "use",
        "utilize",
        "apply",
        "investigate",
        "write",
        "explain",
        "summarize",
        "translate",
        "classify",
        "list",
        "describe",
        "identify",
        "read",
        "answer",
        "give",
        "provide",
        "find",
        "compare",
        "consider",
        "label",
        "rate",
        "tell",
        "say",
        "verify",
        "detect",
        "look",
    ]
)
FOLLOW_UP_VERBS = frozenset(
    ["ensure", "follow", "adhere", "make", "understand", "comprehend", "grasp", "remember", "keep", "note"]
)
MODAL_PREFIX = re.compile(
    r"^(?:please\s+|kindly\s+)?(?:you\s+(?:must|should|need\s+to|have\s+to|are\s+required\s+to)\s+)?", re.I
)
QUESTION_PREFIX = re.compile(r"^(?:could|can|would|will)\s+you\s+(?:please\s+)?", re.I)

FORMAL_TO_CASUAL = {
    "utilize": "use",
    "utilizing": "using",
    "ascertain": "find out",
    "scrutinize": "look closely at",
    "comprehend": "get",
    "examine": "look at",
    "determine": "figure out",
    "necessitates": "needs",
    "adhere to": "stick to",
    "ensure": "make sure",
    "it is imperative to": "you really need to",
    "it is essential to": "you need to",
    "it's crucial to": "be sure to",
    "assess": "size up",
}
CASUAL_TO_FORMAL = {
    "check whether": "verify whether",
    "check if": "verify whether",
    "check for": "screen for",
    "find out": "ascertain",
    "look at": "examine",
    "make sure": "ensure",
    "use": "utilize",
    "see if": "establish whether",
    "get": "obtain",
    "figure out": "determine",
    "decide": "determine",
}
PERSONAS = (
    "As an experienced fact-checker",
    "Acting as a careful reviewer",
    "In your role as a meticulous analyst",
    "As a seasoned editor",
    "Taking the part of a strict examiner",
)


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def _match_case(word: str, like: str) -> str:
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    # "ChatGPT", "I", "<sep>": leave names and acronyms alone.
    return text[:1].lower() + text[1:] if first[1:] == first[1:].lower() and first != "I" else text


def _replace_phrases(text: str, table: dict[str, str], rng: random.Random, limit: int) -> str:
    hits = [p for p in table if re.search(rf"\b{re.escape(p)}\b", text, re.I)]
    rng.shuffle(hits)
    for phrase in hits[:limit]:
        text = re.sub(
            rf"\b{re.escape(phrase)}\b",
            lambda m, p=phrase: _match_case(table[p], m.group(0)),
            text,
            count=1,
            flags=re.I,
        )
    return text


def swap_synonyms(text: str, rng: random.Random) -> str | None:
    """Replace up to three words by a synonym from the same group."""
    table: dict[str, str] = {}
    for group in SYNONYM_GROUPS:
        for word in group:
            table[word] = rng.choice([w for w in group if w != word])
    result = _replace_phrases(text, table, rng, limit=3)
    return result if result != text else None


def reorder_constraints(text: str, rng: random.Random) -> str | None:
    """Move the last sentence first; in a one-sentence instruction, move a leading 'To X,' clause last."""
    parts = sentences(text)
    if len(parts) >= 2:
        return " ".join([parts[-1], *parts[:-1]])
    match = re.match(
        r"^(To|Using|Utilizing|With|Based on|By)\s+([^,]+),\s+(.+?)([.!?]?)$", text.strip(), re.S
    )
    if match:
        lead, clause, rest, end = match.groups()
        return f"{rest[:1].upper()}{rest[1:]} {lead.lower()} {clause}{end or '.'}"
    halves = text.strip().rstrip(".").split("; ")
    if len(halves) == 2:
        return f"{halves[1][:1].upper()}{halves[1][1:]}; {_lower_first(halves[0])}."
    return None


def flip_mood(text: str, rng: random.Random) -> str | None:
    """Turn a leading command into a question ('Could you ...?'), or a leading question into a command."""
    parts = sentences(text)
    if not parts:
        return None
    first = parts[0]
    if first.endswith("?") and QUESTION_PREFIX.match(first):
        body = QUESTION_PREFIX.sub("", first)[:-1].rstrip()
        new_first = f"{body[:1].upper()}{body[1:]}."
    else:
        body = MODAL_PREFIX.sub("", first)
        verb = body.split(" ", 1)[0].lower()
        if verb not in IMPERATIVE_VERBS or not first.endswith("."):
            return None
        opener = rng.choice(("Could you", "Can you", "Would you please", "Will you"))
        rest = parts[1:]
        # A following command joins the question ("Could you X and Y?"): one request, not a question + order.
        if len(rest) == 1 and _is_command(rest[0]):
            return (
                f"{opener} {_lower_first(body[:-1])}, and {_lower_first(MODAL_PREFIX.sub('', rest[0])[:-1])}?"
            )
        new_first = f"{opener} {_lower_first(body[:-1])}?"
    return " ".join([new_first, *parts[1:]])


def _is_command(sentence: str) -> bool:
    verb = MODAL_PREFIX.sub("", sentence).split(" ", 1)[0].lower()
    return sentence.endswith(".") and verb in IMPERATIVE_VERBS | FOLLOW_UP_VERBS


def shift_register(text: str, rng: random.Random) -> str | None:
    """Formal -> casual (plainer words, 'Hey,') or casual -> formal ('Kindly', Latinate words)."""
    casual = _replace_phrases(text, FORMAL_TO_CASUAL, rng, limit=3)
    formal = _replace_phrases(text, CASUAL_TO_FORMAL, rng, limit=3)
    formal = re.sub(r"^Please\b", "Kindly", formal)
    options = []
    if casual != text:
        options.append(f"Hey, {_lower_first(casual)}" if not casual.startswith("Hey") else casual)
    if formal != text:
        options.append(formal)
    return rng.choice(options) if options else None


def add_persona(text: str, rng: random.Random) -> str | None:
    """Frame the instruction as addressed to a role: 'As a seasoned editor, you must ...'."""
    if any(text.startswith(p) for p in PERSONAS):
        return None
    return f"{rng.choice(PERSONAS)}, {_lower_first(text.strip())}"


RULES: dict[str, Callable[[str, random.Random], str | None]] = {
    "vocabulary": swap_synonyms,
    "constraint_order": reorder_constraints,
    "question_vs_command": flip_mood,
    "register": shift_register,
    "persona": add_persona,
}


def rule_rewrite(axis: str, text: str, rng: random.Random) -> str | None:
    rule = RULES.get(axis)
    return rule(text, rng) if rule is not None else None
