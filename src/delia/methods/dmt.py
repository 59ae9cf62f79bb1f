"""DMT (Dong et al. 2024, "How abilities in large language models are affected by supervised fine-tuning
data composition"): two-stage fine-tuning, first the task data, then the general (diverse) data; with
`mix.two_stage_order: diverse_first` the reverse. One LoRA run over the concatenated stages, not
shuffled across them. The task instructions are not diversified and the format token stays plain text,
as in common instruction tuning, so the schedule is the only difference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class DMT(Method):
    name = "dmt"
    description = "two-stage fine-tuning: task data, then general data (mix.two_stage_order reverses it)"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        if config.mix.ratio <= 0:
            raise ConfigError("mix.ratio", "dmt's second stage is general data: the ratio must be above 0")
        order = config.mix.two_stage_order
        stages = "task -> general" if order == "task_first" else "general -> task"
        return MethodPlan(
            use_diverse=True,
            diversify=False,
            schedule="two_stage",
            ratio=config.mix.ratio,
            two_stage_order=order,
            special_tokens=[],
            notes=[f"two stages: {stages}, general data at ratio {config.mix.ratio:g}"],
        )
