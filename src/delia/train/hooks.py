"""Extension points for methods that change training itself (TKI: an extra loss, gradient surgery) and
leave artefacts of their own beside the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.example import Example

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


class TrainerHooks:
    """No-op base class; subclass and override what a method needs.

    Call order: `setup` once after the LoRA model is built; per micro-batch, `extra_loss` is added to the
    label loss (weighted like the micro-batch's share of the step's label tokens); per optimizer step,
    `before_optimizer_step` runs after every backward of the step and before `optimizer.step()`; `save`
    once with the adapter directory being written. `load` is the way back: it puts what `save` wrote onto
    a freshly loaded adapter model, so evaluation scores the model that was trained.
    """

    def setup(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example]) -> None:
        """Called once with the PEFT model, the tokenizer (with new tokens) and the training examples."""

    def extra_loss(self, model: PeftModel, batch: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """A scalar added to the micro-batch's loss, or None. `outputs` is a `delia.train.loss.LossOutput`."""
        return None

    def before_optimizer_step(self, model: PeftModel, optimizer: torch.optim.Optimizer) -> None:
        """Gradients of the whole step are accumulated in `.grad`; edit them here (e.g. PCGrad)."""

    def save(self, model: PeftModel, adapter_dir: Path) -> None:
        """Called while the adapter directory is written: add the method's own artefacts to it (TKI)."""

    @classmethod
    def load(
        cls, model: PeftModel, tokenizer: PreTrainedTokenizerBase, adapter_dir: Path, device: str
    ) -> None:
        """Attach to `model` (the adapter in `adapter_dir` already loaded) what `save` wrote there."""
