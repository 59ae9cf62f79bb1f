"""bench/bench_scale.py: its data preparation, step figures, flatness comparison and per-process peak RSS."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def scale(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench imports its sibling _common like a script does
    import bench_scale

    return bench_scale


def write_alpaca(path: Path, outputs: list[str]) -> None:
    records = [{"instruction": f"Say {i}.", "input": "", "output": out} for i, out in enumerate(outputs)]
    path.write_bytes(gzip.compress(json.dumps(records).encode()))


def test_alpaca_conversion_skips_records_without_an_answer(scale: Any, tmp_path: Path) -> None:
    write_alpaca(tmp_path / "a.json.gz", ["one", "  ", "three"])
    count = scale.alpaca_as_messages(tmp_path / "a.json.gz", tmp_path / "a.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert count == len(rows) == 2
    assert [row["messages"][-1]["content"] for row in rows] == ["one", "three"]
    assert all(row["source"] == "diverse" for row in rows)


def test_task_subset_keeps_the_first_records(scale: Any, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}\n')
    assert scale.task_subset(tmp_path / "t.jsonl", 2, tmp_path / "sub.jsonl") == 2
    assert (tmp_path / "sub.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'


def test_train_args_fix_the_step_count_and_batch(scale: Any) -> None:
    settings = scale.Settings("m", steps=20, batch=8, max_length=256, lora_r=16, seed=0)
    args = scale.train_args(Path("mixed.jsonl"), Path("out"), settings)
    overrides = {args[i + 1] for i, arg in enumerate(args) if arg == "--set"}
    assert {"train.max_steps=20", "train.batch_size=8", "train.micro_batch_size=8"} <= overrides
    assert {"lora.r=16", "train.max_length=256", "tokens.add=[<sep>]"} <= overrides


def test_step_figures_from_a_train_log(scale: Any, tmp_path: Path) -> None:
    rows = [
        {"step": 1, "elapsed": 3.0, "tokens": 100},
        {"step": 2, "elapsed": 4.0, "tokens": 100},
        {"step": 3, "elapsed": 6.0, "tokens": 300},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = scale.step_figures(scale.step_rows(tmp_path / "log.jsonl"))
    assert figures["steps"] == 3
    assert figures["train_seconds"] == 6.0
    assert figures["first_step_seconds"] == 3.0
    assert figures["median_step_seconds"] == 1.5  # steps 2 and 3: the first is warm-up
    assert figures["ms_per_token"] == pytest.approx(1000 * 3.0 / 400, abs=1e-3)


def test_compare_names_the_ratios_and_checks_the_goal(scale: Any) -> None:
    rows = [
        {"ratio": 500.0, "records": 1100, "peak_rss_mib": 1300.0, "median_step_seconds": 2.0},
        {"ratio": 10.0, "records": 100, "peak_rss_mib": 1000.0, "median_step_seconds": 2.0},
    ]
    rows[0]["train_rss_before_steps_mib"], rows[1]["train_rss_before_steps_mib"] = 900.0, 800.0
    flat = scale.compare(rows)
    assert flat["rss_ratio_500_vs_10"] == 1.3
    assert flat["step_time_ratio_500_vs_10"] == 1.0
    assert flat["before_steps_kib_per_record"] == pytest.approx(100 * 1024 / 1000)
    assert flat["rss_flat"] is False
    rows[0]["peak_rss_mib"] = 1100.0
    assert scale.compare(rows)["rss_flat"] is True


def test_last_json_reads_pretty_printed_output(scale: Any) -> None:
    assert scale.last_json('note\n{\n  "a": {\n    "b": 1\n  }\n}\n') == {"a": {"b": 1}}


def test_child_peak_is_its_own_not_the_parents(scale: Any, tmp_path: Path) -> None:
    """ru_maxrss of a child starts from the parent's peak; the bench's VmHWM figure must not."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    ballast = bytearray(300 * 2**20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # touch every page so the parent's resident set really holds it
    measured = scale.run_cli(["--help"], tmp_path)
    assert measured.returncode == 0, measured.stderr
    assert measured.peak_rss_mib is not None
    assert 5 < measured.peak_rss_mib < 250
    del ballast


@pytest.mark.slow
def test_one_ratio_end_to_end_on_the_tiny_model(
    scale: Any, tmp_path: Path, tiny_model_dir: Path, shared_data: Path
) -> None:
    write_alpaca(tmp_path / "a.json.gz", [f"answer {i}" for i in range(8)])
    diverse = tmp_path / "diverse.jsonl"
    scale.alpaca_as_messages(tmp_path / "a.json.gz", diverse)
    task = tmp_path / "task.jsonl"
    scale.task_subset(shared_data / "delia-reproduce" / "train_dataset.jsonl", 3, task)
    settings = scale.Settings(str(tiny_model_dir), steps=2, batch=2, max_length=64, lora_r=4, seed=0)
    row = scale.run_ratio(2, task, diverse, tmp_path, settings)
    assert (row["records"], row["task"], row["diverse"]) == (9, 3, 6)
    assert row["steps"] == 2
    assert row["train_seconds"] > 0 and row["seconds_per_step"] > 0
    assert row["mix_peak_rss_mib"] > 5 and row["train_peak_rss_mib"] > row["mix_peak_rss_mib"]
    assert 0 < row["train_rss_before_steps_mib"] <= row["train_peak_before_steps_mib"]
    assert row["train_peak_before_steps_mib"] <= row["train_peak_rss_mib"]


def test_machine_info_names_the_cpu_versions_and_load(scale: Any) -> None:
    import _common

    info = _common.machine_info(load_before=[1.0, 1.0, 1.0])
    assert info["cores"] >= 1 and info["cpu"]
    assert set(info["flags"]) >= {"avx512_bf16", "amx_bf16"}
    assert info["versions"]["torch"] and info["versions"]["transformers"]
    assert info["load_average"]["before"] == [1.0, 1.0, 1.0] and len(info["load_average"]["after"]) == 3
    busy = {"cores": 2, "load_average": {"before": [3.0, 0, 0], "after": [0.5, 0, 0]}}
    idle = {"cores": 2, "load_average": {"before": [0.2, 0, 0], "after": [0.5, 0, 0]}}
    assert _common.is_shared(busy) and not _common.is_shared(idle)
