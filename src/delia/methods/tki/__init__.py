"""TKI (Zhao et al., ACL Findings 2025, "Task Knowledge Injection via Interpolations and Reinstatement"):
latent task adaptation (retrieved interpolations of latent-task LoRA increments) and knowledge
reinstatement (reinstated input embeddings, an extra objective, PCGrad). See docs/tki.md for every choice
the paper leaves open. Switches: `tki.lta`, `tki.kr` (ablations)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods.base import Method, MethodPlan

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class Tki(Method):
    name = "tki"
    description = "TKI: retrieved latent-task LoRA interpolations + knowledge reinstatement with PCGrad"

    def plan(self, config: RunConfig, task: list[Example]) -> MethodPlan:
        options = config.tki
        notes = []
        if not options.lta:
            notes.append("ablation: w/o latent task adaptation")
        if not options.kr:
            notes.append("ablation: w/o knowledge reinstatement")
        hooks = None
        if options.lta or options.kr:
            from delia.methods.tki.hooks import TkiHooks  # torch + the trainer: only when a run is planned

            hooks = TkiHooks(config)
        else:
            notes.append("both TKI parts off: plain LoRA on the task data")
        return MethodPlan(
            use_diverse=False,
            diversify=False,
            schedule="task_only",
            ratio=0.0,
            special_tokens=[],
            hooks=hooks,
            notes=notes,
        )
