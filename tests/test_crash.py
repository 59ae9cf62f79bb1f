"""Crash safety: `delia synth sample`, `mix`, `train` and `run` killed with SIGKILL at random moments, then
rerun (train with --resume), end with the same outputs as an uninterrupted run with the same seed.

Checked after each trial: outputs equal by sha256 (adapter tensors within 1e-5), every JSONL file whole
lines of JSON, no record lost or duplicated (cache keys, train-log steps, stage counts). Kill budget and
seed: DELIA_CRASH_KILLS (default 3 per command) and DELIA_CRASH_SEED (default 0). The harness is in
tests/crash_harness.py; the tiny random llama keeps each command to seconds of work.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_demo_config
from crash_harness import (
    Outcome,
    TrialReport,
    delia_argv,
    fresh_dir,
    jsonl_problems,
    kill_and_resume,
    leftover_temps,
    quiet_env,
    read_jsonl,
    run_once,
    sha256,
    tensors_close,
)

from delia.pipeline import STAGE_NAMES

KILLS = int(os.environ.get("DELIA_CRASH_KILLS", "3"))
SEED = int(os.environ.get("DELIA_CRASH_SEED", "0"))
SURVIVED: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def kill_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    total = sum(SURVIVED.values())
    detail = ", ".join(f"{name} {count}" for name, count in SURVIVED.items())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"crash harness: {total} kills survived ({detail})"
    if reporter is not None:
        reporter.write_line(line)
    print(line)


def user_assistant(user: str, assistant: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def reference(argv: list[str], out: Path, log: Path, cwd: Path) -> Outcome:
    outcome = run_once(argv, out, log, env=quiet_env(), cwd=cwd)
    assert outcome.returncode == 0, outcome.log[-3000:]
    return outcome


def work_window(outcome: Outcome) -> float:
    """Kills land within the uninterrupted run's working time (after its first write, before its exit)."""
    return max(0.2, 0.9 * (outcome.seconds - (outcome.first_write_s or 0.0)))


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def trial(
    name: str,
    first: list[str],
    resume: list[str],
    out: Path,
    ref: Outcome,
    tmp: Path,
    state: Callable[[], str],
    aim: list[Callable[[], bool]] | None = None,
    window: float | None = None,
) -> TrialReport:
    print(f"{name}: uninterrupted run {ref.describe()}")
    report = kill_and_resume(
        name,
        first,
        resume,
        out,
        kills=KILLS,
        seed=SEED,
        window_s=window or work_window(ref),
        env=quiet_env(),
        cwd=tmp,
        log_path=tmp / f"{name.replace(' ', '-')}.log",
        state=state,
        aim=aim,
    )
    print(report.line())
    SURVIVED[name] = report.kills
    assert report.kills > 0, f"no kill landed before {name} finished: {report.line()}"
    assert not jsonl_problems(out), jsonl_problems(out)
    return report


# ------------------------------------------------------------------------------------ synth sample


@pytest.mark.slow
def test_sigkilled_synth_sample_resumes_to_the_same_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    topics = ["the sea", "a city at night", "bread", "rain", "chess", "the moon", "trains", "bees"]
    rows = [
        user_assistant(f"Write {1 + i % 4} sentences about {topics[i % len(topics)]} (case {i}).", f"ref {i}")
        for i in range(40)
    ]
    queries = write_rows(tmp_path / "queries.jsonl", rows)

    def argv(out: Path) -> list[str]:
        # temperature > 0: a resumed run must sample each query exactly as the uninterrupted run did
        options = ["--max-new-tokens", "12", "--batch-size", "4", "--temperature", "0.8", "--seed", "7"]
        return delia_argv(
            "synth", "sample", "--queries", str(queries), "--out", str(out / "diverse.jsonl"),
            "--model", str(tiny_model_dir), *options,
        )  # fmt: skip

    ref_dir, crash_dir = fresh_dir(tmp_path / "ref"), fresh_dir(tmp_path / "crash")
    ref = reference(argv(ref_dir), ref_dir, tmp_path / "ref.log", tmp_path)

    def state() -> str:
        return f"{lines(crash_dir / 'diverse.cache.jsonl')}/{len(rows)} answers cached"

    trial("synth sample", argv(crash_dir), argv(crash_dir), crash_dir, ref, tmp_path, state)
    assert sha256(crash_dir / "diverse.jsonl") == sha256(ref_dir / "diverse.jsonl")
    cache = read_jsonl(crash_dir / "diverse.cache.jsonl")
    keys = [row["key"] for row in cache]
    assert len(keys) == len(set(keys)) == len(rows)  # every query answered once: none lost, none twice
    assert sorted(keys) == sorted(row["key"] for row in read_jsonl(ref_dir / "diverse.cache.jsonl"))
    assert not leftover_temps(crash_dir), leftover_temps(crash_dir)


# --------------------------------------------------------------------------------------------- mix


@pytest.mark.slow
def test_sigkilled_mix_rerun_writes_the_same_file(tmp_path: Path) -> None:
    filler = " ".join(["word"] * 40)
    task = write_rows(
        tmp_path / "task.jsonl",
        [user_assistant(f"task {i} <sep> {filler}", f'{{"answer": {i}}}') for i in range(3000)],
    )
    diverse = write_rows(
        tmp_path / "diverse.jsonl",
        [user_assistant(f"query {i} {filler}", f"answer {i} {filler}") for i in range(4000)],
    )

    def argv(out: Path) -> list[str]:
        return delia_argv(
            "mix", "--task", str(task), "--diverse", str(diverse), "--ratio", "8", "--seed", "3",
            "--out", str(out / "mixed.jsonl"),
        )  # fmt: skip

    ref_dir, crash_dir = fresh_dir(tmp_path / "ref"), fresh_dir(tmp_path / "crash")
    ref = reference(argv(ref_dir), ref_dir, tmp_path / "ref.log", tmp_path)

    def state() -> str:
        temps = sorted(crash_dir.glob(".mixed.jsonl.*.tmp"), key=lambda path: path.stat().st_mtime)
        written = lines(temps[-1]) if temps else 0  # the newest: this attempt's
        final = "exists" if (crash_dir / "mixed.jsonl").exists() else "absent"
        return f"{written} lines in the temp file, mixed.jsonl {final}"

    trial("mix", argv(crash_dir), argv(crash_dir), crash_dir, ref, tmp_path, state)
    assert sha256(crash_dir / "mixed.jsonl") == sha256(ref_dir / "mixed.jsonl")
    mixed = read_jsonl(crash_dir / "mixed.jsonl")
    assert len(mixed) == 3000 * 9
    assert sum(row["source"] == "task" for row in mixed) == 3000  # every task example once
    assert not leftover_temps(crash_dir), leftover_temps(crash_dir)


# ------------------------------------------------------------------------------------------- train


def train_config(tmp_path: Path, model_dir: Path) -> Path:
    config = {
        "model": {"name": str(model_dir)},
        "tokens": {"add": ["<sep>"]},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {
            "batch_size": 4,
            "micro_batch_size": 2,
            "epochs": 1,
            "max_length": 64,
            "lr": 1e-3,
            "checkpoint_every": 2,
            "threads": 1,
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sigkilled_train_resumes_to_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        user_assistant(f"Extract the fields of record {i} as <sep>.", f'{{"id": {i}}}') for i in range(64)
    ]
    data = write_rows(tmp_path / "train.jsonl", rows)
    config = train_config(tmp_path, tiny_model_dir)

    def argv(out: Path, *extra: str) -> list[str]:
        return delia_argv("train", "--data", str(data), "--out", str(out), "--config", str(config), *extra)

    ref_dir, crash_dir = tmp_path / "ref", tmp_path / "crash"
    ref = reference(argv(ref_dir), ref_dir, tmp_path / "ref.log", tmp_path)

    # The first attempt starts fresh; every rerun continues from the last checkpoint.
    def state() -> str:
        done = (
            sorted(p.name for p in (crash_dir / "checkpoints").glob("step-*")) if crash_dir.exists() else []
        )
        return f"{lines(crash_dir / 'train_log.jsonl')} steps logged, checkpoints {done}"

    trial("train", argv(crash_dir), argv(crash_dir, "--resume"), crash_dir, ref, tmp_path, state)
    adapter = "adapter/adapter_model.safetensors"
    tensors_close(crash_dir / adapter, ref_dir / adapter, atol=1e-5)
    log, ref_log = read_jsonl(crash_dir / "train_log.jsonl"), read_jsonl(ref_dir / "train_log.jsonl")
    assert [row["step"] for row in log] == list(range(1, 17))  # each step logged once, none lost
    assert [row["loss"] for row in log] == pytest.approx([row["loss"] for row in ref_log], abs=1e-5)
    assert not leftover_temps(crash_dir), leftover_temps(crash_dir)


# --------------------------------------------------------------------------------------------- run


def run_config(tmp_path: Path, model_dir: Path) -> Path:
    config = tiny_demo_config(
        model_dir,
        method="delia",
        sample={"sampling": {"max_new_tokens": 10, "temperature": 0.8}, "backend": {"batch_size": 4}},
        mix={"ratio": 3},
        train={"micro_batch_size": 2, "max_length": 96, "checkpoint_every": 1, "threads": 1},
        eval={"max_new_tokens": 8, "bootstrap": 20},
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sigkilled_run_reruns_to_the_same_results(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = run_config(tmp_path, tiny_model_dir)

    def argv(runs: Path) -> list[str]:
        return delia_argv("run", str(config), "--set", f"run_dir={runs}")

    ref_runs, crash_runs = fresh_dir(tmp_path / "ref"), fresh_dir(tmp_path / "crash")
    ref = reference(argv(ref_runs), ref_runs, tmp_path / "ref.log", tmp_path)

    def state() -> str:
        run_dir = crash_runs / "tiny"
        finished = [s for s in STAGE_NAMES if (run_dir / s / "manifest.json").exists()]
        working = [p.name for p in run_dir.glob(".*.partial")] if run_dir.exists() else []
        return f"stages done {finished}, in progress {working}"

    # Each kill is aimed at a stage (drawn with the seed, in pipeline order): it lands a random moment after
    # that stage's partial directory appears, so kills reach sampling, training and eval, not just startup.
    run_dir = crash_runs / "tiny"
    stages = ["diversify", "sample", "mix", "train", "eval"]
    targets = sorted(random.Random(SEED).sample(stages, min(KILLS, len(stages))), key=stages.index)
    aim = [
        lambda stage=stage: (
            (run_dir / f".{stage}.partial").exists() or (run_dir / stage / "manifest.json").exists()
        )
        for stage in targets
    ]
    print(f"run: kills aimed at {targets}")
    trial("run", argv(crash_runs), argv(crash_runs), crash_runs, ref, tmp_path, state, aim, window=2.0)
    ref_dir, crash_dir = ref_runs / "tiny", crash_runs / "tiny"
    for name in ("diversify/task.jsonl", "sample/diverse.jsonl", "mix/mixed.jsonl", "predictions.jsonl"):
        assert sha256(crash_dir / name) == sha256(ref_dir / name), name
    tensors_close(
        crash_dir / "adapter/adapter_model.safetensors", ref_dir / "adapter/adapter_model.safetensors"
    )
    for stage in STAGE_NAMES:
        manifest = json.loads((crash_dir / stage / "manifest.json").read_text())
        ref_manifest = json.loads((ref_dir / stage / "manifest.json").read_text())
        assert manifest["hash"] == ref_manifest["hash"], stage
        assert manifest.get("counts") == ref_manifest.get("counts"), stage
    steps = [row["step"] for row in read_jsonl(crash_dir / "train_log.jsonl")]
    assert steps == list(range(1, len(steps) + 1)) and steps
    assert not leftover_temps(crash_dir), leftover_temps(crash_dir)


# ------------------------------------------------------------------------- refused before any work


def test_a_run_refuses_task_instructions_without_the_declared_token(tmp_path: Path) -> None:
    from delia.core.config import build_config
    from delia.core.errors import ConfigError, DataError
    from delia.data import read_examples
    from delia.pipeline import check_special_tokens, run

    rows = [
        user_assistant("Extract the fields as <sep>.", "{}"),
        user_assistant("Extract the fields as JSON.", "{}"),
    ]
    task = write_rows(tmp_path / "nosep.jsonl", rows)
    config = build_config({"run_dir": str(tmp_path / "runs"), "task": {"train": str(task)}})
    with pytest.raises(DataError, match=r"nosep\.jsonl:2: the task instruction does not contain '<sep>'"):
        run(config, log=lambda line: None)  # refused before any model is loaded or stage is sampled
    assert not (tmp_path / "runs" / "run" / "sample").exists()
    sized = build_config({"task": {"train": str(task), "size": 2}})  # a sampled task has no line of its own
    with pytest.raises(ConfigError, match=r"tokens\.add.*task example 2 of 2"):
        check_special_tokens(sized, ["<sep>"], read_examples(task))
    check_special_tokens(sized, [], read_examples(task))  # a method that trains no token checks nothing
