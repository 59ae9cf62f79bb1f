"""Stop strings for the continuous decoder, by the rule of transformers' `StopStringCriteria`: a row stops
at the token that completes a stop string, when the string (looked for in the prompt's tail and the answer
so far) overlaps that last token. `StopStringCriteria` does the same search with tensors so that `generate`
can compile it; one short decode per running row and step costs little beside a forward pass on a CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class StopStrings:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, strings: list[str]) -> None:
        self.tokenizer = tokenizer
        self.strings = [text for text in strings if text]
        # Every token spells at least one character, so this many tokens hold any stop string that
        # overlaps the last one.
        self.window = max((len(text) for text in self.strings), default=0) + 1

    def completed_by_last(self, tokens: list[int]) -> bool:
        """True when a stop string ends inside the last of `tokens` (prompt tail + answer so far)."""
        if not self.strings or not tokens:
            return False
        tail = tokens[-self.window :]
        text = self.decode(tail)
        last_starts = len(text) - len(self.decode(tail[-1:]))
        for stop in self.strings:
            found = text.rfind(stop)
            if found >= 0 and found + len(stop) > last_starts:
                return True
        return False

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)
