"""The generation interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from delia.core.config import SamplingConfig

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


class Backend(Protocol):
    name: str
    stats: GenerationStats

    def generate(self, prompts: list[list[Message]], sampling: SamplingConfig) -> list[str]:
        """One completion per chat prompt, in the prompts' order."""
        ...
