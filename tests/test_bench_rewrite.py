"""bench/bench_rewrite.py: its prompts are the diversify stage's, over every phrasing and axis."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_prompts_cycle_through_phrasings_and_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench imports its sibling _common like a script does
    import bench_rewrite

    from delia.synth.axes import rewrite_prompt

    prompts = bench_rewrite.rewrite_prompts(20)
    assert len(prompts) == 20
    phrasings = bench_rewrite.PHRASINGS.read_text(encoding="utf-8").splitlines()
    assert prompts[0] == rewrite_prompt("vocabulary", 0, phrasings[0].strip(), ["<sep>"])
    assert len({str(p) for p in prompts}) == 20  # no two alike
    assert all(phrasings[i % 8].strip() in p[-1]["content"] for i, p in enumerate(prompts))
