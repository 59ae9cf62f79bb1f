"""A method turns the config and the task data into a Plan; the pipeline runs plans, never methods' own code.

DELIA, TELL, DMT, common IT... differ only in their plans (data sources, schedule, ratio, special tokens,
transforms of the task and eval examples); TKI also brings trainer hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from delia.data.example import Example

if TYPE_CHECKING:
    from delia.config import RunConfig

ExampleTransform = Callable[[list[Example]], list[Example]]


@dataclass
class Plan:
    """What the pipeline does for one run."""

    use_diverse: bool = True  # sample (or read) diverse data and mix it in
    diversify: bool = True  # rewrite task instructions (anisotropic diversification)
    schedule: str = "shuffle"  # mix schedule: shuffle | interleave | two_stage | task_only
    ratio: float = 10.0
    two_stage_order: str = "task_first"
    special_tokens: list[str] = field(default_factory=list)  # tokens to add before training
    token_init: str = "random"
    token_description: str | None = None
    train: bool = True  # False: evaluate the base model with the eval transform (ICL, CTG)
    match_steps_of: str | None = None  # run dir whose optimizer step count this run must reach
    task_transform: ExampleTransform | None = None  # applied to task examples before mixing
    eval_transform: ExampleTransform | None = None  # applied to eval examples before generation
    extra_task_examples: list[Example] = field(default_factory=list)  # e.g. fact-based QA pairs
    hooks: Any = None  # a delia.train.TrainerHooks instance, or None
    generation_options: dict[str, Any] = field(default_factory=dict)  # e.g. a CTG logits processor factory
    notes: list[str] = field(default_factory=list)  # what the plan changed, for the run summary


class Method:
    """Subclass, set `name` and `description`, implement `plan`; the registry finds it on import."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()  # task kinds it supports ("translation"...); empty = all

    def plan(self, config: RunConfig, task: list[Example]) -> Plan:
        raise NotImplementedError
