"""TELL, Token-Efficient Leverage Learning (Zeng et al. 2024, arXiv 2404.00914), the seed of DELIA.

An anchor prompt (a fixed string that marks task examples) is prepended to the instruction of every task
example, never to the general data, and the task data is shuffled into r times more general data; there
is no diversification and no special token. The same anchor is prepended at evaluation so the model
recognises the task. The anchor is `tell.anchor`, or when unset a self-generated one: an unusual,
deterministic string derived from the run seed (unusual so that it appears in no general example)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pydantic import field_validator

from delia.core.config import Section
from delia.core.example import Example
from delia.methods._common import edit_last_user
from delia.methods.base import ExampleTransform, Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig

CONSONANTS = "bdfgklmnprstvxz"
VOWELS = "aeiou"


def self_generated_anchor(seed: int) -> str:
    """Three made-up words and a number in brackets; seed 0 gives "[[ Zuva Mupe Kido 6724 ]]"."""
    rng = random.Random(f"tell-anchor:{seed}")

    def word() -> str:
        syllables = rng.randint(2, 3)
        return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables)).capitalize()

    return f"[[ {word()} {word()} {word()} {rng.randint(1000, 9999)} ]]"


def chosen_anchor(given: str | None, seed: int) -> tuple[str, str]:
    """(the anchor, where it came from): `tell.anchor` when given, else the seed's self-generated one."""
    if given:
        return given.strip(), "tell.anchor"
    return self_generated_anchor(seed), f"self-generated from seed {seed}"


def anchored(example: Example, anchor: str, keep_id: bool) -> Example:
    return edit_last_user(example, f"{anchor}\n\n{example.instruction}", keep_id, tell_anchor=anchor)


def anchor_task(anchor: str) -> ExampleTransform:
    """Anchor every task example; any other source (diverse, fact...) passes through untouched."""

    def transform(examples: list[Example]) -> list[Example]:
        return [anchored(ex, anchor, keep_id=False) if ex.source == "task" else ex for ex in examples]

    return transform


def anchor_eval(anchor: str) -> ExampleTransform:
    def transform(examples: list[Example]) -> list[Example]:
        return [anchored(ex, anchor, keep_id=True) for ex in examples]

    return transform


class TellOptions(Section):
    anchor: str | None = None  # None: a self-generated anchor string

    @field_validator("anchor")
    @classmethod
    def _not_blank(cls, anchor: str | None) -> str | None:
        if anchor is not None and not anchor.strip():
            raise ValueError("the anchor is empty; leave it unset for a self-generated one")
        return anchor


class Tell(Method):
    name = "tell"
    description = "TELL: an anchor prompt on every task example, shuffled into general data; no token"
    Options = TellOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        anchor, origin = chosen_anchor(config.options(self.name).anchor, config.seed)
        use_diverse = config.mix.ratio > 0
        return MethodPlan(
            use_diverse=use_diverse,
            diversify=False,
            schedule="shuffle" if use_diverse else "task_only",
            ratio=config.mix.ratio if use_diverse else 0.0,
            special_tokens=[],
            task_transform=anchor_task(anchor),
            eval_transform=anchor_eval(anchor),
            notes=[
                f"anchor {anchor!r} ({origin}) on task and eval examples; "
                f"shuffled at ratio {config.mix.ratio:g}"
            ],
        )
