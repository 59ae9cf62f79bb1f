"""Mean-embedding baseline (Welch et al. 2020): the format token starts at the mean embedding of a prior
description of what it stands for, then trains on the task data alone.

The description is `tokens.description`, or one read off the task answers (e.g. "a Python dictionary
with the keys thought and hallucination") so the token's prior meaning names the target format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods._common import short_description, summarize_format, token_only_plan
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


class MeanEmbedding(Method):
    name = "mean_embedding"
    description = "special token initialised to the mean embedding of a description of the target format"

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        given = config.tokens.description
        description = given or short_description(summarize_format(task))
        origin = "tokens.description" if given else "derived from the task answers"
        how = f"mean embedding of {description!r} ({origin})"
        return token_only_plan(self.name, config, "desc_mean", how, description)
