"""The training loss, with the vocabulary projection applied only where a label exists.

A causal LM's forward projects every position onto the whole vocabulary (576 x 49,152 for SmolLM2, a fifth
of its FLOPs) and then throws away the prompt positions' logits. Here the decoder body runs once, the
hidden states at label positions are gathered, and only those go through the output head. The head is
the model's own (possibly PEFT-wrapped) module, so trainable token rows stay in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

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
    logits: torch.Tensor  # (n_labels, vocab) at label positions only


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
        logits = causal_lm.get_output_embeddings()(hidden[label_mask])
        logits = finish_logits(causal_lm.config, logits).float()
        token_losses = F.cross_entropy(logits, batch.targets[label_mask], reduction="none")
        return LossOutput(token_losses.sum(), token_losses.detach(), hidden, label_mask, logits)
