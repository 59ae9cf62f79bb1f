"""Latent-task retrieval: frozen orthogonal keys, the example's input text, top-k keys by cosine.

The routing is computed from the token ids the model is called with, so training and inference (where
only the prompt exists) retrieve the same way: the last user turn is cut out of the decoded sequence and
encoded with the sentence encoder (cached), centred on the training mean, and compared with the keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from delia.core.errors import ConfigError
from delia.methods.tki.segments import Segments

Weighting = Literal["cosine", "softmax"]
InferenceGroups = Literal["all", "best"]
NO_GROUP = -1
_SENTINELS = ("\x1eTKI-USER-ONE\x1e", "\x1eTKI-ANSWER\x1e", "\x1eTKI-USER-TWO\x1e")


def orthogonal_keys(groups: int, latents: int, dim: int, seed: int) -> torch.Tensor:
    """(groups, latents, dim) unit keys, mutually orthogonal within a group: Q of a QR of a Gaussian."""
    if latents > dim:
        raise ConfigError("tki.latents", f"{latents} orthogonal keys need latents <= encoder dimension {dim}")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(groups, dim, latents, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)  # (groups, dim, latents), orthonormal columns
    return q.transpose(1, 2).float().contiguous()


@dataclass
class Routing:
    """Per-example latent indices into the flattened (groups * latents) bank and their weights."""

    index: torch.Tensor  # (examples, K) long
    weight: torch.Tensor  # (examples, K) float, each row sums to 1 (padding entries have weight 0)
    segments: Segments | None = None  # where each example's tokens are; None: example b is row b
    _layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def per_row(self) -> bool:
        return self.segments is None or self.segments.row_aligned

    def layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Packed rows: Segments.layout, computed once and shared by every target layer."""
        assert self.segments is not None
        if self._layout is None:
            self._layout = self.segments.layout()
        return self._layout

    def expand_to(self, batch: int) -> Routing:
        """Beam search / num_return_sequences repeat each prompt; repeat its routing the same way."""
        rows = self.index.shape[0]
        if batch == rows:
            return self
        if rows == 0 or batch % rows:
            raise RuntimeError(f"latent routing for {rows} examples cannot serve a batch of {batch}")
        times = batch // rows
        return Routing(self.index.repeat_interleave(times, 0), self.weight.repeat_interleave(times, 0))


def similarity_weights(scores: torch.Tensor, weighting: Weighting, temperature: float) -> torch.Tensor:
    """Normalised interpolation weights D_j / sum D_j from the top-k cosine scores (last dim)."""
    if weighting == "softmax":
        return torch.softmax(scores / temperature, dim=-1)
    # The paper's D_j = cosine; a negative cosine would flip an increment's sign, so clamp at a floor.
    positive = scores.clamp_min(1e-6)
    return positive / positive.sum(-1, keepdim=True)


def retrieve(
    embeddings: torch.Tensor,
    keys: torch.Tensor,
    groups: torch.Tensor,
    top_k: int,
    weighting: Weighting = "cosine",
    temperature: float = 0.05,
    inference_groups: InferenceGroups = "best",
) -> Routing:
    """Top-k keys by cosine for each embedding (batch, dim).

    `groups[b]` is the example's training group, or NO_GROUP for an unseen input: then either the group
    holding the single best key is used ("best"), or every group contributes its own top-k
    interpolation, averaged ("all").
    """
    with torch.autocast("cpu", enabled=False):  # retrieval stays float32 inside a bf16 training step
        return _retrieve(embeddings, keys, groups, top_k, weighting, temperature, inference_groups)


def _retrieve(
    embeddings: torch.Tensor,
    keys: torch.Tensor,
    groups: torch.Tensor,
    top_k: int,
    weighting: Weighting,
    temperature: float,
    inference_groups: InferenceGroups,
) -> Routing:
    n_groups, n_latents, _ = keys.shape
    k = min(top_k, n_latents)
    cosine = torch.einsum("bd,gqd->bgq", F.normalize(embeddings.float(), dim=-1), keys.float())
    top_scores, top_latents = cosine.topk(k, dim=-1)  # (batch, groups, k)
    group_weights = similarity_weights(top_scores, weighting, temperature)
    flat_index = top_latents + torch.arange(n_groups).view(1, -1, 1) * n_latents
    chosen = groups.clone()
    unseen = chosen == NO_GROUP
    if inference_groups == "best":
        chosen = torch.where(unseen, cosine.amax(-1).argmax(-1), chosen)
    rows = torch.arange(embeddings.shape[0])
    one_group = chosen != NO_GROUP
    width = k if bool(one_group.all()) else n_groups * k
    index = torch.zeros(embeddings.shape[0], width, dtype=torch.long)
    weight = torch.zeros(embeddings.shape[0], width)
    safe = chosen.clamp_min(0)
    index[one_group, :k] = flat_index[rows, safe][one_group]
    weight[one_group, :k] = group_weights[rows, safe][one_group]
    if not bool(one_group.all()):
        index[~one_group] = flat_index[~one_group].reshape(-1, n_groups * k)
        weight[~one_group] = group_weights[~one_group].reshape(-1, n_groups * k) / n_groups
    return Routing(index, weight)


class UserTurnExtractor:
    """Cuts the last user turn out of a decoded chat sequence, using markers learnt from the tokenizer's
    own chat template (rendered around sentinels), so it works for any template, not only ChatML."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pattern = self._pattern(tokenizer)

    @staticmethod
    def _pattern(tokenizer: Any) -> re.Pattern[str] | None:
        one, answer, two = _SENTINELS
        try:
            single = tokenizer.apply_chat_template([{"role": "user", "content": one}], tokenize=False)
            double = tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": one},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": two},
                ],
                tokenize=False,
            )
        except Exception:  # no chat template: fall back to the whole decoded prompt
            return None
        if one not in single or two not in double:
            return None
        opening = _common_suffix(single.split(one)[0], double.split(answer)[1].split(two)[0])
        closing = _common_prefix(single.split(one)[1], double.split(two)[1])
        if not opening.strip() or not closing.strip():
            return None
        return re.compile(re.escape(opening) + r"(.*?)" + re.escape(closing), re.DOTALL)

    def __deepcopy__(self, memo: dict[int, Any]) -> UserTurnExtractor:
        return self  # stateless after construction: a model copy shares it

    def text(self, ids: list[int]) -> str:
        decoded = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.pattern is not None:
            turns = self.pattern.findall(decoded)
            if turns:
                return turns[-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def prompt_text(self, prompt_messages: list[dict[str, str]]) -> str:
        """The text the router will see for this prompt, via the same tokenise-decode round trip."""
        ids = self.tokenizer.apply_chat_template(prompt_messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return self.text(list(ids))


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n :]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
