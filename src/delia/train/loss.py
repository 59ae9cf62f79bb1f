"""The training loss, with the vocabulary projection applied only where a label exists.

A causal LM's forward projects every position onto the whole vocabulary (576 x 49,152 for SmolLM2, a fifth
of its FLOPs) and then throws away the prompt positions' logits. Here the decoder body runs once, the
hidden states at label positions are gathered, and only those go through the output head. The head is
the model's own (possibly PEFT-wrapped) module, so trainable token rows stay in the graph.

The head runs over chunks of label positions, each checkpointed: a chunk's (positions x vocabulary) fp32
logits exist only while that chunk is computed, in the forward and again in the backward, instead of all
of them (with their softmax and gradient) at once. At 8 x 512 tokens of long Alpaca answers that was over a
gigabyte per copy for SmolLM2's 49,152-token vocabulary; the recompute costs one more head pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from delia.train.collate import IGNORE, MicroBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class LossOutput:
    """What one micro-batch's forward produced; `extra_loss` hooks receive it."""

    loss_sum: torch.Tensor  # sum of per-token cross-entropy over label positions (differentiable)
    token_losses: torch.Tensor  # (n_labels,) detached
    hidden_states: torch.Tensor  # the decoder's last hidden state, (rows, positions, hidden)
    label_mask: torch.Tensor  # (rows, positions) bool: where targets exist
    token_loss_terms: torch.Tensor  # (n_labels,) per-token cross-entropy, differentiable


def causal_lm_of(model: PreTrainedModel) -> Any:
    """The transformers *ForCausalLM under any PEFT / DDP wrapping."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model


def decoder_of(causal_lm: Any) -> Any:
    return getattr(causal_lm, causal_lm.base_model_prefix)


def finish_logits(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """The post-head transforms some architectures apply inside their forward (Cohere scale, Gemma cap)."""
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


HEAD_CHUNK = 512  # label positions per head chunk: 512 x 49,152 fp32 logits = 100 MB


def label_token_losses(causal_lm: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(n_labels,) cross-entropy of the output head on `hidden` (n_labels, hidden) against `targets`."""
    head = causal_lm.get_output_embeddings()

    def chunk_losses(rows: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        logits = finish_logits(causal_lm.config, head(rows)).float()
        return F.cross_entropy(logits, wanted, reduction="none")

    checkpointed = torch.is_grad_enabled() and hidden.requires_grad
    pieces = []
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        rows, wanted = hidden[start : start + HEAD_CHUNK], targets[start : start + HEAD_CHUNK]
        if checkpointed:
            pieces.append(checkpoint(chunk_losses, rows, wanted, use_reentrant=False))
        else:
            pieces.append(chunk_losses(rows, wanted))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


class LabelLoss(torch.nn.Module):
    """Wraps the (PEFT) model so that one module's forward is the whole loss: DDP needs exactly that."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: MicroBatch) -> LossOutput:
        causal_lm = causal_lm_of(self.model)
        outputs = decoder_of(causal_lm)(**batch.model_inputs(), use_cache=False)
        hidden = outputs.last_hidden_state
        label_mask = batch.targets != IGNORE
        token_losses = label_token_losses(causal_lm, hidden[label_mask], batch.targets[label_mask])
        return LossOutput(token_losses.sum(), token_losses.detach(), hidden, label_mask, token_losses)
