"""A resumable answer cache: one fsync'd JSONL line per answered prompt, keyed by what fixes the answer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from delia.core.config import SamplingConfig
from delia.data.io import AppendLog
from delia.generation.base import Message


def cache_key(model: str, prompt: list[Message], sampling: SamplingConfig) -> str:
    """(model, prompt hash, sampling params) -> key. The prompt holds the query and any in-context turn."""
    blob = json.dumps(
        {"model": model, "prompt": prompt, "sampling": sampling.model_dump(mode="json")},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class AnswerCache(AppendLog):
    """Append-only: an interrupted run loses at most the line being written; the first answer per key wins."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.answers: dict[str, dict[str, Any]] = {}
        for row in self.records():
            self.answers.setdefault(row["key"], row)

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def get(self, key: str) -> dict[str, Any]:
        return self.answers[key]

    def put(self, key: str, completion: str, new_tokens: int, **extra: Any) -> None:
        if key in self.answers:
            return
        row = {"key": key, "completion": completion, "new_tokens": new_tokens, **extra}
        self.append(row)
        self.answers[key] = row
