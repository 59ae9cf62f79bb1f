"""Examples -> token ids with assistant-only labels -> micro-batch tensors (packed or padded).

Labels cover the final assistant turn only: the prompt is the chat template rendered over the earlier turns
with the generation prompt, and it must be a prefix of the full render (templates that rewrite earlier
turns, e.g. by stripping thoughts, are refused rather than mislabelled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from delia.core.errors import DeliaError
from delia.core.example import Example

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One example's token ids; positions >= n_prompt are the tokens the model learns to produce."""

    input_ids: list[int]
    n_prompt: int
    source: str
    example_id: str
    truncated: bool = False

    @property
    def n_labels(self) -> int:
        return len(self.input_ids) - self.n_prompt


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0  # nothing left to learn after truncation


def render_pair(example: Example, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """(prompt text, full text) through the tokenizer's chat template."""
    if example.messages[-1]["role"] != "assistant":
        raise DeliaError(f"example {example.id} has no final assistant turn to train on")
    full = tokenizer.apply_chat_template(example.messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(
        example.prompt_messages, tokenize=False, add_generation_prompt=True
    )
    if not full.startswith(prompt):
        raise DeliaError(
            f"example {example.id}: the chat template's prompt render is not a prefix of the full render, "
            "so assistant tokens cannot be located (does the template rewrite earlier turns?)"
        )
    return prompt, full


def encode_examples(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stats: EncodeStats | None = None,
) -> list[Encoded]:
    """Tokenise in one batched call; examples with no label left after truncation are dropped."""
    pairs = [render_pair(example, tokenizer) for example in examples]
    batch = tokenizer([full for _, full in pairs], add_special_tokens=False, return_offsets_mapping=True)
    stats = stats if stats is not None else EncodeStats()
    encoded = []
    for example, (prompt, _), ids, offsets in zip(
        examples, pairs, batch["input_ids"], batch["offset_mapping"], strict=True
    ):
        # A token is prompt when it ends inside the prompt text; one straddling the boundary is learned.
        n_prompt = max(1, sum(1 for _, end in offsets if end <= len(prompt)))
        truncated = len(ids) > max_length
        ids = list(ids[:max_length])
        stats.examples += 1
        stats.truncated += truncated
        if n_prompt >= len(ids):
            stats.dropped += 1
            continue
        encoded.append(Encoded(ids, n_prompt, example.source, example.id, truncated))
    return encoded


@dataclass
class MicroBatch:
    """Model inputs plus next-token targets (IGNORE where nothing is learned) and per-token source index."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    sources: torch.Tensor
    attention_mask: torch.Tensor | None = None
    cu_seq_lens: torch.Tensor | None = None  # packed rows: sequence boundaries, as flash-attention takes them
    max_seq_len: int = 0
    n_tokens: int = 0
    n_labels: int = 0
    example_ids: list[str] = field(default_factory=list)

    def model_inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {"input_ids": self.input_ids, "position_ids": self.position_ids}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.cu_seq_lens is not None:
            inputs.update(
                cu_seq_lens_q=self.cu_seq_lens,
                cu_seq_lens_k=self.cu_seq_lens,
                max_length_q=self.max_seq_len,
                max_length_k=self.max_seq_len,
            )
        return inputs

    def to(self, device: str | torch.device) -> MicroBatch:
        moved = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return MicroBatch(**moved)


def next_token_targets(item: Encoded) -> list[int]:
    """targets[t] = ids[t+1] where ids[t+1] is a label token, else IGNORE (the last position too)."""
    ids = item.input_ids
    return [IGNORE] * (item.n_prompt - 1) + ids[item.n_prompt :] + [IGNORE]


def pack(items: list[Encoded], source_index: dict[str, int]) -> MicroBatch:
    """One row, no padding; position ids restart per sequence and attention stays inside each one."""
    ids = [token for item in items for token in item.input_ids]
    positions = [pos for item in items for pos in range(len(item.input_ids))]
    targets = [target for item in items for target in next_token_targets(item)]
    sources = [source_index[item.source] for item in items for _ in item.input_ids]
    bounds = [0]
    for item in items:
        bounds.append(bounds[-1] + len(item.input_ids))
    return MicroBatch(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([positions]),
        targets=torch.tensor([targets]),
        sources=torch.tensor([sources]),
        cu_seq_lens=torch.tensor(bounds, dtype=torch.int32),
        max_seq_len=max(len(item.input_ids) for item in items),
        n_tokens=len(ids),
        n_labels=sum(item.n_labels for item in items),
        example_ids=[item.example_id for item in items],
    )


def pad(items: list[Encoded], source_index: dict[str, int], pad_id: int) -> MicroBatch:
    """Right-padded rows with an attention mask (for attention kernels that cannot take packed rows)."""
    width = max(len(item.input_ids) for item in items)
    ids, mask, targets, sources = [], [], [], []
    for item in items:
        fill = width - len(item.input_ids)
        ids.append(item.input_ids + [pad_id] * fill)
        mask.append([1] * len(item.input_ids) + [0] * fill)
        targets.append(next_token_targets(item) + [IGNORE] * fill)
        sources.append([source_index[item.source]] * width)
    return MicroBatch(
        input_ids=torch.tensor(ids),
        position_ids=torch.arange(width).expand(len(items), -1).clone(),
        targets=torch.tensor(targets),
        sources=torch.tensor(sources),
        attention_mask=torch.tensor(mask),
        max_seq_len=width,
        n_tokens=sum(len(item.input_ids) for item in items),
        n_labels=sum(item.n_labels for item in items),
        example_ids=[item.example_id for item in items],
    )


def collate(items: list[Encoded], source_index: dict[str, int], pad_id: int, packing: bool) -> MicroBatch:
    return pack(items, source_index) if packing else pad(items, source_index, pad_id)
