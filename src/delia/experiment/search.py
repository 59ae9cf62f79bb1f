"""`--search ratio`: the diverse ratio that maximises a validation metric, in few runs.

Golden-section search over u = log(1 + ratio) on [log(1 + lo), log(1 + hi)]: the log scale because the
paper's ratios span orders of magnitude (0 to 100+), `1 +` so that ratio 0 (no diverse data) is in range.
Each probe point is rounded to an integer ratio and memoised, so a point the bracket revisits costs
nothing; the search stops after `max_evals` distinct runs, or when the bracket holds no untried integer.
With `include_bounds` both ends are evaluated first, as the best ratio may be an end (e.g. 0). The answer
is the best ratio among every evaluated point (ties: the smaller, cheaper ratio), not just the last
bracket. Golden-section search assumes a unimodal objective; a validation metric on a few dozen examples
is noisy, so the evaluated points (with their CIs) are reported, not just the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from delia.experiment.search_records import SearchPoint

INV_PHI = (math.sqrt(5) - 1) / 2  # 0.618...
MAX_ITERATIONS = 100


@dataclass
class SearchTrace:
    points: list[tuple[int, float]] = field(default_factory=list)  # (ratio, value) in evaluation order
    memo: dict[int, float] = field(default_factory=dict)
    brackets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def best(self) -> tuple[int, float]:
        return max(self.points, key=lambda p: (p[1], -p[0]))


def to_ratio(u: float) -> int:
    return max(0, round(math.expm1(u)))


def golden_section_search(
    objective: Callable[[int], float],
    lo: float,
    hi: float,
    max_evals: int,
    include_bounds: bool = True,
) -> SearchTrace:
    """Maximise objective(ratio) over integer ratios in [lo, hi] (module docstring)."""
    if not 0 <= lo < hi:
        raise ValueError(f"need 0 <= lo < hi, got lo={lo}, hi={hi}")
    if max_evals < 1:
        raise ValueError("max_evals must be at least 1")
    trace = SearchTrace()

    def f(u: float) -> float:
        ratio = to_ratio(u)
        if ratio not in trace.memo:
            trace.memo[ratio] = float(objective(ratio))
            trace.points.append((ratio, trace.memo[ratio]))
        return trace.memo[ratio]

    def budget_left() -> bool:
        return len(trace.memo) < max_evals

    a, b = math.log1p(lo), math.log1p(hi)
    if include_bounds:
        for u in (a, b):
            if budget_left():
                f(u)
    c, d = b - INV_PHI * (b - a), a + INV_PHI * (b - a)
    fc = f(c) if budget_left() else -math.inf
    fd = f(d) if budget_left() else -math.inf
    for _ in range(MAX_ITERATIONS):
        trace.brackets.append((to_ratio(a), to_ratio(b)))
        if not budget_left() or not untried_inside(a, b, trace.memo):
            break
        if fc >= fd:  # the maximum is in [a, d]
            b, d, fd = d, c, fc
            c = b - INV_PHI * (b - a)
            fc = f(c)
        else:  # in [c, b]
            a, c, fc = c, d, fd
            d = a + INV_PHI * (b - a)
            fd = f(d)
    return trace


def untried_inside(a: float, b: float, memo: dict[int, float]) -> bool:
    """Whether an integer ratio strictly inside the bracket is still untried."""
    low, high = math.expm1(a), math.expm1(b)
    first, last = math.floor(low) + 1, math.ceil(high) - 1
    if last - first > len(memo):
        return True
    return any(r not in memo for r in range(max(first, 0), last + 1))


def search_points(
    trace: SearchTrace, stats: Mapping[int, SearchPoint]
) -> tuple[list[SearchPoint], SearchPoint]:
    """Every evaluated point in evaluation order (numbered from 1) and the argmax, each with its statistics
    from `stats` where it has them."""

    def point(ratio: int, value: float) -> SearchPoint:
        return stats.get(ratio) or SearchPoint(ratio=ratio, value=value)

    points = [point(r, v).model_copy(update={"order": i + 1}) for i, (r, v) in enumerate(trace.points)]
    return points, point(*trace.best)
