"""Random-init baseline: the format token is added with a seeded random embedding and trained on the task
data alone (no diverse data, no diversification), as the DELIA paper's "random initialisation" row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods._common import token_only_plan
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class RandomInit(Method):
    name = "random_init"
    description = "special format token with a seeded random embedding, trained on the task data only"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        return token_only_plan(self.name, config, "random", f"random init (seed {config.seed})")
