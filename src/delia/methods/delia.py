"""DELIA (arXiv 2408.10841): self-sampled diverse data, anisotropic diversification of the task
instructions, a trained `<sep>`-style format token, extensive shuffling at ratio r.

Ablations (the paper's Table 4), each removing exactly its part: `delia.diverse: false` drops the diverse
data (task-only training), `delia.diversify: false` keeps the task instructions as written; both off is
"w/o all". A task whose instructions are already diverse (the official `<sep>` set: 60 instructions over
100 records) has nothing left to remove by not rewriting: there "w/o diversified" also needs
`delia.canonical_instruction`, which gives every task example one instruction.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from pydantic import field_validator

from delia.core.config import DiversifyConfig, Section
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.base import Method, MethodPlan, StageDirs
from delia.synth.locate import InstructionSpan, locate_instruction

if TYPE_CHECKING:
    from delia.core.config import RunConfig

MOST_COMMON = "most_common"


class DeliaOptions(Section):
    diverse: bool = True  # w/o extensively diverse data when False (Table 4)
    diversify: bool = True  # w/o diversified downstream data when False
    # Every task example's instruction replaced by this text, or by the task's most frequent instruction
    # ("most_common"; ties: the first seen). The instruction part is located as diversify.* locates it.
    canonical_instruction: str | None = None
    omit_at_default: ClassVar[tuple[str, ...]] = (
        "canonical_instruction",
    )  # DELIA's hashes stay as they were

    @field_validator("canonical_instruction")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                f"must be an instruction or {MOST_COMMON!r}, not blank (null keeps them as given)"
            )
        return value


class Delia(Method):
    name = "delia"
    description = (
        "DELIA: self-sampled diverse data + diversified instructions + a trained <sep> token, shuffled"
    )
    Options = DeliaOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        options = config.options(self.name)
        use_diverse = options.diverse and config.mix.ratio > 0
        diversify = options.diversify and config.diversify.enabled
        notes = []
        if not options.diverse:
            notes.append("ablation: w/o extensively diverse data")
        if not options.diversify:
            notes.append("ablation: w/o diversified downstream data")
        elif not diversify:
            notes.append("instructions not rewritten: diversify.enabled is false (taken as given)")
        transform = None
        if options.canonical_instruction is not None:
            transform, note = collapse_plan(config, options.canonical_instruction, task, diversify)
            notes.append(note)
        return MethodPlan(
            use_diverse=use_diverse,
            diversify=diversify,
            schedule=config.mix.schedule if use_diverse else "task_only",
            ratio=config.mix.ratio if use_diverse else 0.0,
            two_stage_order=config.mix.two_stage_order,
            special_tokens=list(config.tokens.add),
            token_init=config.tokens.init,
            token_description=config.tokens.description,
            task_transform=transform,
            notes=notes,
        )


def collapse_plan(
    config: RunConfig, wanted: str, task: list[Example], diversify: bool
) -> tuple[partial[list[Example]], str]:
    """The transform that gives every task example one instruction, and its note for plan.json."""
    key = "delia.canonical_instruction"
    if diversify:
        message = "collapses the instructions this run also rewrites: set delia.diversify=false with it"
        raise ConfigError(key, message)
    counts = Counter(locate(example, config.diversify).instruction for example in task)
    canonical = counts.most_common(1)[0][0] if wanted == MOST_COMMON and counts else wanted
    missing = [token for token in config.tokens.add if token not in canonical]
    if wanted != MOST_COMMON and missing:
        raise ConfigError(
            key, f"the instruction must hold the format token(s) {missing} that tokens.add trains"
        )
    transform = partial(with_instruction, canonical=canonical, cfg=config.diversify)
    return transform, f"instructions collapsed: {len(counts)} distinct -> 1, {canonical!r}"


def locate(example: Example, cfg: DiversifyConfig) -> InstructionSpan:
    return locate_instruction(example, cfg.instruction_field, cfg.separator, cfg.regex)


def with_instruction(task: list[Example], canonical: str, cfg: DiversifyConfig) -> list[Example]:
    """Each task example with its instruction part (not its context) replaced by `canonical`."""
    meta = {cfg.instruction_field: canonical} if cfg.instruction_field else {}
    return [example.with_instruction(locate(example, cfg).join(canonical), **meta) for example in task]
