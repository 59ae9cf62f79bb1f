"""DMT (Dong et al. 2024, "How abilities in large language models are affected by supervised fine-tuning
data composition"): dual-stage mixed fine-tuning. Stage one trains on the task (specialised) data; stage
two on the general (diverse) data with a share k of the task data shuffled back in, so that the task is
not forgotten. `dmt.variant: sequential` drops the re-mixed share (plain sequential training, this
method's behaviour before the published variant was added); with it, `mix.two_stage_order: diverse_first`
reverses the stages. One LoRA run over the concatenated stages, not shuffled across them. The task
instructions are not diversified and the format token stays plain text, as in common instruction tuning,
so the schedule is the only difference."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from delia.core.config import Section
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs
from delia.mix import remix_count

if TYPE_CHECKING:
    from delia.core.config import RunConfig

# Dong et al.'s DMT rows use k = 1/256 of the specialised data in the second stage (docs/methods.md).
PUBLISHED_K = 1 / 256


class DMTOptions(Section):
    variant: Literal["dmt", "sequential"] = "dmt"  # sequential: no task data in the general stage
    k: float = Field(PUBLISHED_K, ge=0, le=1)  # share of the task examples re-mixed into stage two


class DMT(Method):
    name = "dmt"
    description = "dual-stage mixed fine-tuning: task data, then general data with a share k of the task data"
    Options = DMTOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        if config.mix.ratio <= 0:
            raise ConfigError("mix.ratio", "dmt's second stage is general data: the ratio must be above 0")
        options = config.options(self.name)
        order = config.mix.two_stage_order
        remix = options.k if options.variant == "dmt" else 0.0
        if remix and order != "task_first":
            raise ConfigError(
                "dmt.variant",
                "dmt re-mixes task data into the general stage, which comes second only with "
                "mix.two_stage_order task_first; use dmt.variant=sequential for general -> task",
            )
        return MethodPlan(
            use_diverse=True,
            diversify=False,
            schedule="two_stage",
            ratio=config.mix.ratio,
            two_stage_order=order,
            two_stage_remix=remix,
            special_tokens=[],
            notes=[stages_note(config, remix, len(task))],
        )


def stages_note(config: RunConfig, remix: float, n_task: int) -> str:
    """What the two stages hold, for plan.json and the run summary."""
    general = f"general data at ratio {config.mix.ratio:g}"
    if config.mix.two_stage_order == "diverse_first":
        return f"two stages (sequential): {general} -> task"
    if not remix:
        return f"two stages (sequential): task -> {general}"
    cfg = config.mix.model_copy(update={"schedule": "two_stage", "two_stage_remix": remix})
    share = Fraction(remix).limit_denominator(4096)
    k = str(share) if float(share) == remix else f"{remix:g}"
    remixed = f"{remix_count(cfg, n_task)} of {n_task} task examples (k = {k})"
    return f"two stages (DMT): task -> {general} + {remixed}"
