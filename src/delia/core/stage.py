"""What a pipeline stage is. It lives on the ground floor so that a method (a floor below the pipeline) can
bring a stage of its own, cached and resumed exactly like the built-in ones (fact-based's fact generation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from delia.core.config import BackendConfig, RunConfig


class StageContext(Protocol):
    """What a stage's compute may use of its run: the config, the run directory, the log, the base model
    (loaded at most once per run, on first need) and a generation backend over it."""

    config: RunConfig
    dir: Path

    def log(self, line: str) -> None: ...

    def base_model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]: ...

    def backend(self, backend_cfg: BackendConfig) -> Any: ...


Compute = Callable[[StageContext, Path], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One cached step of a run: `runs/<name>/<stage>/` holds its files and its manifest.

    `compute(context, out)` writes the stage's files into `out` (a partial directory renamed into place
    afterwards) and returns the manifest fields it adds (`counts`, figures). The stage's key hashes the
    config `sections` it reads plus the keys of its `upstream` stages.
    """

    name: str
    sections: tuple[str, ...]
    compute: Compute
    upstream: tuple[str, ...] = ("task",)
