"""Seen and unseen instruction phrasings: a builder holds a seeded share of its phrasings out of the task
and can evaluate with those and with new ones written for evaluation, so a score on phrasings the model
never trained on can be told apart from one on its training phrasings (issue 18)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from delia.core.errors import ConfigError, DataError
from delia.data.builders._common import instructions_from_file, stable_pick

SEEN = "seen"
UNSEEN = "unseen"
Group = Literal["seen", "unseen"]
Wanted = Literal["seen", "unseen", "both"]


@dataclass(frozen=True)
class Phrasings:
    """The phrasings a task may train on (`seen`) and those kept for evaluation (`unseen`)."""

    seen: list[str]
    unseen: list[str]
    split: bool  # some phrasing is held out or added: only then do examples record their group

    def groups(self, wanted: Wanted, field: str) -> list[Group]:
        """The groups a build draws from, in the order each record's examples are made."""
        groups: list[Group] = [SEEN, UNSEEN] if wanted == "both" else [wanted]
        if UNSEEN in groups and not self.unseen:
            raise ConfigError(
                f"{field}.phrasing",
                f"{wanted!r} needs unseen phrasings: set holdout_instructions or eval_instructions",
            )
        return groups

    def pick(self, group: Group, key: str, salt: int, own: str | None = None) -> str:
        """A record's phrasing in `group`: its own when that belongs there, else a stable pick."""
        options = self.seen if group == SEEN else self.unseen
        return own if own in options else stable_pick(options, key, salt)


def read_eval_instructions(spec: list[str] | str | None) -> list[str]:
    """New phrasings for evaluation: a list, a .txt file (one per non-empty line) or a task file (the last
    paragraphs of its user turns)."""
    if spec is None:
        return []
    if isinstance(spec, list):
        return [line.strip() for line in spec if line.strip()]
    path = Path(spec)
    if not path.exists():
        raise DataError(spec, None, "file does not exist")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return instructions_from_file(spec)


def split_phrasings(base: list[str], holdout: int, seed: int, added: list[str], field: str) -> Phrasings:
    """Hold `holdout` of `base` out (chosen by `seed`, the same in the task's and the eval's build); the
    held-out ones and `added` are the unseen phrasings."""
    if holdout >= len(base):
        raise ConfigError(
            f"{field}.holdout_instructions",
            f"holds out {holdout} of {len(base)} phrasings; at least one must stay for the task",
        )
    held = set(random.Random(f"holdout:{seed}").sample(range(len(base)), holdout))
    seen = [p for i, p in enumerate(base) if i not in held]
    trained = [p for p in added if p in seen]
    if trained:
        raise ConfigError(f"{field}.eval_instructions", f"{trained[0]!r} is a training phrasing")
    unseen = [p for i, p in enumerate(base) if i in held]
    unseen += [p for p in dict.fromkeys(added) if p not in unseen]
    return Phrasings(seen=seen, unseen=unseen, split=bool(unseen))
