"""bench/bench_sampling.py: the FLOP ceiling it records beside the measured speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_llama

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_ceiling_is_the_matmul_peak_over_two_flops_per_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench imports its sibling _common like a script does
    import bench_sampling

    monkeypatch.setattr(bench_sampling, "matmul_peak", lambda dtype: 0.5)  # GFLOP/s, not measured here
    monkeypatch.setattr(bench_sampling, "cpu_supports_bf16", lambda: False)
    model = tiny_llama(64)
    at_peak = 0.5 / (2 * sum(p.numel() for p in model.parameters()) / 1e9)
    ceiling = bench_sampling.flop_ceiling(model, new_tokens_per_s=at_peak / 4)
    assert ceiling["matmul_dtype"] == "float32"
    assert ceiling["new_tokens_per_s_at_peak"] == pytest.approx(at_peak, rel=1e-3)
    assert ceiling["fraction_of_ceiling"] == pytest.approx(0.25, abs=1e-3)
    assert ceiling["goal_1000_within_ceiling"] == (at_peak >= 1000)
