"""The one record every stage reads and writes: chat messages plus a source tag."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field, model_validator

ROLES = ("system", "user", "assistant")


def content_id(messages: list[dict[str, str]]) -> str:
    """Stable hash of the messages, so the same content gets the same id in every run."""
    canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class Example(BaseModel):
    """A chat example. `source` is "task", "diverse", or a method-specific tag (e.g. "fact")."""

    id: str = ""
    messages: list[dict[str, str]]
    source: str = "task"
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_and_fill_id(self) -> Example:
        if not self.messages:
            raise ValueError("messages is empty")
        for turn in self.messages:
            if turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise ValueError(f"each message needs a role in {ROLES} and a string content, got {turn!r}")
        if not self.id:
            self.id = content_id(self.messages)
        return self

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Every turn before the final assistant turn (what the model is given)."""
        return self.messages[:-1] if self.messages[-1]["role"] == "assistant" else list(self.messages)

    @property
    def response(self) -> str:
        """The final assistant turn, or "" when the example has none (a bare query)."""
        return self.messages[-1]["content"] if self.messages[-1]["role"] == "assistant" else ""

    @property
    def instruction(self) -> str:
        """The last user turn."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def with_response(self, response: str, **meta: Any) -> Example:
        """A copy with its final assistant turn set to `response` (a new id follows from the content)."""
        messages = [*self.prompt_messages, {"role": "assistant", "content": response}]
        return Example(messages=messages, source=self.source, meta={**self.meta, **meta})

    def with_instruction(self, instruction: str, **meta: Any) -> Example:
        """A copy whose last user turn is replaced by `instruction`."""
        messages = [dict(m) for m in self.messages]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last_user]["content"] = instruction
        return Example(messages=messages, source=self.source, meta={**self.meta, **meta})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), ensure_ascii=False)
