"""Reference methods without DELIA's additions.

common_it          the paper's "common instruction tuning": the task data alone, the format token left as
                   plain text (the tokenizer splits it), the configured epochs.
common_it_matched  the same, trained for exactly as many optimizer steps as the run named in `matched_to`
                   (epochs over the task data), so a gain over it cannot come from more steps alone.
base               no training at all: the untuned model on the same evaluation (a reference row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods._common import task_only_plan
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class CommonIT(Method):
    name = "common_it"
    description = "common instruction tuning: task data only, no diverse data, no format token"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        return task_only_plan()


class CommonITMatched(Method):
    name = "common_it_matched"
    description = "common instruction tuning run for as many optimizer steps as the run in `matched_to`"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        if not config.matched_to:
            raise ConfigError(
                "matched_to", "common_it_matched needs the run directory whose steps it matches"
            )
        return task_only_plan(
            match_steps_of=config.matched_to, notes=[f"optimizer steps matched to {config.matched_to}"]
        )


class BaseModelOnly(Method):
    name = "base"
    description = "the base model without any training (reference row for the same evaluation)"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        return task_only_plan(train=False, notes=["no training: the base model"])
