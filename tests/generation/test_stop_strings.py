"""generation/stop_strings.py follows `StopStringCriteria`'s rule: the stop string must overlap the last token
(the examples of transformers' own docstring)."""

from __future__ import annotations

import pytest

from delia.generation.stop_strings import StopStrings


class PieceTokenizer:
    """Token i spells pieces[i]: decoding concatenates, as a byte-level BPE tokenizer does."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, tokens: list[int], **_: object) -> str:
        return "".join(self.pieces[t] for t in tokens)


@pytest.mark.parametrize(
    ("pieces", "stops"),
    [
        (["st", "op"], True),
        (["stop"], True),
        (["st", "opera"], True),
        (["sto", "pper"], True),
        (["las", "topper"], True),
        (["s", "to", "pped"], True),
        (["stop", "at"], False),
        (["st", "op", "at"], False),
        (["st", "opera", "tion"], False),
        (["a", "b", "c", "d", "e", "s", "t", "o", "p"], True),  # one character per token: the window holds it
    ],
)
def test_a_stop_string_counts_only_when_it_overlaps_the_last_token(pieces: list[str], stops: bool) -> None:
    checker = StopStrings(PieceTokenizer(pieces), ["stop"])  # type: ignore[arg-type]
    assert checker.completed_by_last(list(range(len(pieces)))) is stops


def test_no_strings_or_no_tokens_never_stop() -> None:
    assert not StopStrings(PieceTokenizer(["x"]), []).completed_by_last([0])  # type: ignore[arg-type]
    assert not StopStrings(PieceTokenizer(["x"]), ["x"]).completed_by_last([])  # type: ignore[arg-type]
