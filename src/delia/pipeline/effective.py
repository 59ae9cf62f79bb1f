"""A method's plan -> the effective config: the run's config with the plan's choices written in. Training
reads it and the later stages hash it, so two methods that plan the same run share its cache entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delia.core.config import RunConfig
from delia.core.errors import ConfigError, DataError
from delia.core.example import Example
from delia.data.io import iter_json_records
from delia.methods.base import MethodPlan
from delia.pipeline.cache import read_manifest


def effective_config(config: RunConfig, plan: MethodPlan) -> RunConfig:
    """The config with the plan's choices written in: what training actually reads (and what is hashed)."""
    effective = config.model_copy(deep=True)
    effective.mix.schedule = plan.schedule
    effective.mix.ratio = plan.ratio if plan.use_diverse else 0.0
    effective.mix.two_stage_order = plan.two_stage_order
    effective.mix.two_stage_remix = plan.two_stage_remix
    effective.tokens.add = list(plan.special_tokens)
    effective.tokens.init = plan.token_init
    effective.tokens.description = plan.token_description
    if plan.match_steps_of:
        effective.train.max_steps = matched_steps(config, plan.match_steps_of)
    return effective


def matched_steps(config: RunConfig, target: str) -> int:
    """The optimizer steps the named run's finished train stage took."""
    candidates = [Path(target), Path(config.run_dir) / target]
    for candidate in candidates:
        manifest = read_manifest(candidate / "train")
        if manifest is not None and manifest.get("steps"):
            return int(manifest["steps"])
    raise ConfigError("matched_to", f"{target} has no finished train stage (run it first)")


def plan_summary(plan: MethodPlan, effective: RunConfig, config: RunConfig | None = None) -> dict[str, Any]:
    """What `plan.json` records of a run's plan; given the run's `config`, the notes also say what the
    plan made of it that the config does not show (ratio 0 training on the task alone)."""
    note = ratio_zero_note(config, plan) if config is not None else None
    return {
        "use_diverse": plan.use_diverse,
        "diversify": plan.diversify,
        "train": plan.train,
        "schedule": effective.mix.schedule,
        "ratio": effective.mix.ratio,
        "special_tokens": effective.tokens.add,
        "token_init": effective.tokens.init,
        "max_steps": effective.train.max_steps,
        "match_steps_of": plan.match_steps_of,
        "hooks": type(plan.hooks).__name__ if plan.hooks is not None else None,
        "notes": [*plan.notes, *([note] if note else [])],
    }


def ratio_zero_note(config: RunConfig, plan: MethodPlan) -> str | None:
    """A mix at ratio 0 has no diverse data: the run trains on the task alone, whatever mix.schedule says."""
    if config.mix.ratio != 0 or plan.schedule != "task_only" or config.mix.schedule == "task_only":
        return None
    return (
        f"mix.ratio is 0: no diverse data, so the run trains on the task examples alone "
        f"(schedule task_only, not mix.schedule {config.mix.schedule})"
    )


def check_special_tokens(config: RunConfig, tokens: list[str], task: list[Example]) -> None:
    """Every task prompt must hold each special token the plan trains: a token no prompt holds is never
    trained, and the run would quietly measure nothing."""
    for token in tokens:
        for index, example in enumerate(task):
            if any(token in turn["content"] for turn in example.prompt_messages):
                continue
            message = (
                f"the task instruction does not contain {token!r}, the special token tokens.add declares "
                f"(method {config.method}); put it in every task instruction, or set tokens.add: []"
            )
            line = task_file_line(config, index)
            if line is not None:
                raise DataError(config.task.train, line, message)
            raise ConfigError("tokens.add", f"task example {index + 1} of {len(task)}: {message}")


def task_file_line(config: RunConfig, index: int) -> int | None:
    """The line task example `index` starts on, when the task file is taken whole (no builder, no size)."""
    cfg = config.task
    if cfg.builder or not cfg.train or cfg.size is not None:
        return None
    lines = (line for position, (line, _) in enumerate(iter_json_records(cfg.train)) if position == index)
    return next(lines, None)
