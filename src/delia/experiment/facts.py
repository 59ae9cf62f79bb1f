"""Per-cell facts read from the run directories: whether instructions were diversified, how many rewrites
were accepted, optimizer steps, truncated share, and which of the phrasings the eval asked with the cell
actually trained on. The report states these, never a config's notes: a note can say "k=1 rewrite per
task example" of a run that never rewrote anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from delia.core.config import DiversifyConfig, RunConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.io import read_json
from delia.data.io import read_examples
from delia.experiment.records import CellFacts, CellRecord, PhrasingCoverage, RewriteCounts
from delia.synth.locate import locate_instruction

# A cell with more of its answers cut off by eval.max_new_tokens than this is flagged in the report: its
# format score then measures the token budget as much as the model.
TRUNCATED_FLAG = 0.05
DIVERSIFY_REPORT = "task.report.json"  # synth.diversify writes it beside the diversified task.jsonl
TRAINED = Path("mix") / "mixed.jsonl"  # what the trainer read: its `task` examples are the ones trained on
PHRASING = "phrasing"  # a predictions.jsonl row's group, where the eval example had one


def cell_facts(record: CellRecord, config: RunConfig) -> CellFacts:
    """The facts of one finished cell, from its run directory (and its record's eval values); `config`, the
    cell's run config, says how to find an instruction in a prompt."""
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
        phrasings=phrasing_coverage(run_dir, config.diversify),
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


def phrasing_coverage(run_dir: Path, cfg: DiversifyConfig) -> dict[str, PhrasingCoverage] | None:
    """Per phrasing group of the scored eval items: how many carry a phrasing that is the instruction of a
    task example in the cell's training data. None without groups or without a training file."""
    rows = prediction_rows(run_dir)
    trained_file = run_dir / TRAINED
    if not any(PHRASING in row for row in rows) or not trained_file.exists():
        return None
    trained = {phrasing_of(ex, cfg) for ex in read_examples(trained_file) if ex.source == "task"}
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.get(PHRASING) is not None:
            prompt = Example(messages=row["prompt"])
            groups.setdefault(row[PHRASING], []).append(phrasing_of(prompt, cfg))
    return {
        group: PhrasingCoverage(
            items=len(asked), phrasings=len(set(asked)), trained=sum(p in trained for p in asked)
        )
        for group, asked in sorted(groups.items())
    }


def prediction_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "predictions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def phrasing_of(example: Example, cfg: DiversifyConfig) -> str:
    """The instruction part of the last user turn, located as diversification locates it (a meta field is
    not in a prompt, so the separator or regex); the whole turn when it cannot be found."""
    try:
        return locate_instruction(example, None, cfg.separator, cfg.regex).instruction.strip()
    except DeliaError:
        return example.instruction.strip()
