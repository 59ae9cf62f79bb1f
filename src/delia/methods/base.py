"""A method turns the config and the task data into a MethodPlan; the pipeline runs plans, not methods.

DELIA, TELL, DMT, common IT... differ only in their plans (data sources, schedule, ratio, special tokens,
transforms of the task and eval examples); TKI also brings trainer hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from delia.core.config import Section
from delia.core.example import Example
from delia.core.registry import METHODS
from delia.core.stage import Stage

if TYPE_CHECKING:
    from delia.core.config import RunConfig
    from delia.train.hooks import TrainerHooks

ExampleTransform = Callable[[list[Example]], list[Example]]
StageDirs = Mapping[str, Path]  # a method stage's name -> its finished directory


@dataclass
class MethodPlan:
    """What the pipeline does for one run."""

    use_diverse: bool = True  # sample (or read) diverse data and mix it in
    diversify: bool = True  # rewrite task instructions (anisotropic diversification)
    schedule: str = "shuffle"  # mix schedule: shuffle | interleave | two_stage | task_only | diverse_only
    ratio: float = 10.0
    two_stage_order: str = "task_first"
    two_stage_remix: float = 0.0  # two_stage: share of the task examples shuffled into the second stage
    special_tokens: list[str] = field(default_factory=list)  # tokens to add before training
    token_init: str = "random"
    token_description: str | None = None
    train: bool = True  # False: evaluate the base model with the eval transform (ICL, CTG)
    match_steps_of: str | None = None  # run dir whose optimizer step count this run must reach
    task_transform: ExampleTransform | None = None  # applied to task examples before mixing
    eval_transform: ExampleTransform | None = None  # applied to eval examples before generation
    extra_task_examples: list[Example] = field(default_factory=list)  # e.g. fact-based QA pairs
    hooks: TrainerHooks | None = None
    generation_options: dict[str, Any] = field(default_factory=dict)  # e.g. a CTG logits processor factory
    notes: list[str] = field(default_factory=list)  # what the plan changed, for the run summary


class Method:
    """Subclass with a `name` and it is registered (`delia.core.registry.METHODS`); implement `plan`.

    A method with options declares them as `Options` (a config Section): they are its config section,
    `<name>:` in YAML and `--set <name>.<option>=...`, validated when the config is loaded and read with
    `config.options(name)`. Work that needs a model (generating facts, say) is an extra stage from
    `stages()`: the pipeline caches it like its own stages and hands its directory to `plan`, which stays
    pure (no model, no files written), so the grid can call it freely.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()  # task kinds it supports ("translation"...); empty = all
    Options: ClassVar[type[Section] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            METHODS.register(cls.name)(cls)

    def stages(self, config: RunConfig) -> list[Stage]:
        """Extra stages to run after `task` and before `plan` (none by default)."""
        return []

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        """What the pipeline does for this run; `stage_dirs` maps each of `stages()` to its finished
        directory."""
        raise NotImplementedError

    def hooks_type(self) -> type[TrainerHooks] | None:
        """The TrainerHooks class whose artefacts this method's trained adapters carry (None: the PEFT
        adapter is the whole model); `delia.methods.load_trained` calls its `load`."""
        return None
