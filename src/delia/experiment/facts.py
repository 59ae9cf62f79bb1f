"""Per-cell facts read from the run directories: whether instructions were diversified, how many rewrites
were accepted, optimizer steps, truncated share. The report states these, never a config's notes: a note
can say "k=1 rewrite per task example" of a run that never rewrote anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delia.core.io import read_json
from delia.experiment.records import CellFacts, CellRecord, RewriteCounts

# A cell with more of its answers cut off by eval.max_new_tokens than this is flagged in the report: its
# format score then measures the token budget as much as the model.
TRUNCATED_FLAG = 0.05
DIVERSIFY_REPORT = "task.report.json"  # synth.diversify writes it beside the diversified task.jsonl


def cell_facts(record: CellRecord) -> CellFacts:
    """The facts of one finished cell, from its run directory (and its record's eval values)."""
    run_dir = Path(record.run_dir)
    plan = read_json(run_dir / "plan.json")
    plan_diversify = None if plan is None else bool(plan.get("diversify"))
    stage = read_json(run_dir / "diversify" / "manifest.json")
    diversified = bool(plan_diversify) and stage is not None
    truncated = record.values.get("truncated")
    return CellFacts(
        cell=record.cell.name,
        method=record.cell.method,
        plan_diversify=plan_diversify,
        diversify_stage=stage is not None,
        diversified=diversified,
        rewrites=rewrite_counts(run_dir / "diversify", stage) if diversified else None,
        train_steps=train_steps(run_dir, plan),
        truncated=truncated.value if truncated is not None else None,
        n_eval=record.n_eval,
    )


def rewrite_counts(stage_dir: Path, manifest: dict[str, Any]) -> RewriteCounts:
    """Accepted rewrites from the diversify report; example counts from the stage manifest."""
    report = read_json(stage_dir / DIVERSIFY_REPORT) or {}
    counts = manifest.get("counts") or {}
    return RewriteCounts(
        requested=report.get("requested"),
        accepted=report.get("accepted"),
        accepted_llm=report.get("accepted_llm"),
        accepted_rule=report.get("accepted_rule"),
        fallbacks=counts.get("fallbacks", report.get("fallbacks")),
        examples_in=counts.get("task_in", report.get("examples")),
        examples_out=counts.get("task_out", report.get("outputs")),
    )


def train_steps(run_dir: Path, plan: dict[str, Any] | None) -> int | None:
    """Optimizer steps from train/manifest.json; 0 for a plan that does not train; None when unknown."""
    manifest = read_json(run_dir / "train" / "manifest.json")
    if manifest is not None and manifest.get("steps") is not None:
        return int(manifest["steps"])
    return 0 if plan is not None and plan.get("train") is False else None


def flagged(truncated: float | None) -> bool:
    return truncated is not None and truncated > TRUNCATED_FLAG
