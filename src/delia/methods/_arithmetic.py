"""The logits processor behind the `ctg` method (kept apart so listing methods never imports transformers)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from delia.core.errors import DeliaError
from delia.core.models import cache_argument


def combine(with_scores: torch.Tensor, without_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 + w) log p(with) - w log p(without); tokens another processor banned (-inf) stay banned."""
    with_logp = torch.log_softmax(with_scores.float(), dim=-1)
    without_logp = torch.log_softmax(without_logits.float(), dim=-1)
    mixed = (1 + weight) * with_logp - weight * without_logp
    return torch.where(torch.isneginf(with_logp), with_logp, mixed)


class PromptArithmeticProcessor(LogitsProcessor):
    """Hand-written because transformers' UnbatchedClassifierFreeGuidanceLogitsProcessor needs the other
    prompts before generate() starts; this one derives them from the batch it is given (removing
    `marker` from each decoded prompt), so one processor serves any batch the evaluator forms."""

    def __init__(self, model: Any, tokenizer: Any, marker: str, weight: float) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.marker = marker
        self.weight = weight
        self.pad_id = tokenizer.pad_token_id
        self._last_ids: torch.Tensor | None = None
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._next_position: torch.Tensor | None = None

    def without_marker(self, ids: list[int]) -> list[int]:
        start = next((i for i, t in enumerate(ids) if t != self.pad_id), len(ids))  # left padding
        text = self.tokenizer.decode(
            ids[start:], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        cut = text.rfind(self.marker)
        if cut < 0:
            raise DeliaError(
                "ctg: a prompt lacks the format description (was the plan's eval_transform applied?)"
            )
        return self.tokenizer(text[:cut] + text[cut + len(self.marker) :], add_special_tokens=False)[
            "input_ids"
        ]

    def _continues(self, input_ids: torch.Tensor) -> bool:
        """True when input_ids is the last call's batch plus one token (the same generate() goes on)."""
        last = self._last_ids
        return (
            last is not None
            and input_ids.shape[0] == last.shape[0]
            and input_ids.shape[1] == last.shape[1] + 1
            and torch.equal(input_ids[:, :-1], last)
        )

    def _start(self, input_ids: torch.Tensor) -> torch.Tensor:
        variants = [self.without_marker(row) for row in input_ids.tolist()]
        width = max(len(v) for v in variants)
        ids = torch.full((len(variants), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(variants), width), dtype=torch.long)
        for row, variant in enumerate(variants):
            ids[row, width - len(variant) :] = torch.tensor(variant)
            mask[row, width - len(variant) :] = 1
        ids, mask = ids.to(input_ids.device), mask.to(input_ids.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        self._cache, self._mask, self._next_position = out.past_key_values, mask, positions[:, -1:] + 1
        return out.logits[:, -1, :]

    def _step(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert self._mask is not None and self._next_position is not None
        self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        out = self.model(
            input_ids=input_ids[:, -1:],
            attention_mask=self._mask,
            position_ids=self._next_position,
            use_cache=True,
            **{cache_argument(self.model): self._cache},
        )
        self._cache, self._next_position = out.past_key_values, self._next_position + 1
        return out.logits[:, -1, :]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        with torch.no_grad():
            without = self._step(input_ids) if self._continues(input_ids) else self._start(input_ids)
        self._last_ids = input_ids.clone()
        return combine(scores, without, self.weight)
