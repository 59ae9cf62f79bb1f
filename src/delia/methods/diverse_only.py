"""Diverse data alone: the `mix.ratio` x |task| diverse (self-sampled) examples a DELIA run at that ratio
would draw, trained without a single task example, no diversification, no format token. Not a competitor:
the reference model of the DELIA paper's Figure 4, whose first-divergent-token state space the tuned
models are measured against, so that what the diverse data alone does to the model is factored out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class DiverseOnly(Method):
    name = "diverse_only"
    description = "diverse data alone (r x |task| examples), no task example: Figure 4's reference model"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        if config.mix.ratio <= 0:
            raise ConfigError(
                "mix.ratio", "diverse_only trains on r x |task| diverse examples: r must be above 0"
            )
        return MethodPlan(
            use_diverse=True,
            diversify=False,
            schedule="diverse_only",
            ratio=config.mix.ratio,
            special_tokens=[],
            notes=[f"diverse data only: {config.mix.ratio:g} x {len(task)} examples, no task example"],
        )
