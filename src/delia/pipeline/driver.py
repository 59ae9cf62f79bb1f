"""`run(config)`: one run directory, its stages in `STAGE_NAMES` order, each cached
(`{run_dir}/{name}/{stage}/manifest.json`, see delia.pipeline.cache).

`task` runs first, then the method's own stages (fact-based's facts), then the method plans the run from
the task examples and those stages' directories; the planned stages follow, reading the effective config.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from delia.core.config import RunConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.example import Example
from delia.core.io import atomic_write
from delia.core.models import pick_device
from delia.core.registry import STAGES
from delia.core.stage import Stage
from delia.methods import get_method
from delia.methods.base import Method
from delia.pipeline.cache import Log, run_stage
from delia.pipeline.context import RunContext, RunState
from delia.pipeline.effective import check_special_tokens, effective_config, plan_summary
from delia.pipeline.stages import STAGE_NAMES
from delia.pipeline.stages.base import PlannedStage
from delia.pipeline.stages.task import TaskStage
from delia.pipeline.summary import write_summary


def run_dir_of(config: RunConfig) -> Path:
    return Path(config.run_dir) / config.name


def run(config: RunConfig, *, log: Log | None = None) -> Path:
    """Run every stage of `config` (reusing cached ones) and return the run directory."""
    run_dir = run_dir_of(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", config.to_yaml(run_dir))
    context = RunContext(config, run_dir, log or (lambda line: print(f"[{config.name}] {line}", flush=True)))
    install_threads(context)
    method = get_method(config.method)
    first, *planned = STAGE_NAMES
    task, evals = run_task_stage(STAGES.get(first), context)
    check_method_supports(config, method, task)
    stage_dirs = run_method_stages(context, method.stages(config))
    state = plan_run(context, method, task, evals, stage_dirs)
    for name in planned:
        advance(STAGES.get(name), state)
    write_summary(run_dir)
    return run_dir


def install_threads(context: RunContext) -> None:
    """train.threads when set; else, on a CPU, as many threads as other processes leave cores free, re-checked
    every half minute during generation (sampling, rewriting, eval) as well as training.

    Measured here (2 cores, load ~11): generating 84 tokens took 7 s with 1 thread and 105 s with 2, as
    every op's thread barrier waits for a descheduled thread. On an idle machine all cores are faster.
    """
    import torch

    from delia.generation.threads import follow_free_cores  # torch

    config = context.config
    threads = follow_free_cores(config.train.threads, pick_device(config.model.device))
    if threads.auto or config.train.threads:
        follows = " (follows free cores)" if threads.auto else ""
        context.log(f"torch threads: {torch.get_num_threads()}{follows}")


def run_task_stage(stage: TaskStage, context: RunContext) -> tuple[list[Example], list[Example]]:
    """The first stage, run before the method plans the run: (task examples, eval examples)."""
    key = stage.key(context)
    compute = partial(stage.compute, context)
    result = run_stage(context.dir, stage.name, key.hash, compute, inputs=key.inputs, log=context.log)
    context.results[stage.name] = result
    return stage.examples(result)


def check_method_supports(config: RunConfig, method: Method, task: list[Example]) -> None:
    if method.tasks and task and task[0].meta.get("task") not in method.tasks:
        raise ConfigError("method", f"{config.method} supports only {', '.join(method.tasks)} tasks")


def run_method_stages(context: RunContext, stages: list[Stage]) -> dict[str, Path]:
    """The method's own stages, cached like the built-in ones; {stage name: its finished directory}."""
    stage_dirs: dict[str, Path] = {}
    for stage in stages:
        missing = [name for name in stage.upstream if name not in context.results]
        if missing:
            raise DeliaError(f"stage {stage.name} reads {', '.join(missing)}, which has not run before it")
        upstream = tuple(context.results[name].manifest["hash"] for name in stage.upstream)
        key = context.config.stage_hash(*stage.sections, upstream=upstream)
        result = run_stage(context.dir, stage.name, key, partial(stage.compute, context), log=context.log)
        context.results[stage.name] = result
        stage_dirs[stage.name] = result.dir
    return stage_dirs


def plan_run(
    context: RunContext,
    method: Method,
    task: list[Example],
    evals: list[Example],
    stage_dirs: dict[str, Path],
) -> RunState:
    """The method's plan for this run: checked, written to `plan.json`, turned into the effective config."""
    config = context.config
    plan = method.plan(config, task, stage_dirs)
    check_special_tokens(config, plan.special_tokens, task)
    effective = effective_config(config, plan)
    atomic_write(context.dir / "plan.json", json.dumps(plan_summary(plan, effective, config), indent=2))
    return RunState(context, plan, effective, task, evals)


def advance(stage: PlannedStage, state: RunState) -> None:
    """Run one planned stage through the cache (unless the plan leaves it nothing) and collect its output."""
    key = stage.key(state)
    result = None
    if key is not None:
        context = state.context
        compute = partial(stage.compute, state)
        result = run_stage(
            context.dir,
            stage.name,
            key.hash,
            compute,
            inputs=key.inputs,
            resume_key=key.resume_key,
            log=context.log,
        )
        context.results[stage.name] = result
    stage.collect(state, result)
