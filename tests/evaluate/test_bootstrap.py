"""Bootstrap confidence intervals: seeded, containing the estimate, right for corpus metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from delia.evaluate.bootstrap import figure, mean_ci, sacrebleu_ci, seed_item_ci, stats_ci


def test_mean_ci_contains_the_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    scores = (rng.random(200) < 0.3).astype(float).tolist()
    low, high = mean_ci(scores, 1000, seed=7)
    mean = sum(scores) / len(scores)
    assert low < mean < high
    assert (low, high) == mean_ci(scores, 1000, seed=7)
    assert (low, high) != mean_ci(scores, 1000, seed=8)
    # roughly the normal-approximation width for a proportion
    half = 1.96 * math.sqrt(mean * (1 - mean) / len(scores))
    assert high - low == pytest.approx(2 * half, rel=0.2)


def test_mean_ci_degenerate_cases() -> None:
    assert mean_ci([1.0, 1.0, 1.0], 100) == (1.0, 1.0)
    assert mean_ci([0.25], 100) == (0.25, 0.25)
    assert mean_ci([0.0, 1.0], 0) == (0.5, 0.5)
    low, high = mean_ci([], 100)
    assert math.isnan(low) and math.isnan(high)


def test_chunked_resampling_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import delia.evaluate.bootstrap as bootstrap

    scores = np.random.default_rng(0).random(50).tolist()
    whole = mean_ci(scores, 300, seed=1)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 170)  # 3 resamples per chunk
    assert mean_ci(scores, 300, seed=1) == whole  # numpy's stream is the same drawn in chunks or at once


def test_figure_reports_value_n_and_bounds() -> None:
    fig = figure([1, 0, 1, 1], 500, seed=0)
    assert fig["value"] == 0.75 and fig["n"] == 4
    assert 0.0 <= fig["ci_low"] <= 0.75 <= fig["ci_high"] <= 1.0


def test_stats_ci_of_a_sum_ratio() -> None:
    # Two columns (hits, total): the corpus score is sum(hits) / sum(total), as for sacreBLEU statistics.
    stats = np.array([[1, 1], [0, 1], [1, 1], [1, 1], [0, 1]] * 20, dtype=float)
    low, high = stats_ci(stats, lambda total: total[0] / total[1], 500, seed=0)
    assert low < 0.6 < high
    assert (low, high) == stats_ci(stats, lambda total: total[0] / total[1], 500, seed=0)


def test_sacrebleu_ci_brackets_the_corpus_score() -> None:
    from sacrebleu.metrics import BLEU, CHRF

    refs = [f"the number {i} is written here as {i * 7}" for i in range(30)]
    hyps = [f"the number {i} is here written as {i * 7 if i % 3 else i}" for i in range(30)]
    for metric in (BLEU(), CHRF(word_order=2)):
        corpus = metric.corpus_score(hyps, [refs]).score
        low, high = sacrebleu_ci(metric, hyps, refs, 300, seed=0)
        assert low < corpus < high
        assert high - low > 1.0


def test_seed_item_ci_is_wider_than_items_only_when_seeds_disagree() -> None:
    rng = np.random.default_rng(5)
    items = rng.normal(0.0, 0.3, size=200)
    # Three training seeds: the same item effects, but each seed shifts every item its own way.
    matrix = np.stack([items + shift for shift in (0.4, -0.2, 0.1)])
    low, high = seed_item_ci(matrix, 2000, seed=0)
    items_low, items_high = mean_ci(matrix.mean(axis=0).tolist(), 2000, seed=0)
    assert low < matrix.mean() < high
    assert high - low > 3 * (items_high - items_low)
    assert (low, high) == seed_item_ci(matrix, 2000, seed=0)


def test_seed_item_ci_matches_items_only_when_seeds_agree() -> None:
    items = np.random.default_rng(1).normal(0.1, 0.5, size=150)
    matrix = np.stack([items, items, items])  # no seed effect: only items vary
    low, high = seed_item_ci(matrix, 4000, seed=2)
    items_low, items_high = mean_ci(items.tolist(), 4000, seed=2)
    assert high - low == pytest.approx(items_high - items_low, rel=0.15)


def test_seed_item_ci_degenerate_cases() -> None:
    assert seed_item_ci([[0.5]], 100) == (0.5, 0.5)
    assert seed_item_ci([[0.0, 1.0]], 0) == (0.5, 0.5)
    low, high = seed_item_ci(np.zeros((0, 0)), 100)
    assert math.isnan(low) and math.isnan(high)
