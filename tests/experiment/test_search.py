"""Golden-section search over the diverse ratio."""

from __future__ import annotations

import math

import pytest

from delia.experiment.search import golden_section_search, untried_inside


def test_golden_section_finds_the_maximum_of_a_unimodal_function_in_few_evaluations() -> None:
    calls: list[int] = []

    def objective(ratio: int) -> float:
        calls.append(ratio)
        return -((math.log1p(ratio) - math.log1p(12)) ** 2)

    trace = golden_section_search(objective, 0, 200, max_evals=12)
    assert abs(trace.best[0] - 12) <= 1
    assert len(calls) == len(set(calls)) <= 12  # memoised: no ratio run twice


def test_golden_section_finds_a_maximum_at_the_lower_bound() -> None:
    trace = golden_section_search(lambda r: -float(r), 0, 64, max_evals=6)
    assert trace.best == (0, 0.0)
    assert trace.points[0][0] == 0 and trace.points[1][0] == 64


def test_golden_section_stops_when_no_integer_is_left_to_try() -> None:
    trace = golden_section_search(lambda r: -abs(r - 2), 0, 4, max_evals=50)
    assert trace.best[0] == 2
    assert len(trace.points) <= 5
    assert not untried_inside(math.log1p(1.5), math.log1p(2.5), {2: 0.0})


def test_golden_section_rejects_a_bad_range() -> None:
    with pytest.raises(ValueError):
        golden_section_search(lambda r: 0.0, 5, 5, 3)
