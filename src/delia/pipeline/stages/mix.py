"""`mix`: the task examples as mixed and the diverse data, combined by the plan's schedule and ratio into
the training file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from delia.core.registry import STAGES
from delia.data.io import write_jsonl
from delia.mix import mix
from delia.pipeline.cache import StageResult, data_hash, examples_hash, fingerprint
from delia.pipeline.context import RunState
from delia.pipeline.stages.base import PlannedStage, StageKey


class MixStage(PlannedStage):
    name: ClassVar[str] = "mix"
    sections: ClassVar[tuple[str, ...]] = ("mix",)  # of the effective config: the plan sets schedule, ratio
    upstream: ClassVar[tuple[str, ...]] = ("diversify", "sample")

    def key(self, state: RunState) -> StageKey:
        inputs = {"task": examples_hash(state.task), "n_task": len(state.task), "diverse": diverse_key(state)}
        return StageKey(state.effective.stage_hash(*self.sections, upstream=(data_hash(inputs),)), inputs)

    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        write_jsonl(out / "task.jsonl", state.task)
        counts = mix(state.task, state.diverse, state.effective.mix, out / "mixed.jsonl")
        counts.pop("out", None)  # names the partial directory, which is renamed away
        return {"counts": counts}

    def collect(self, state: RunState, result: StageResult | None) -> None:
        """Nothing to take: training reads `mix/mixed.jsonl` itself."""


def diverse_key(state: RunState) -> str | None:
    """The sample stage's key, or the given diverse file's fingerprint; None when nothing is mixed in."""
    if state.diverse is None:
        return None
    sample = state.context.results.get("sample")
    return sample.manifest["hash"] if sample else fingerprint(state.diverse)


STAGES.register(MixStage.name)(MixStage())
