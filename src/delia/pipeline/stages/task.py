"""`task`: the task and eval examples, read or built once and kept as files, so the later stages (and a
rerun) read the same examples whatever happens to the sources."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

from delia.core.config import RunConfig
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.core.paths import require_file
from delia.core.registry import STAGES
from delia.data.builders import build
from delia.data.io import read_examples, write_jsonl
from delia.pipeline.cache import StageResult, data_hash, files_in
from delia.pipeline.context import RunContext
from delia.pipeline.stages.base import StageKey


class TaskStage:
    """Runs before the method plans the run, so it reads the run's context, not a planned state."""

    name: ClassVar[str] = "task"
    sections: ClassVar[tuple[str, ...]] = ("task", "seed")
    upstream: ClassVar[tuple[str, ...]] = ()

    def key(self, context: RunContext) -> StageKey:
        config = context.config
        inputs = {
            "files": files_in([config.task.model_dump(), eval_data_options(config)]),
            "eval": eval_data_options(config),
        }
        return StageKey(config.stage_hash(*self.sections, upstream=(data_hash(inputs),)), inputs)

    def compute(self, context: RunContext, out: Path) -> dict[str, Any]:
        task, evals = load_task_examples(context.config), load_eval_examples(context.config)
        write_jsonl(out / "task.jsonl", task)
        write_jsonl(out / "eval.jsonl", evals)
        return {"counts": {"task": len(task), "eval": len(evals)}}

    def examples(self, result: StageResult) -> tuple[list[Example], list[Example]]:
        """(task examples, eval examples) of the finished stage."""
        eval_file = result.dir / "eval.jsonl"
        evals = read_examples(eval_file) if eval_file.stat().st_size else []
        return read_examples(result.dir / "task.jsonl"), evals


def eval_data_options(config: RunConfig) -> dict[str, Any]:
    cfg = config.eval
    return {"file": cfg.file, "format": cfg.format, "builder": cfg.builder, "options": cfg.builder_options}


def load_task_examples(config: RunConfig) -> list[Example]:
    cfg = config.task
    train = require_file("task.train", cfg.train) if cfg.train else None
    if cfg.builder:
        examples = build(cfg.builder, train, cfg.builder_options, "task")
    elif train:
        examples = read_examples(train, cfg.format, source="task")
    else:
        raise ConfigError("task.train", "no task data: give a file, or a builder")
    if cfg.size is not None and cfg.size < len(examples):
        chosen = sorted(random.Random(config.seed).sample(range(len(examples)), cfg.size))
        examples = [examples[i] for i in chosen]
    return examples


def load_eval_examples(config: RunConfig) -> list[Example]:
    cfg = config.eval
    file = require_file("eval.file", cfg.file) if cfg.file else None
    if cfg.builder:
        return build(cfg.builder, file, cfg.builder_options, "eval")
    if file:
        return read_examples(file, cfg.format, source="eval")
    return []


TASK = STAGES.register(TaskStage.name)(TaskStage())
