"""Acceptance checks for a rewritten instruction: kept tokens, sane length, changed, unique, same meaning."""

from __future__ import annotations

import difflib
import re
from typing import Any

LEXICAL_MIN = 0.35  # share of the original's content-word stems the rewrite must keep (no embedder)
LENGTH_RATIO = (0.3, 3.0)  # rewrite length / original length, in characters
NEAR_COPY = 0.95  # word-sequence similarity above which a rewrite is the original with a trivial edit
STOPWORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "by",
        "from",
        "at",
        "as",
        "is",
        "are",
        "be",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "your",
        "you",
        "what",
        "whether",
        "if",
        "any",
        "there",
        "their",
        "them",
        "they",
        "then",
        "than",
        "should",
        "must",
        "need",
        "make",
        "sure",
        "please",
    ]
)


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+|<[^>\s]+>", text.lower()))


def _stems(text: str) -> set[str]:
    # 5-letter prefixes: a crude stemmer that matches evaluate/evaluation, respond/response.
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3 and w not in STOPWORDS}


def lexical_similarity(original: str, rewrite: str) -> float:
    """Recall of the original's content-word stems in the rewrite (1.0 when the original has none)."""
    wanted = _stems(original)
    return len(wanted & _stems(rewrite)) / len(wanted) if wanted else 1.0


def form_problem(original: str, rewrite: str, keep_tokens: list[str], others: list[str]) -> str | None:
    """The first failed check that needs no model, as a reason name; None when all pass."""
    if not rewrite.strip():
        return "empty"
    if any(rewrite.count(token) != original.count(token) for token in keep_tokens):
        return "keep_tokens"
    ratio = len(rewrite) / max(1, len(original))
    if not LENGTH_RATIO[0] <= ratio <= LENGTH_RATIO[1]:
        return "length"
    if normalise(rewrite) == normalise(original):
        return "unchanged"
    if (
        difflib.SequenceMatcher(None, normalise(original).split(), normalise(rewrite).split()).ratio()
        > NEAR_COPY
    ):
        return "near_copy"
    if any(normalise(rewrite) == normalise(other) for other in others):
        return "duplicate"
    return None


class MeaningCheck:
    """Embedding cosine >= threshold with the offline embedder, else lexical content-word recall."""

    def __init__(self, embedder: Any, min_similarity: float) -> None:
        self.embedder = embedder
        self.threshold = min_similarity if embedder is not None else LEXICAL_MIN

    @property
    def description(self) -> str:
        if self.embedder is not None:
            return f"{self.embedder.name} cosine >= {self.threshold}"
        return f"lexical content-word recall >= {self.threshold} (no sentence embedder installed)"

    def scores(self, originals: list[str], rewrites: list[str]) -> list[float]:
        if not originals:
            return []
        if self.embedder is not None:
            return self.embedder.similarity(originals, rewrites)
        return [lexical_similarity(o, r) for o, r in zip(originals, rewrites, strict=True)]
