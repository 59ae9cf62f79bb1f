"""`diversify`: the task instructions rewritten along the diversification axes (when the plan asks), then
the plan's own task transform and extra task examples: what the mix and the sample size see."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from delia.core.registry import STAGES
from delia.data.io import read_examples
from delia.pipeline.cache import StageResult
from delia.pipeline.context import RunState
from delia.pipeline.stages.base import PlannedStage, StageKey
from delia.synth.diversify import diversify


class DiversifyStage(PlannedStage):
    name: ClassVar[str] = "diversify"
    sections: ClassVar[tuple[str, ...]] = ("model", "diversify")
    upstream: ClassVar[tuple[str, ...]] = ("task",)

    def key(self, state: RunState) -> StageKey | None:
        if not state.plan.diversify:
            return None
        task_key = state.context.results["task"].manifest["hash"]
        return StageKey(state.config.stage_hash(*self.sections, upstream=(task_key,)))

    def compute(self, state: RunState, out: Path) -> dict[str, Any]:
        backend = state.context.backend(state.config.diversify.backend)
        # Writes task.jsonl and task.report.json (acceptance per axis, fallbacks).
        examples, report = diversify(state.task, backend, state.config.diversify, out / "task.jsonl")
        fallbacks = report.get("fallbacks") if isinstance(report, dict) else None
        counts = {"task_in": len(state.task), "task_out": len(examples), "fallbacks": fallbacks}
        # For the summary: without keep_originals the rewrites replace the originals (k=1: as many out as in).
        return {
            "counts": counts,
            "k": state.config.diversify.k,
            "originals_kept": state.config.diversify.keep_originals,
        }

    def collect(self, state: RunState, result: StageResult | None) -> None:
        task = read_examples(result.dir / "task.jsonl") if result is not None else state.task
        if state.plan.task_transform is not None:
            task = state.plan.task_transform(task)
        state.task = [*task, *state.plan.extra_task_examples]


STAGES.register(DiversifyStage.name)(DiversifyStage())
