"""`run(config)`: one run directory, six cached stages.

    task -> diversify -> sample -> mix -> train -> eval        ({run_dir}/{name}/{stage}/manifest.json each)

A stage's key hashes exactly the config sections it reads plus its upstream keys (and the content of any
input file), so a rerun skips every stage whose inputs did not change and never loads the model when all
are cached. A stage is computed in `.{stage}.partial/` and renamed into place after its manifest is written:
a crash never leaves a stage looking finished, and resumable work (sampling, checkpoints) survives in the
partial directory for the next attempt.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from delia.core.config import RunConfig
from delia.core.errors import ConfigError, DataError
from delia.core.example import Example, content_id
from delia.core.io import write_json
from delia.data.io import read_examples, write_jsonl
from delia.methods import get_method
from delia.methods.base import MethodPlan

if TYPE_CHECKING:
    from delia.generation.threads import ThreadPolicy

STAGES = ("task", "diversify", "sample", "mix", "train", "eval")
MANIFEST = "manifest.json"
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------ stage cache


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((stage_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _swap_into_place(partial: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def _prepare_partial(final: Path, resume_key: str) -> Path:
    """A work directory for the stage: kept from a crashed attempt (or the last finished one) only when its
    resume key matches, so resumable caches are reused but never mixed across different inputs."""
    partial = final.with_name(f".{final.name}.partial")
    marker = partial / ".resume_key"
    if partial.exists() and (not marker.exists() or marker.read_text() != resume_key):
        shutil.rmtree(partial)
    if not partial.exists():
        previous = read_manifest(final)
        if previous is not None and previous.get("resume_key") == resume_key:
            shutil.copytree(final, partial, ignore=shutil.ignore_patterns(MANIFEST))
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(resume_key)
    return partial


@dataclass
class StageResult:
    dir: Path
    manifest: dict[str, Any]
    cached: bool


def run_stage(
    run_dir: Path,
    name: str,
    key: str,
    compute: Callable[[Path], dict[str, Any]],
    *,
    inputs: dict[str, Any] | None = None,
    resume_key: str | None = None,
    log: Log = print,
) -> StageResult:
    """Skip the stage when its manifest carries `key`; else compute it in a partial dir and rename it in."""
    final = run_dir / name
    manifest = read_manifest(final)
    if manifest is not None and manifest.get("hash") == key:
        log(f"{name:<9} cached  ({key})")
        return StageResult(final, manifest, cached=True)
    log(f"{name:<9} running ({key})")
    partial = _prepare_partial(final, resume_key or key)
    start = time.perf_counter()
    info = compute(partial)
    manifest = {
        "stage": name,
        "hash": key,
        "resume_key": resume_key or key,
        "inputs": inputs or {},
        **info,
        "seconds": round(time.perf_counter() - start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (partial / ".resume_key").unlink(missing_ok=True)
    write_json(partial / MANIFEST, manifest)
    _swap_into_place(partial, final)
    log(f"{name:<9} done in {manifest['seconds']:.1f}s")
    return StageResult(final, manifest, cached=False)


def fingerprint(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def files_in(value: Any) -> dict[str, str]:
    """Fingerprints of every existing file a (nested) config value names, so edited data invalidates."""
    found: dict[str, str] = {}
    if isinstance(value, str) and value and len(value) < 4096 and Path(value).is_file():
        found[value] = fingerprint(value)
    elif isinstance(value, dict):
        for item in value.values():
            found.update(files_in(item))
    elif isinstance(value, list):
        for item in value:
            found.update(files_in(item))
    return found


def examples_hash(examples: list[Example]) -> str:
    """Content, not ids: transforms may keep an example's id while changing its messages."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.source}:{content_id(ex.messages)}\n".encode())
    return digest.hexdigest()[:12]


def data_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------- run


@dataclass
class Run:
    """State shared by the stages of one run; the base model is loaded at most once, on first need."""

    config: RunConfig
    dir: Path
    log: Log
    results: dict[str, StageResult] = field(default_factory=dict)
    trained: tuple[Any, Any] | None = None  # the model trained in this process, reused by eval
    _base: tuple[Any, Any] | None = None

    def base(self) -> tuple[Any, Any]:
        if self._base is None:
            from delia.core.models import load_model, load_tokenizer

            cfg = self.config.model
            self.log(f"loading {cfg.name}")
            tokenizer = load_tokenizer(cfg.name, trust_remote_code=cfg.trust_remote_code)
            model = load_model(cfg.name, cfg.device, cfg.dtype, trust_remote_code=cfg.trust_remote_code)
            self._base = (model.eval(), tokenizer)
        return self._base

    def take_base(self) -> tuple[Any, Any] | None:
        """Hand the loaded base model over to training (which changes it in place), if one is loaded."""
        base, self._base = self._base, None
        return base

    def backend(self, backend_cfg: Any) -> Any:
        from delia.generation import make_backend

        uses_base = backend_cfg.kind == "local" and backend_cfg.model is None
        model, tokenizer = self.base() if uses_base else (None, None)
        return make_backend(backend_cfg, self.config.model.name, model=model, tokenizer=tokenizer)


def run_dir_of(config: RunConfig) -> Path:
    return Path(config.run_dir) / config.name


def thread_policy(config: RunConfig) -> ThreadPolicy:
    """train.threads when set; else, on a CPU, as many threads as other processes leave cores free, re-checked
    every half minute during generation (sampling, rewriting, eval) as well as training.

    Measured here (2 cores, load ~11): generating 84 tokens took 7 s with 1 thread and 105 s with 2, as
    every op's thread barrier waits for a descheduled thread. On an idle machine all cores are faster.
    """
    from delia.core.models import pick_device
    from delia.generation.threads import ThreadPolicy

    return ThreadPolicy(config.train.threads, pick_device(config.model.device))


def run(config: RunConfig, *, log: Log | None = None) -> Path:
    """Run every stage of `config` (reusing cached ones) and return the run directory."""
    import torch

    from delia.generation.threads import install_thread_policy

    run_dir = run_dir_of(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    state = Run(config, run_dir, log or (lambda line: print(f"[{config.name}] {line}", flush=True)))
    threads = thread_policy(config)
    install_thread_policy(threads)
    if threads.auto or config.train.threads:
        follows = " (follows free cores)" if threads.auto else ""
        state.log(f"torch threads: {torch.get_num_threads()}{follows}")
    method = get_method(config.method)
    task, evals = stage_task(state)
    if method.tasks and task and task[0].meta.get("task") not in method.tasks:
        raise ConfigError("method", f"{config.method} supports only {', '.join(method.tasks)} tasks")
    plan = method.plan(config, task)
    check_special_tokens(config, plan.special_tokens, task)
    effective = effective_config(config, plan)
    (run_dir / "plan.json").write_text(json.dumps(plan_summary(plan, effective), indent=2) + "\n")
    task = stage_diversify(state, plan, task)
    if plan.task_transform is not None:
        task = plan.task_transform(task)
    task = [*task, *plan.extra_task_examples]
    # Sampling runs after diversification: the mix draws ratio x |task as mixed| diverse examples.
    diverse_path = stage_sample(state, plan, len(task))
    mixed_path = stage_mix(state, plan, effective, task, diverse_path)
    adapter = stage_train(state, plan, effective, mixed_path, evals)
    if evals:
        stage_eval(state, plan, effective, adapter, evals)
    write_summary(run_dir)
    return run_dir


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
    from delia.data.io import iter_json_records

    lines = (line for position, (line, _) in enumerate(iter_json_records(cfg.train)) if position == index)
    return next(lines, None)


def effective_config(config: RunConfig, plan: MethodPlan) -> RunConfig:
    """The config with the plan's choices written in: what training actually reads (and what is hashed)."""
    effective = config.model_copy(deep=True)
    effective.mix.schedule = plan.schedule
    effective.mix.ratio = plan.ratio if plan.use_diverse else 0.0
    effective.mix.two_stage_order = plan.two_stage_order
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


def plan_summary(plan: MethodPlan, effective: RunConfig) -> dict[str, Any]:
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
        "notes": plan.notes,
    }


# ---------------------------------------------------------------------------------------------- stages


def eval_data_options(config: RunConfig) -> dict[str, Any]:
    cfg = config.eval
    return {"file": cfg.file, "format": cfg.format, "builder": cfg.builder, "options": cfg.builder_options}


def load_task_examples(config: RunConfig) -> list[Example]:
    from delia.data.builders import build

    cfg = config.task
    if cfg.builder:
        examples = build(cfg.builder, cfg.train or None, cfg.builder_options, "task")
    elif cfg.train:
        examples = read_examples(cfg.train, cfg.format, source="task")
    else:
        raise ConfigError("task.train", "no task data: give a file, or a builder")
    if cfg.size is not None and cfg.size < len(examples):
        chosen = sorted(random.Random(config.seed).sample(range(len(examples)), cfg.size))
        examples = [examples[i] for i in chosen]
    return examples


def load_eval_examples(config: RunConfig) -> list[Example]:
    from delia.data.builders import build

    cfg = config.eval
    if cfg.builder:
        return build(cfg.builder, cfg.file, cfg.builder_options, "eval")
    if cfg.file:
        return read_examples(cfg.file, cfg.format, source="eval")
    return []


def stage_task(state: Run) -> tuple[list[Example], list[Example]]:
    config = state.config
    inputs = {
        "files": files_in([config.task.model_dump(), eval_data_options(config)]),
        "eval": eval_data_options(config),
    }
    key = config.stage_hash("task", "seed", upstream=(data_hash(inputs),))

    def compute(out: Path) -> dict[str, Any]:
        task, evals = load_task_examples(config), load_eval_examples(config)
        write_jsonl(out / "task.jsonl", task)
        write_jsonl(out / "eval.jsonl", evals)
        return {"counts": {"task": len(task), "eval": len(evals)}}

    result = run_stage(state.dir, "task", key, compute, inputs=inputs, log=state.log)
    state.results["task"] = result
    evals = read_examples(result.dir / "eval.jsonl") if (result.dir / "eval.jsonl").stat().st_size else []
    return read_examples(result.dir / "task.jsonl"), evals


def diverse_needed(config: RunConfig, plan: MethodPlan, n_task: int) -> int:
    needed = math.ceil(plan.ratio * n_task)
    return min(needed, config.sample.limit) if config.sample.limit is not None else needed


def stage_sample(state: Run, plan: MethodPlan, n_task: int) -> Path | None:
    """Diverse data: the given file, or the model's answers to ratio x |task| queries (self-sampling)."""
    config = state.config
    if not plan.use_diverse or plan.ratio <= 0:
        return None
    if config.sample.data:
        if not Path(config.sample.data).is_file():
            raise ConfigError("sample.data", f"{config.sample.data} does not exist")
        return Path(config.sample.data)
    needed = diverse_needed(config, plan, n_task)
    inputs = {"needed": needed, "files": files_in(config.sample.queries)}
    resume_key = config.stage_hash("model", "sample", "seed", upstream=(data_hash(inputs["files"]),))
    key = config.stage_hash("model", "sample", "seed", upstream=(data_hash(inputs),))

    def compute(out: Path) -> dict[str, Any]:
        from delia.synth.sample import sample_diverse

        queries = diverse_queries(config, needed)
        backend = state.backend(config.sample.backend)
        answers = sample_diverse(queries, backend, config.sample, out / "diverse.jsonl", config.model.name)
        # The sampler writes its own manifest.json beside its output; ours replaces it and keeps it nested.
        sampler = read_manifest(out) or {}
        return {"counts": {"queries": len(queries), "diverse": len(answers)}, "sampler": sampler}

    result = run_stage(state.dir, "sample", key, compute, inputs=inputs, resume_key=resume_key, log=state.log)
    state.results["sample"] = result
    return result.dir / "diverse.jsonl"


def diverse_queries(config: RunConfig, needed: int) -> list[Example]:
    if config.sample.queries is None:
        from delia.synth.topics import builtin_queries

        return builtin_queries(needed, config.seed)
    queries = read_examples(config.sample.queries, config.sample.queries_format, source="diverse")
    random.Random(config.seed).shuffle(queries)
    return queries[:needed]


def stage_diversify(state: Run, plan: MethodPlan, task: list[Example]) -> list[Example]:
    config = state.config
    if not plan.diversify:
        return task
    key = config.stage_hash("model", "diversify", upstream=(state.results["task"].manifest["hash"],))

    def compute(out: Path) -> dict[str, Any]:
        from delia.synth.diversify import diversify

        backend = state.backend(config.diversify.backend)
        # Writes task.jsonl and task.report.json (acceptance per axis, fallbacks).
        examples, report = diversify(task, backend, config.diversify, out / "task.jsonl")
        fallbacks = report.get("fallbacks") if isinstance(report, dict) else None
        return {"counts": {"task_in": len(task), "task_out": len(examples), "fallbacks": fallbacks}}

    result = run_stage(state.dir, "diversify", key, compute, log=state.log)
    state.results["diversify"] = result
    return read_examples(result.dir / "task.jsonl")


def stage_mix(
    state: Run, plan: MethodPlan, effective: RunConfig, task: list[Example], diverse_path: Path | None
) -> Path:
    diverse_key = None
    if diverse_path is not None:
        sample = state.results.get("sample")
        diverse_key = sample.manifest["hash"] if sample else fingerprint(diverse_path)
    inputs = {"task": examples_hash(task), "n_task": len(task), "diverse": diverse_key}
    key = effective.stage_hash("mix", upstream=(data_hash(inputs),))

    def compute(out: Path) -> dict[str, Any]:
        from delia.mix import mix

        write_jsonl(out / "task.jsonl", task)
        counts = mix(task, diverse_path, effective.mix, out / "mixed.jsonl")
        counts.pop("out", None)  # names the partial directory, which is renamed away
        return {"counts": counts}

    result = run_stage(state.dir, "mix", key, compute, inputs=inputs, log=state.log)
    state.results["mix"] = result
    return result.dir / "mixed.jsonl"


def method_sections(config: RunConfig) -> tuple[str, ...]:
    """The method's own option section (e.g. `tki`), when it has one: its hooks may read it."""
    name = config.method
    return (name,) if name in RunConfig.model_fields and name not in STAGES else ()


def stage_train(
    state: Run, plan: MethodPlan, effective: RunConfig, mixed_path: Path, evals: list[Example]
) -> Path | None:
    if not plan.train:
        return None
    hooks = type(plan.hooks).__name__ if plan.hooks is not None else None
    upstream = (state.results["mix"].manifest["hash"], f"method={effective.method}", f"hooks={hooks}")
    sections = ("model", "tokens", "lora", "train", *method_sections(effective))
    key = effective.stage_hash(*sections, upstream=upstream)

    def compute(out: Path) -> dict[str, Any]:
        from delia.train import fit

        examples = read_examples(mixed_path)
        held_out = evals[: effective.train.eval_examples] if effective.train.eval_every else None
        resume = (out / "checkpoints").exists()
        model, tokenizer, token_ids = model_for_training(state, effective)
        trained = fit(
            effective,
            model,
            tokenizer,
            token_ids,
            examples,
            out,
            eval_examples=held_out,
            hooks=plan.hooks,
            resume=resume,
        )
        state.trained = (trained.model, trained.tokenizer)
        result = trained.result
        return {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "train_seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "counts": {"examples": result.n_examples},
            "max_steps": effective.train.max_steps,
        }

    result = run_stage(state.dir, "train", key, compute, log=state.log)
    state.results["train"] = result
    link(state.dir / "adapter", Path("train") / "adapter")
    copy_if_exists(result.dir / "train_log.jsonl", state.dir / "train_log.jsonl")
    return result.dir / "adapter"


def model_for_training(state: Run, effective: RunConfig) -> tuple[Any, Any, list[int]]:
    """The base model already loaded for sampling, with the plan's tokens added; else a fresh load."""
    base = state.take_base()
    if base is None:
        from delia.train import load_for_training

        return load_for_training(effective)
    from delia.train.tokens import add_special_tokens

    model, tokenizer = base
    if not effective.tokens.add:
        return model, tokenizer, []
    # As delia.train.load_for_training does for a freshly loaded model.
    add_special_tokens(model, tokenizer, effective.tokens, seed=effective.seed)
    return model, tokenizer, [tokenizer.convert_tokens_to_ids(t) for t in dict.fromkeys(effective.tokens.add)]


def stage_eval(
    state: Run, plan: MethodPlan, effective: RunConfig, adapter: Path | None, evals: list[Example]
) -> None:
    config = state.config
    chosen = evals[: config.eval.limit] if config.eval.limit is not None else evals
    if plan.eval_transform is not None:
        chosen = plan.eval_transform(chosen)
    train = state.results.get("train")
    upstream = (
        train.manifest["hash"] if train else "untrained",
        examples_hash(chosen),
        f"method={config.method}",
        f"generation={sorted(plan.generation_options)}",
    )
    key = effective.stage_hash("model", "eval", "seed", *method_sections(config), upstream=upstream)

    def compute(out: Path) -> dict[str, Any]:
        from delia.evaluate import evaluate_model

        model, tokenizer = trained_model(state, adapter)
        options = plan.generation_options
        metrics = evaluate_model(
            model, tokenizer, chosen, config.eval, out, seed=config.seed, generation_options=options
        )
        return {"counts": {"eval": len(chosen)}, "metrics": headline(metrics)}

    result = run_stage(state.dir, "eval", key, compute, log=state.log)
    state.results["eval"] = result
    for name in ("predictions.jsonl", "metrics.json"):
        copy_if_exists(result.dir / name, state.dir / name)


def trained_model(state: Run, adapter: Path | None) -> tuple[Any, Any]:
    if adapter is None:
        return state.base()
    if state.trained is not None:
        return state.trained
    from delia.train import load_adapter_model

    return load_adapter_model(state.config.model.name, adapter, device=state.config.model.device)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: round(float(v["value"]), 4) for name, v in metrics.get("values", {}).items()}


def link(path: Path, target: Path) -> None:
    """A relative symlink, replaced atomically."""
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)


def copy_if_exists(source: Path, target: Path) -> None:
    if source.exists():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


# --------------------------------------------------------------------------------------------- summary


def summary_row(run_dir: Path) -> dict[str, Any]:
    """One run's headline figures, from its manifests only."""
    run_dir = Path(run_dir)
    manifests = {name: read_manifest(run_dir / name) or {} for name in STAGES}
    plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").exists() else {}
    config_file = run_dir / "config.yaml"
    method = (yaml.safe_load(config_file.read_text()) or {}).get("method") if config_file.exists() else None
    mix_counts = manifests["mix"].get("counts", {})
    return {
        "run": run_dir.name,
        "method": method,
        "task examples": manifests["task"].get("counts", {}).get("task"),
        "train examples": manifests["train"].get("counts", {}).get("examples", mix_counts.get("total")),
        "steps": manifests["train"].get("steps", 0 if plan.get("train") is False else None),
        "train s": manifests["train"].get("train_seconds"),
        "final loss": manifests["train"].get("final_loss"),
        "eval n": manifests["eval"].get("counts", {}).get("eval"),
        **manifests["eval"].get("metrics", {}),
    }


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    stages = []
    for name in STAGES:
        manifest = read_manifest(run_dir / name)
        if manifest:
            stages.append(
                {
                    "stage": name,
                    "hash": manifest["hash"],
                    "seconds": manifest.get("seconds"),
                    "counts": json.dumps(manifest.get("counts", {})),
                }
            )
    plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").exists() else {}
    text = (
        f"# {run_dir.name}\n\n{markdown_table([summary_row(run_dir)])}\n\n## Stages\n\n"
        f"{markdown_table(stages)}\n\n## Plan\n\n```json\n{json.dumps(plan, indent=2)}\n```\n"
    )
    tmp = run_dir / ".summary.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, run_dir / "summary.md")
    return text


__all__ = ["STAGES", "run", "run_dir_of", "summary_row", "write_summary"]
