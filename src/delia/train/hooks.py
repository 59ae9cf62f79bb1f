"""Extension points for methods that change training itself (TKI: an extra loss, gradient surgery)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from delia.core.example import Example


class TrainerHooks:
    """No-op base class; subclass and override what a method needs.

    Call order: `setup` once after the LoRA model is built; per micro-batch, `extra_loss` is added to the
    label loss (weighted like the micro-batch's share of the step's label tokens); per optimizer step,
    `before_optimizer_step` runs after every backward of the step and before `optimizer.step()`.
    """

    def setup(self, model: Any, tokenizer: Any, examples: list[Example]) -> None:
        """Called once with the PEFT model, the tokenizer (with new tokens) and the training examples."""

    def extra_loss(self, model: Any, batch: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """A scalar added to the micro-batch's loss, or None. `outputs` is a `delia.train.loss.LossOutput`."""
        return None

    def before_optimizer_step(self, model: Any, optimizer: torch.optim.Optimizer) -> None:
        """Gradients of the whole step are accumulated in `.grad`; edit them here (e.g. PCGrad)."""

    def save(self, model: Any, adapter_dir: Path) -> None:
        """Called once the adapter directory is written: add the method's own artefacts to it (TKI)."""
