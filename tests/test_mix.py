"""Mixing schedules: counts, order, determinism, streaming, upsampling, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delia.core.config import MixConfig, build_config
from delia.core.errors import ConfigError, DataError, DeliaError
from delia.core.example import Example
from delia.data import read_examples, write_jsonl
from delia.mix import index_messages_jsonl, mix


def chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def task_examples(n: int) -> list[Example]:
    return [Example(messages=chat(f"task {i} <sep>", f"t{i}")) for i in range(n)]


def diverse_examples(n: int) -> list[Example]:
    return [Example(messages=chat(f"diverse {i}", f"d{i}"), source="diverse") for i in range(n)]


def write_diverse(directory: Path, n: int) -> Path:
    path = directory / "diverse.jsonl"
    write_jsonl(path, diverse_examples(n))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shuffle_counts_and_no_loss(tmp_path: Path) -> None:
    task = task_examples(12)
    diverse_path = write_diverse(tmp_path, 200)
    counts = mix(task, diverse_path, MixConfig(schedule="shuffle", ratio=10, seed=1), tmp_path / "m.jsonl")
    rows = read_rows(tmp_path / "m.jsonl")
    assert counts["total"] == len(rows) == 12 + 10 * 12
    assert counts["sources"] == {"diverse": 120, "task": 12}
    assert not counts["upsampled"]
    task_ids = [r["id"] for r in rows if r["source"] == "task"]
    diverse_ids = [r["id"] for r in rows if r["source"] == "diverse"]
    assert sorted(task_ids) == sorted(ex.id for ex in task)  # every task example exactly once
    assert len(set(diverse_ids)) == 120  # drawn without replacement
    assert set(diverse_ids) <= {ex.id for ex in diverse_examples(200)}
    # Shuffled together: the task examples are spread over the file, not bunched at one end.
    positions = [i for i, r in enumerate(rows) if r["source"] == "task"]
    assert positions[0] < 40 and positions[-1] > 90


def test_same_seed_gives_byte_identical_output(tmp_path: Path) -> None:
    task = task_examples(10)
    diverse_path = write_diverse(tmp_path, 150)
    cfg = MixConfig(schedule="shuffle", ratio=10, seed=1)
    first = mix(task, diverse_path, cfg, tmp_path / "a.jsonl")
    second = mix(task, diverse_path, cfg, tmp_path / "b.jsonl")
    assert sha256(tmp_path / "a.jsonl") == sha256(tmp_path / "b.jsonl") == first["sha256"] == second["sha256"]
    mix(task, diverse_path, MixConfig(schedule="shuffle", ratio=10, seed=2), tmp_path / "c.jsonl")
    assert sha256(tmp_path / "c.jsonl") != first["sha256"]


def test_interleave_is_algorithm_1(tmp_path: Path) -> None:
    task = task_examples(7)
    ratio = 3
    cfg = MixConfig(schedule="interleave", ratio=ratio)
    mix(task, write_diverse(tmp_path, 50), cfg, tmp_path / "m.jsonl")
    rows = read_rows(tmp_path / "m.jsonl")
    assert len(rows) == 7 * (1 + ratio)
    for i, example in enumerate(task):
        block = rows[i * (ratio + 1) : (i + 1) * (ratio + 1)]
        assert block[0]["id"] == example.id  # task examples keep their order...
        assert [r["source"] for r in block[1:]] == ["diverse"] * ratio  # ...each followed by R diverse
    assert len({r["id"] for r in rows if r["source"] == "diverse"}) == 7 * ratio


def test_interleave_needs_a_whole_ratio(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mix\.ratio.*whole number"):
        cfg = MixConfig(schedule="interleave", ratio=2.5)
        mix(task_examples(3), write_diverse(tmp_path, 20), cfg, tmp_path / "m.jsonl")


@pytest.mark.parametrize("order", ["task_first", "diverse_first"])
def test_two_stage_order(tmp_path: Path, order: str) -> None:
    cfg = MixConfig(schedule="two_stage", ratio=4, two_stage_order=order, seed=3)
    counts = mix(task_examples(5), write_diverse(tmp_path, 40), cfg, tmp_path / "m.jsonl")
    sources = [r["source"] for r in read_rows(tmp_path / "m.jsonl")]
    stages = ["task"] * 5 + ["diverse"] * 20
    assert sources == (stages if order == "task_first" else stages[::-1])
    assert counts["total"] == 25


def test_task_only_and_ratio_zero_are_the_same(tmp_path: Path) -> None:
    task = task_examples(9)
    only = mix(task, None, MixConfig(schedule="task_only", ratio=10, seed=4), tmp_path / "a.jsonl")
    cfg = MixConfig(schedule="shuffle", ratio=0, seed=4)
    zero = mix(task, write_diverse(tmp_path, 5), cfg, tmp_path / "b.jsonl")
    assert only["total"] == zero["total"] == 9
    assert only["sha256"] == zero["sha256"]
    assert sorted(r["id"] for r in read_rows(tmp_path / "a.jsonl")) == sorted(ex.id for ex in task)


def test_upsampling_warns_and_spreads_evenly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="delia.mix"):
        counts = mix(task_examples(6), write_diverse(tmp_path, 8), MixConfig(ratio=5), tmp_path / "m.jsonl")
    assert counts["upsampled"] and counts["diverse_distinct"] == 8 and counts["diverse"] == 30
    messages = [record.getMessage() for record in caplog.records]
    assert any("upsampling" in message and "8 diverse" in message for message in messages)
    uses = Counter(r["id"] for r in read_rows(tmp_path / "m.jsonl") if r["source"] == "diverse")
    assert len(uses) == 8 and set(uses.values()) <= {3, 4}  # 30 from 8: whole passes, then a partial one


def test_no_warning_when_there_is_enough(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="delia.mix"):
        mix(task_examples(2), write_diverse(tmp_path, 20), MixConfig(ratio=10), tmp_path / "m.jsonl")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_sources_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    lines = [{"messages": chat("a", "b")}, {"messages": chat("c", "d"), "source": "fact"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    counts = mix(task_examples(1), path, MixConfig(schedule="two_stage", ratio=2), tmp_path / "m.jsonl")
    assert counts["sources"] == {"diverse": 1, "fact": 1, "task": 1}


def test_other_formats_fall_back_and_give_the_same_mix(tmp_path: Path) -> None:
    task = task_examples(4)
    cfg = MixConfig(schedule="shuffle", ratio=3, seed=7)
    streamed = mix(task, write_diverse(tmp_path, 30), cfg, tmp_path / "a.jsonl")
    alpaca = [{"instruction": f"diverse {i}", "input": "", "output": f"d{i}"} for i in range(30)]
    (tmp_path / "pool.json").write_text(json.dumps(alpaca, indent=2), encoding="utf-8")
    from_array = mix(task, tmp_path / "pool.json", cfg, tmp_path / "b.jsonl")
    gz = tmp_path / "pool.jsonl.gz"
    gz.write_bytes(gzip.compress((tmp_path / "diverse.jsonl").read_bytes()))
    from_gz = mix(task, gz, cfg, tmp_path / "c.jsonl")
    assert streamed["sha256"] == from_array["sha256"] == from_gz["sha256"]


def test_messages_jsonl_is_indexed_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_diverse(tmp_path, 25)
    pool = index_messages_jsonl(path)
    assert pool is not None and len(pool) == 25
    assert pool.get(3) == read_examples(path, source="diverse")[3]
    pool.close()
    monkeypatch.setattr("delia.mix.read_examples", lambda *a, **k: pytest.fail("read the whole diverse file"))
    mix(task_examples(2), path, MixConfig(ratio=3), tmp_path / "m.jsonl")


def test_memory_does_not_grow_with_the_ratio(tmp_path: Path) -> None:
    diverse_path = write_diverse(tmp_path, 400)
    task = task_examples(20)

    def peak_bytes(ratio: int) -> int:
        tracemalloc.start()
        mix(task, diverse_path, MixConfig(ratio=ratio), tmp_path / f"m{ratio}.jsonl")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_bytes(2), peak_bytes(100)  # 40 draws vs 2,000 (five passes over the pool)
    assert (tmp_path / "m100.jsonl").stat().st_size > 30 * (tmp_path / "m2.jsonl").stat().st_size
    assert large < small * 1.5 + 200_000


def test_an_interrupted_mix_leaves_the_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text("old\n", encoding="utf-8")
    calls = {"n": 0}
    original = Example.to_json

    def crash_on_fifth(self: Example) -> str:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self)

    diverse_path = write_diverse(tmp_path, 30)
    monkeypatch.setattr(Example, "to_json", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        mix(task_examples(3), diverse_path, MixConfig(ratio=5), out)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverse.jsonl", "m.jsonl"]


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mix\.ratio .*must be a finite number >= 0, got -1"):
        build_config({"mix": {"ratio": -1}})
    unchecked = MixConfig.model_construct(schedule="shuffle", ratio=-1.0, seed=0)
    with pytest.raises(ConfigError, match=r"mix\.ratio"):  # a config that skipped validation is still checked
        mix(task_examples(1), None, unchecked, tmp_path / "m.jsonl")
    with pytest.raises(DeliaError, match="needs a diverse data file"):
        mix(task_examples(1), None, MixConfig(ratio=1), tmp_path / "m.jsonl")
    with pytest.raises(DeliaError, match="no task examples"):
        mix([], write_diverse(tmp_path, 3), MixConfig(ratio=1), tmp_path / "m.jsonl")
    broken = tmp_path / "broken.jsonl"
    good = (tmp_path / "diverse.jsonl").read_text(encoding="utf-8").splitlines()
    broken.write_text("\n".join([*good[:2], '{"messages": [', *good[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl:3: invalid JSON"):
        mix(task_examples(1), broken, MixConfig(ratio=1), tmp_path / "m.jsonl")
    with pytest.raises(DataError, match=r"missing\.jsonl: file does not exist"):
        mix(task_examples(1), tmp_path / "missing.jsonl", MixConfig(ratio=1), tmp_path / "m.jsonl")
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="no diverse examples"):
        mix(task_examples(1), tmp_path / "empty.json", MixConfig(ratio=1), tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


def _ratio_for(schedule: str) -> st.SearchStrategy[float]:
    whole = st.integers(0, 6).map(float)
    fractional = st.floats(0, 6, allow_nan=False).map(lambda r: round(r, 2))
    return whole if schedule == "interleave" else st.one_of(whole, fractional)


mix_cases = st.sampled_from(["shuffle", "interleave", "two_stage", "task_only"]).flatmap(
    lambda schedule: st.tuples(
        st.just(schedule),
        _ratio_for(schedule),
        st.integers(1, 12),  # task examples
        st.integers(1, 40),  # diverse pool
        st.integers(0, 2**31),  # seed
        st.sampled_from(["task_first", "diverse_first"]),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mix_cases)
def test_mix_properties(case: tuple[str, float, int, int, int, str]) -> None:
    schedule, ratio, n_task, n_pool, seed, order = case
    cfg = MixConfig(schedule=schedule, ratio=ratio, seed=seed, two_stage_order=order)
    task = task_examples(n_task)
    expected_diverse = 0 if schedule == "task_only" else round(ratio * n_task)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        diverse_path = write_diverse(directory, n_pool)
        counts = mix(task, diverse_path, cfg, directory / "a.jsonl")
        again = mix(task, diverse_path, cfg, directory / "b.jsonl")
        rows = read_rows(directory / "a.jsonl")
        assert (directory / "a.jsonl").read_bytes() == (directory / "b.jsonl").read_bytes()  # determinism
        assert counts == {**again, "out": counts["out"]}
    # Counts and ratio.
    assert counts["total"] == len(rows) == n_task + expected_diverse
    assert counts["diverse"] == expected_diverse
    # No task example lost or duplicated.
    assert sorted(r["id"] for r in rows if r["source"] == "task") == sorted(ex.id for ex in task)
    # Diverse draws: distinct while the pool lasts, then as even as whole passes allow.
    uses = Counter(r["id"] for r in rows if r["source"] == "diverse")
    assert sum(uses.values()) == expected_diverse
    if expected_diverse <= n_pool:
        assert all(count == 1 for count in uses.values())
    else:
        assert len(uses) == n_pool and max(uses.values()) - min(uses.values()) <= 1
        assert counts["upsampled"]


# ------------------------------------------------------------------ DMT's re-mixed share, diverse only


def test_two_stage_remix_puts_a_share_of_the_task_into_the_second_stage(tmp_path: Path) -> None:
    task = task_examples(10)
    cfg = MixConfig(schedule="two_stage", ratio=4, seed=3, two_stage_remix=0.3)
    counts = mix(task, write_diverse(tmp_path, 60), cfg, tmp_path / "m.jsonl")
    rows = read_rows(tmp_path / "m.jsonl")
    first, second = rows[:10], rows[10:]
    assert sorted(r["id"] for r in first) == sorted(ex.id for ex in task)  # stage one: the whole task
    remixed = [r["id"] for r in second if r["source"] == "task"]
    assert len(remixed) == 3 == counts["task_remixed"] and len(set(remixed)) == 3  # 0.3 x 10, no repeats
    assert set(remixed) <= {ex.id for ex in task}
    assert sum(r["source"] == "diverse" for r in second) == 40 == counts["diverse"]
    assert counts["total"] == 10 + 3 + 40 and counts["sources"] == {"diverse": 40, "task": 13}
    # Shuffled among the general data, not appended in a block at either end.
    positions = [i for i, r in enumerate(second) if r["source"] == "task"]
    assert positions != [0, 1, 2] and positions != [40, 41, 42]


def test_remix_rounds_up_so_a_small_task_keeps_one_example(tmp_path: Path) -> None:
    cfg = MixConfig(schedule="two_stage", ratio=2, two_stage_remix=1 / 256)
    counts = mix(task_examples(30), write_diverse(tmp_path, 80), cfg, tmp_path / "m.jsonl")
    assert counts["task_remixed"] == 1 and counts["sources"]["task"] == 31
    exact = MixConfig(schedule="two_stage", ratio=1, two_stage_remix=0.1)  # 0.1 x 30 is 3.0000000000000004
    assert (
        mix(task_examples(30), write_diverse(tmp_path, 80), exact, tmp_path / "e.jsonl")["task_remixed"] == 3
    )


def test_zero_remix_is_the_sequential_schedule_byte_for_byte(tmp_path: Path) -> None:
    """k = 0 is sequential two_stage: the same file, and a mix dump (so every mix hash) without the field."""
    diverse_path = write_diverse(tmp_path, 40)
    before = mix(
        task_examples(5), diverse_path, MixConfig(schedule="two_stage", ratio=4), tmp_path / "a.jsonl"
    )
    cfg = MixConfig(schedule="two_stage", ratio=4, two_stage_remix=0.0)
    after = mix(task_examples(5), diverse_path, cfg, tmp_path / "b.jsonl")
    assert before["sha256"] == after["sha256"] and after["task_remixed"] == 0
    assert "two_stage_remix" not in MixConfig().model_dump()
    assert MixConfig(two_stage_remix=0.5).model_dump(mode="json")["two_stage_remix"] == 0.5
    assert build_config({}).stage_hash("mix") == build_config({"mix": {"two_stage_remix": 0}}).stage_hash(
        "mix"
    )
    assert build_config({}).stage_hash("mix") != build_config({"mix": {"two_stage_remix": 0.5}}).stage_hash(
        "mix"
    )


def test_remix_needs_the_task_first(tmp_path: Path) -> None:
    diverse_path = write_diverse(tmp_path, 20)
    for cfg in (
        MixConfig(schedule="two_stage", ratio=1, two_stage_order="diverse_first", two_stage_remix=0.5),
        MixConfig(schedule="shuffle", ratio=1, two_stage_remix=0.5),
    ):
        with pytest.raises(ConfigError, match=r"mix\.two_stage_remix.*general stage"):
            mix(task_examples(3), diverse_path, cfg, tmp_path / "m.jsonl")
    with pytest.raises(ConfigError, match=r"mix\.two_stage_remix"):
        build_config({"mix": {"two_stage_remix": 1.5}})
    assert not (tmp_path / "m.jsonl").exists()


def test_diverse_only_draws_r_times_the_task_and_writes_no_task_example(tmp_path: Path) -> None:
    cfg = MixConfig(schedule="diverse_only", ratio=3, seed=2)
    counts = mix(task_examples(6), write_diverse(tmp_path, 50), cfg, tmp_path / "m.jsonl")
    rows = read_rows(tmp_path / "m.jsonl")
    assert counts["total"] == len(rows) == 18 and counts["sources"] == {"diverse": 18}
    assert len({r["id"] for r in rows}) == 18  # without replacement while the pool lasts
    with pytest.raises(ConfigError, match=r"mix\.ratio.*above 0"):
        mix(
            task_examples(6),
            tmp_path / "diverse.jsonl",
            MixConfig(schedule="diverse_only", ratio=0),
            tmp_path / "z",
        )
