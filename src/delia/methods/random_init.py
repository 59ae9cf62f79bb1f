"""Random-init baseline: the format token is added with a seeded random embedding and trained on the task
data alone (no diverse data, no diversification), as the DELIA paper's "random initialisation" row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.data.example import Example
from delia.methods._common import require_token, task_only_plan
from delia.methods.base import Method, Plan

if TYPE_CHECKING:
    from delia.config import RunConfig


class RandomInit(Method):
    name = "random_init"
    description = "special format token with a seeded random embedding, trained on the task data only"

    def plan(self, config: RunConfig, task: list[Example]) -> Plan:
        tokens = require_token(self.name, config)
        return task_only_plan(
            special_tokens=tokens,
            token_init="random",
            notes=[f"tokens {tokens}: random init (seed {config.seed}), task-only training"],
        )
