"""k-shot in-context learning: no training; each evaluation prompt is preceded by k task examples as
earlier chat turns (user, assistant, user, assistant...), picked with a seed from the task data and never
the evaluated example itself. `icl.k` sets k; the run seed and the example's id fix the choice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from delia.core.config import Section
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods._common import demonstration_turns, pick_demonstrations, task_only_plan, with_prior_turns
from delia.methods.base import ExampleTransform, Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig


def with_demonstrations(pool: list[Example], k: int, seed: int) -> ExampleTransform:
    def transform(examples: list[Example]) -> list[Example]:
        out = []
        for example in examples:
            demos = pick_demonstrations(pool, example, k, seed)
            turns = demonstration_turns(demos)
            out.append(with_prior_turns(example, turns, icl_demonstrations=[d.id for d in demos]))
        return out

    return transform


class IclOptions(Section):
    k: int = Field(3, ge=1)  # demonstrations per prompt


class ICL(Method):
    name = "icl"
    description = "k-shot in-context learning from the task data (icl.k), no training"
    Options = IclOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        k = config.options(self.name).k
        if not task:
            raise ConfigError("task.train", "icl draws its demonstrations from the task data, which is empty")
        return task_only_plan(
            train=False,
            eval_transform=with_demonstrations(list(task), k, config.seed),
            notes=[f"no training: {k} demonstrations from {len(task)} task examples before each eval prompt"],
        )
