"""Seeded percentile-bootstrap 95% confidence intervals: for means, for sacreBLEU corpus metrics, and for
the mean of a seeds x items matrix (paired differences over training seeds and eval items together)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
# Resample index matrices are built in chunks of about this many cells so memory stays flat for big sets.
CHUNK_CELLS = 2_000_000


def _resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < n_resamples:
        rows = min(per_chunk, n_resamples - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_ci(
    scores: Sequence[float], n_resamples: int, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. One example, or no resamples, gives (mean, mean)."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    if n_resamples <= 0 or values.size == 1:
        mean = float(values.mean())
        return mean, mean
    means = np.concatenate(
        [values[idx].mean(axis=1) for idx in _resample_indices(values.size, n_resamples, seed)]
    )
    return _interval(means, level)


def stats_ci(
    stats: np.ndarray,
    score_from_sum: Callable[[np.ndarray], float],
    n_resamples: int,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Bootstrap over segments for a corpus metric: resample rows of per-segment sufficient statistics
    and rescore each resample's column sums."""
    n = stats.shape[0]
    full = score_from_sum(stats.sum(axis=0))
    if n == 0:
        return math.nan, math.nan
    if n_resamples <= 0 or n == 1:
        return full, full
    scores = [
        score_from_sum(stats[row].sum(axis=0))
        for idx in _resample_indices(n, n_resamples, seed)
        for row in idx
    ]
    return _interval(np.asarray(scores), level)


def sacrebleu_ci(
    metric: Any, hypotheses: Sequence[str], references: Sequence[str], n_resamples: int, seed: int = 0
) -> tuple[float, float]:
    """CI for a sacreBLEU metric object (BLEU, CHRF). Uses the per-segment statistics its own bootstrap
    uses: the public n_bootstrap reports a symmetric half-width under a global seed, not percentile bounds."""
    stats = np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=float)
    return stats_ci(
        stats, lambda total: float(metric._compute_score_from_stats(total).score), n_resamples, seed
    )


def figure(scores: Sequence[float], n_resamples: int, seed: int = 0) -> dict[str, float | int]:
    """A reported figure: mean, n, and its bootstrap 95% interval."""
    values = [float(s) for s in scores]
    low, high = mean_ci(values, n_resamples, seed)
    value = sum(values) / len(values) if values else math.nan
    return {"value": value, "n": len(values), "ci_low": low, "ci_high": high}


def seed_item_ci(
    differences: np.ndarray | Sequence[Sequence[float]],
    n_resamples: int,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Two-level percentile bootstrap of the mean of a seeds x items matrix (e.g. per-item paired
    differences, one row per training seed, the same eval items in every row).

    Each resample draws seeds with replacement and, independently, items with replacement, and takes the
    mean over the drawn grid. Seeds and items are crossed (every seed answers the same items), so both are
    resampled once per replicate rather than items within each seed: the interval then covers a new
    training run and a new draw of eval items together. With one seed it is the items-only bootstrap."""
    matrix = np.asarray(differences, dtype=float)
    if matrix.ndim != 2 or matrix.size == 0:
        return math.nan, math.nan
    n_seeds, n_items = matrix.shape
    if n_resamples <= 0 or matrix.size == 1:
        mean = float(matrix.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    # Counts of each seed and item in a replicate: the grid mean is then w @ D @ v / (S * I), no copies.
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_resamples)
    item_counts = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_resamples)
    means = np.einsum("rs,si,ri->r", seed_counts, matrix, item_counts) / (n_seeds * n_items)
    return _interval(means, level)
