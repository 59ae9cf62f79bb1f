"""`sample`: the diverse data, either the file `sample.data` names or the model's own answers to
ratio x |task as mixed| queries (self-sampling), so it runs after diversification."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, ClassVar

from delia.core.config import RunConfig
from delia.core.example import Example
from delia.core.paths import require_file
from delia.core.registry import STAGES
from delia.data.io import read_examples
from delia.pipeline.cache import StageResult, data_hash, files_in, read_manifest
from delia.pipeline.context import RunState
from delia.pipeline.stages.base import PlannedStage, StageKey
from delia.synth.sample import sample_diverse
from delia.synth.topics import builtin_queries


class SampleStage(PlannedStage):
    name: ClassVar[str] = "sample"
    sections: ClassVar[tuple[str, ...]] = ("model", "sample", "seed")
    upstream: ClassVar[tuple[str, ...]] = ("diversify",)  # the size of the task as mixed

    def key(self, state: RunState) -> StageKey | None:
        config = state.config
        if not uses_diverse(state) or config.sample.data:
            return None
        inputs = {"needed": diverse_needed(state), "files": files_in(config.sample.queries)}
        # Without the count, so a larger task resumes the sampler's answer cache instead of starting over.
        resume_key = config.stage_hash(*self.sections, upstream=(data_hash(inputs["files"]),))
        return StageKey(config.stage_hash(*self.sections, upstream=(data_hash(inputs),)), inputs, resume_key)

    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        config = state.config
        queries = diverse_queries(config, diverse_needed(state))
        backend = state.context.backend(config.sample.backend)
        answers = sample_diverse(queries, backend, config.sample, out / "diverse.jsonl", config.model.name)
        # The sampler writes its own manifest.json beside its output; ours replaces it and keeps it nested.
        sampler = read_manifest(out) or {}
        return {"counts": {"queries": len(queries), "diverse": len(answers)}, "sampler": sampler}

    def collect(self, state: RunState, result: StageResult | None) -> None:
        if result is not None:
            state.diverse = result.dir / "diverse.jsonl"
        elif uses_diverse(state):
            state.diverse = given_diverse_data(state.config)


def uses_diverse(state: RunState) -> bool:
    return state.plan.use_diverse and state.plan.ratio > 0


def given_diverse_data(config: RunConfig) -> Path:
    return Path(require_file("sample.data", config.sample.data))


def diverse_needed(state: RunState) -> int:
    needed = math.ceil(state.plan.ratio * len(state.task))
    limit = state.config.sample.limit
    return min(needed, limit) if limit is not None else needed


def diverse_queries(config: RunConfig, needed: int) -> list[Example]:
    if config.sample.queries is None:
        return builtin_queries(needed, config.seed)
    path = require_file("sample.queries", config.sample.queries)
    queries = read_examples(path, config.sample.queries_format, source="diverse")
    random.Random(config.seed).shuffle(queries)
    return queries[:needed]


STAGES.register(SampleStage.name)(SampleStage())
