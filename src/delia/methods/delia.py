"""DELIA (arXiv 2408.10841): self-sampled diverse data, anisotropic diversification of the task
instructions, a trained `<sep>`-style format token, extensive shuffling at ratio r.

Ablations (the paper's Table 4): `delia.diverse: false` drops the diverse data (task-only training),
`delia.diversify: false` keeps the task instructions as written; both off is "w/o all".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods.base import Method, MethodPlan

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class Delia(Method):
    name = "delia"
    description = (
        "DELIA: self-sampled diverse data + diversified instructions + a trained <sep> token, shuffled"
    )

    def plan(self, config: RunConfig, task: list[Example]) -> MethodPlan:
        use_diverse = config.delia.diverse and config.mix.ratio > 0
        diversify = config.delia.diversify and config.diversify.enabled
        notes = []
        if not config.delia.diverse:
            notes.append("ablation: w/o extensively diverse data")
        if not config.delia.diversify:
            notes.append("ablation: w/o diversified downstream data")
        return MethodPlan(
            use_diverse=use_diverse,
            diversify=diversify,
            schedule=config.mix.schedule if use_diverse else "task_only",
            ratio=config.mix.ratio if use_diverse else 0.0,
            two_stage_order=config.mix.two_stage_order,
            special_tokens=list(config.tokens.add),
            token_init=config.tokens.init,
            token_description=config.tokens.description,
            notes=notes,
        )
