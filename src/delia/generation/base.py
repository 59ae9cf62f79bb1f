"""The generation interface every backend implements, and what a backend's registered factory is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from delia.core.config import BackendConfig, SamplingConfig
from delia.core.errors import DeliaError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    per_prompt_tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def add_call(self, new_tokens: list[int], started: float) -> None:
        """Count one generate() call: its prompts' new tokens and the time since `started` (perf_counter)."""
        self.prompts += len(new_tokens)
        self.new_tokens += sum(new_tokens)
        self.per_prompt_tokens.extend(new_tokens)
        self.seconds += time.perf_counter() - started


class PartialGeneration(DeliaError):
    """generate() failed for some prompts: the answers that did arrive, by prompt index, so that a caller
    with a cache can keep them and a rerun asks only for the rest."""

    def __init__(self, message: str, answers: dict[int, str], new_tokens: dict[int, int]) -> None:
        super().__init__(message)
        self.answers = answers
        self.new_tokens = new_tokens


class Backend(Protocol):
    name: str
    stats: GenerationStats

    def generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> list[str]:
        """One completion per chat prompt, in the prompts' order."""
        ...


@dataclass(frozen=True)
class BackendRequest:
    """What `make_backend` was asked for; each registered factory (`BACKENDS`) takes the parts it needs."""

    cfg: BackendConfig
    model_spec: str  # `cfg.model` already applied
    model: PreTrainedModel | None  # the model being tuned, for a local backend to reuse
    tokenizer: PreTrainedTokenizerBase | None
    device: str
    dtype: str
    progress: bool


BackendFactory = Callable[[BackendRequest], Backend]
