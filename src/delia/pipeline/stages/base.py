"""What a built-in stage after `task` is: a name, the config sections its key hashes, the stages it reads,
and three steps the run drives (`delia.pipeline.driver.advance`): key, compute, collect. Also the two ways a
stage publishes a file at the top of the run directory (a link, a copy)."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from delia.pipeline.cache import StageResult
from delia.pipeline.context import RunState


@dataclass(frozen=True)
class StageKey:
    """The cache key of one stage in one run, with the inputs its manifest records; `resume_key` (default:
    the key) decides whether a crashed attempt's partial work may be reused."""

    hash: str
    inputs: dict[str, Any] | None = None
    resume_key: str | None = None


class PlannedStage(ABC):
    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]  # the config sections its key hashes
    upstream: ClassVar[tuple[str, ...]]  # the stages whose output it reads

    @abstractmethod
    def key(self, state: RunState) -> StageKey | None:
        """The stage's key; None when the plan leaves nothing for it to compute."""

    @abstractmethod
    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        """Write the stage's files into `out`; return the manifest fields it adds."""

    @abstractmethod
    def collect(self, state: RunState, result: StageResult | None) -> None:
        """Take the stage's output (None: it had nothing to compute) into `state` for the stages after it."""


def link(path: Path, target: Path) -> None:
    """A relative symlink, replaced atomically."""
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)


def copy_if_exists(source: Path, target: Path) -> None:
    """Copy `source` over `target` atomically, when there is a `source`."""
    if source.exists():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
