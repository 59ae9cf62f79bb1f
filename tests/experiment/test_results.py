"""results.json statistics: the t-interval, the summary over seeds, the headline comparison."""

from __future__ import annotations

import math
from typing import Any

import pytest

from delia.experiment.records import AblationSwitches, Cell, CellRow, MethodRow
from delia.experiment.report.tables import ResultIndex, headline_comparison
from delia.experiment.results import summarise, t_interval
from delia.experiment.spec import Headline


def test_t_interval_matches_the_textbook_value() -> None:
    low, high = t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(0.975, 2) = 4.3027
    assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)


def row(seed: int, value: float, **extra: Any) -> CellRow:
    fields = {
        "variant": None,
        "method": "delia",
        "base_method": "delia",
        "task_size": 4,
        "ratio": 1.0,
        "metric": "json_format",
        "seed": seed,
        "value": value,
        "n": 10,
        "ci_low": value - 0.1,
        "ci_high": value + 0.1,
        "train_steps": 3,
        "wall_seconds": 1.0,
        "run_dir": "runs/cell",
        "cell": "cell",
        **extra,
    }
    return CellRow(**fields)


def test_summary_uses_seeds_and_falls_back_to_the_cell_bootstrap_for_one_seed() -> None:
    summary = summarise([row(0, 0.2), row(1, 0.4), row(2, 0.6), row(0, 0.5, method="icl", ratio=None)])
    delia = next(r for r in summary if r.method == "delia")
    assert delia.n_seeds == 3 and delia.mean == pytest.approx(0.4)
    assert (delia.ci_low, delia.ci_high) == pytest.approx(t_interval([0.2, 0.4, 0.6]))
    assert delia.ci_method.startswith("t-interval")
    icl = next(r for r in summary if r.method == "icl")
    assert icl.n_seeds == 1 and (icl.ci_low, icl.ci_high) == (0.4, 0.6)
    assert "1 seed" in icl.ci_method


def test_headline_compares_delia_within_each_variant() -> None:
    rows = [
        row(0, 0.2, variant=v, method=m, ratio=r, metric="chrf++")
        for v in ("en-is", "is-en")
        for m, r in (("delia", 1.0), ("icl", None))
    ]
    summary = summarise(rows)
    planned = [Cell(r.method, r.method, r.task_size, r.ratio, r.seed, r.variant) for r in rows]
    switches = AblationSwitches(diverse=True, diversify=True)
    methods = [MethodRow(name=m, method=m, set=[], match=None, delia=switches) for m in ("delia", "icl")]
    index = ResultIndex(summary, planned, methods, ["chrf++"], Headline())
    lines = headline_comparison(index)
    assert [line.split(":")[0] for line in lines] == ["en-is", "is-en"]
    assert all("delia (r=1) vs icl" in line for line in lines)
