"""Mean-embedding baseline (Welch et al. 2020): the format token starts at the mean embedding of a prior
description of what it stands for, then trains on the task data alone.

The description is `tokens.description`, or one read off the task answers (e.g. "a Python dictionary
with the keys thought and hallucination") so the token's prior meaning names the target format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods._common import require_token, short_description, summarize_format, task_only_plan
from delia.methods.base import Method, MethodPlan

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class MeanEmbedding(Method):
    name = "mean_embedding"
    description = "special token initialised to the mean embedding of a description of the target format"

    def plan(self, config: RunConfig, task: list[Example]) -> MethodPlan:
        tokens = require_token(self.name, config)
        given = config.tokens.description
        description = given or short_description(summarize_format(task))
        origin = "tokens.description" if given else "derived from the task answers"
        return task_only_plan(
            special_tokens=tokens,
            token_init="desc_mean",
            token_description=description,
            notes=[f"tokens {tokens}: mean embedding of {description!r} ({origin}), task-only training"],
        )
