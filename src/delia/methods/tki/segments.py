"""Which tokens belong to which example: padded rows (one example per row) or packed rows (several
examples in one row, as delia.train packs them), told apart from what the model is called with."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Segments:
    token_segment: torch.Tensor  # (batch, seq) long: the example each token belongs to, -1 for padding
    count: int
    row_aligned: bool  # one example per row, in row order: per-row weights apply directly

    def token_lists(self, input_ids: torch.Tensor) -> list[list[int]]:
        flat_ids = input_ids.reshape(-1).tolist()
        lists: list[list[int]] = [[] for _ in range(self.count)]
        for token, segment in zip(flat_ids, self.token_segment.reshape(-1).tolist(), strict=True):
            if segment >= 0:
                lists[segment].append(token)
        return lists

    def layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Packed tokens laid out as a padded (segments, longest) grid, and back.

        Returns gather (segments, longest) flat token positions (0 where padding), valid (segments,
        longest) bool, and scatter (batch*seq,) positions into the flattened grid with one extra slot
        (segments*longest, a zero row) for tokens of no segment.
        """
        flat = self.token_segment.reshape(-1)
        device = flat.device
        owned = (flat >= 0).nonzero().squeeze(-1)
        owners = flat[owned]
        lengths = torch.bincount(owners, minlength=self.count)
        longest = int(lengths.max()) if self.count else 0
        starts = torch.cumsum(lengths, 0) - lengths
        order = torch.argsort(owners, stable=True)  # tokens grouped by segment, in sequence order
        owned, owners = owned[order], owners[order]
        offsets = torch.arange(owners.numel(), device=device) - starts[owners]
        gather = torch.zeros(self.count, longest, dtype=torch.long, device=device)
        valid = torch.zeros(self.count, longest, dtype=torch.bool, device=device)
        gather[owners, offsets] = owned
        valid[owners, offsets] = True
        scatter = torch.full((flat.numel(),), self.count * longest, dtype=torch.long, device=device)
        scatter[owned] = owners * longest + offsets
        return gather, valid, scatter


def find_segments(
    input_shape: tuple[int, ...],
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seq_lens: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Segments:
    """Segments from sequence boundaries (packed: `cu_seq_lens`, or position ids restarting at 0), else
    one per row over its attended tokens."""
    batch, seq = input_shape[0], input_shape[1]
    valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
    if (
        attention_mask is not None
        and attention_mask.dim() == 2
        and tuple(attention_mask.shape) == (batch, seq)
    ):
        valid = attention_mask.bool().to(device)
    starts = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    if cu_seq_lens is not None and batch == 1:
        bounds = cu_seq_lens.long().to(device)[:-1]
        starts[0, bounds[bounds < seq]] = True
    else:
        first_valid = valid & ~torch.cat(
            [torch.zeros(batch, 1, dtype=torch.bool, device=device), valid[:, :-1]], 1
        )
        starts = first_valid
        if position_ids is not None and tuple(position_ids.shape[-2:]) == (batch, seq):
            starts = starts | (valid & (position_ids.reshape(batch, seq).to(device) == 0))
    starts = starts & valid
    segment = torch.cumsum(starts.reshape(-1).long(), 0).reshape(batch, seq) - 1
    segment = torch.where(valid & (segment >= 0), segment, torch.full_like(segment, -1))
    count = int(starts.sum())
    row_aligned = count == batch and bool((starts.sum(1) == 1).all())
    return Segments(segment, count, row_aligned)
