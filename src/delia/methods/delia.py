"""DELIA (arXiv 2408.10841): self-sampled diverse data, anisotropic diversification of the task
instructions, a trained `<sep>`-style format token, extensive shuffling at ratio r.

Ablations (the paper's Table 4): `delia.diverse: false` drops the diverse data (task-only training),
`delia.diversify: false` keeps the task instructions as written; both off is "w/o all".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.config import Section
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class DeliaOptions(Section):
    diverse: bool = True  # w/o extensively diverse data when False (Table 4)
    diversify: bool = True  # w/o diversified downstream data when False


class Delia(Method):
    name = "delia"
    description = (
        "DELIA: self-sampled diverse data + diversified instructions + a trained <sep> token, shuffled"
    )
    Options = DeliaOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        options = config.options(self.name)
        use_diverse = options.diverse and config.mix.ratio > 0
        diversify = options.diversify and config.diversify.enabled
        notes = []
        if not options.diverse:
            notes.append("ablation: w/o extensively diverse data")
        if not options.diversify:
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
