"""Paired significance tests of two systems on per-painting statistics across seeds.

A system is given as an array (seeds, paintings, statistics) whose last axis holds the
columns of a ``CorpusMetric``; both systems list the same paintings in the same order.
Every resample recomputes the corpus score from sums of the statistics (as sacrebleu's
paired tests do), so corpus BLEU keeps its one brevity penalty per corpus.

The report's stars come from ``analysis.seed_test`` (seeds x paintings, generalised t),
whose false-positive rate holds where this bootstrap's does not (docs/significance.md).

- ``paired_hierarchical_bootstrap`` (the stars' test before; kept as the benchmark's
  comparison, benchmarks/bench_significance_calibration.py): each replicate
  resamples seeds and paintings with replacement, the same painting indices for both
  systems and all seeds, and averages the per-seed corpus scores (MultiBERTs'
  multibootstrap). Resampling both levels counts test-set noise twice, so it errs on the
  conservative side while seeds differ little beyond test-set noise; but 3-5 seeds whose
  spread dominates are resampled too narrowly. On planted nulls at 0.05: seed-to-seed sd
  of delta 2x its test-set standard error gives 9% (3 seeds) / 7% (5) false positives,
  4.5x gives 20% / 14%.
- ``paired_approximate_randomization`` (secondary, one seed, conditional on its trained
  models): swaps each painting's
  statistics between the systems with probability 0.5 (Riezler & Maxwell 2005).

Both p-values are two-sided and (k + 1) / (B + 1): with B resamples nothing below
1 / (B + 1) can be reported, see ``min_resamples``.
Replicates are computed in blocks as (count matrix) @ (statistics), without a Python loop
over replicates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from statsmodels.stats.multitest import multipletests

from sevlm.metrics.corpus_stats import bleu_columns, bleu_from_sums

DEFAULT_RESAMPLES = 10_000
# Replicates per block: bounds the count matrix to block x paintings floats (8 MB at
# 1,000 paintings) whatever the number of resamples.
_BLOCK = 1024
# Differences equal up to rounding count as "at least as extreme", so that a system
# compared with itself gets p = 1 rather than a rounding-driven p.
_TIE_TOLERANCE = 1e-12
STAR_LEVELS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
NOT_SIGNIFICANT = "n.s."


@dataclass(frozen=True)
class CorpusMetric:
    """A corpus score computed from sums of per-painting statistics.

    ``columns`` are the statistics it reads, in order. ``from_sums(sums, n_paintings)``
    maps sums over paintings (columns on the last axis, any leading axes) to scores.
    """

    name: str
    columns: tuple[str, ...]
    from_sums: Callable[[np.ndarray, int], np.ndarray]

    def __call__(self, stats: Any, index: Sequence[int] | np.ndarray | None = None) -> float:
        """The corpus score of the paintings at ``index`` (repetitions count), or of all."""
        matrix = _as_array(stats, self, ndim=2, name="stats")
        if index is not None:
            matrix = matrix[np.asarray(index, dtype=np.intp)]
        return float(self.from_sums(matrix.sum(axis=0), matrix.shape[0]))

    def select(self, frame: Any) -> np.ndarray:
        """This metric's columns of a per-painting DataFrame, as a (paintings, columns) array."""
        return frame.loc[:, list(self.columns)].to_numpy(dtype=np.float64)


def _bleu_score(sums: np.ndarray, n_paintings: int, order: int) -> np.ndarray:
    return bleu_from_sums(sums, order)


def _mean_score(sums: np.ndarray, n_paintings: int) -> np.ndarray:
    return sums[..., 0] / n_paintings


def bleu_metric(n: int = 4) -> CorpusMetric:
    """Corpus BLEU-n (pycocoevalcap's) from the statistics of ``corpus_stats``."""
    return CorpusMetric(f"bleu{n}", bleu_columns(n), partial(_bleu_score, order=n))


def mean_metric(column: str, name: str | None = None) -> CorpusMetric:
    """The mean of a per-painting column (ROUGE-L, CIDEr with fixed IDF, 0/1 ACC or EA)."""
    return CorpusMetric(name or column, (column,), _mean_score)


@dataclass(frozen=True)
class BootstrapResult:
    """Paired hierarchical bootstrap of delta = score_a - score_b (means over seeds)."""

    metric: str
    score_a: float
    score_b: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    n_resamples: int
    seed: int
    n_seeds_a: int
    n_seeds_b: int
    n_paintings: int
    paired_seeds: bool


@dataclass(frozen=True)
class RandomizationResult:
    """Paired approximate randomisation of delta = score_a - score_b on one seed."""

    metric: str
    score_a: float
    score_b: float
    delta: float
    p_value: float
    n_resamples: int
    seed: int
    n_paintings: int


def paired_hierarchical_bootstrap(
    a: Any,
    b: Any,
    metric: CorpusMetric,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    confidence: float = 0.95,
    paired_seeds: bool = True,
) -> BootstrapResult:
    """Delta, percentile CI and two-sided p of ``metric`` between systems ``a`` and ``b``.

    ``a`` and ``b`` are (seeds, paintings, columns) arrays. With ``paired_seeds`` seed i of
    ``a`` and of ``b`` are resampled together (same training seed, so the seeds must be
    in the same order); otherwise each system's seeds are resampled on their own, which
    also allows different numbers of seeds. The p-value counts the centred replicate
    deltas at least as extreme as the observed delta.
    """
    _check_resamples(n_resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    stats_a = _as_array(a, metric, ndim=3, name="a")
    stats_b = _as_array(b, metric, ndim=3, name="b")
    _check_same_paintings(stats_a.shape[1], stats_b.shape[1])
    if paired_seeds and stats_a.shape[0] != stats_b.shape[0]:
        raise ValueError(
            f"paired seeds need as many seeds in a as in b, got {stats_a.shape[0]} and {stats_b.shape[0]}; "
            "pass paired_seeds=False"
        )
    n_paintings = stats_a.shape[1]
    score_a = float(metric.from_sums(stats_a.sum(axis=1), n_paintings).mean())
    score_b = float(metric.from_sums(stats_b.sum(axis=1), n_paintings).mean())
    delta = score_a - score_b

    rng = np.random.default_rng(seed)
    # (paintings, seeds * columns): one matrix product gives every seed's sums.
    flat_a = _paintings_first(stats_a)
    flat_b = _paintings_first(stats_b)
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        size = min(_BLOCK, n_resamples - start)
        painting_counts = _resample_counts(rng, size, n_paintings)
        seed_counts_a = _resample_counts(rng, size, stats_a.shape[0])
        seed_counts_b = seed_counts_a if paired_seeds else _resample_counts(rng, size, stats_b.shape[0])
        deltas[start : start + size] = _seed_average(
            painting_counts, flat_a, seed_counts_a, metric
        ) - _seed_average(painting_counts, flat_b, seed_counts_b, metric)

    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(deltas, [tail, 1 - tail])
    return BootstrapResult(
        metric=metric.name,
        score_a=score_a,
        score_b=score_b,
        delta=delta,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        confidence=confidence,
        p_value=_p_value(deltas - deltas.mean(), delta),
        n_resamples=n_resamples,
        seed=seed,
        n_seeds_a=stats_a.shape[0],
        n_seeds_b=stats_b.shape[0],
        n_paintings=n_paintings,
        paired_seeds=paired_seeds,
    )


@dataclass(frozen=True)
class IntervalResult:
    """Hierarchical bootstrap interval of one system's score (mean over seeds)."""

    metric: str
    score: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int
    seed: int
    n_seeds: int
    n_paintings: int


def hierarchical_bootstrap_interval(
    stats: Any,
    metric: CorpusMetric,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    confidence: float = 0.95,
) -> IntervalResult:
    """Percentile CI of one system's seed-averaged corpus score, resampling seeds and paintings.

    The same resampling as ``paired_hierarchical_bootstrap`` (for the whiskers of a figure
    whose stars come from that test); ``stats`` is a (seeds, paintings, columns) array.
    """
    _check_resamples(n_resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    array = _as_array(stats, metric, ndim=3, name="stats")
    n_seeds, n_paintings = array.shape[:2]
    score = float(metric.from_sums(array.sum(axis=1), n_paintings).mean())
    rng = np.random.default_rng(seed)
    flat = _paintings_first(array)
    scores = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        size = min(_BLOCK, n_resamples - start)
        painting_counts = _resample_counts(rng, size, n_paintings)
        seed_counts = _resample_counts(rng, size, n_seeds)
        scores[start : start + size] = _seed_average(painting_counts, flat, seed_counts, metric)
    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(scores, [tail, 1 - tail])
    return IntervalResult(metric.name, score, float(ci_low), float(ci_high), confidence, n_resamples, seed,
                          n_seeds, n_paintings)


def paired_approximate_randomization(
    a_seed: Any,
    b_seed: Any,
    metric: CorpusMetric,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RandomizationResult:
    """Two-sided approximate-randomisation p of ``metric`` on one seed's (paintings, columns) arrays."""
    _check_resamples(n_resamples)
    stats_a = _as_array(a_seed, metric, ndim=2, name="a_seed")
    stats_b = _as_array(b_seed, metric, ndim=2, name="b_seed")
    _check_same_paintings(stats_a.shape[0], stats_b.shape[0])
    n_paintings = stats_a.shape[0]
    total_a, total_b = stats_a.sum(axis=0), stats_b.sum(axis=0)
    score_a = float(metric.from_sums(total_a, n_paintings))
    score_b = float(metric.from_sums(total_b, n_paintings))

    rng = np.random.default_rng(seed)
    # Swapping painting i moves (b_i - a_i) from b's sums to a's.
    difference = stats_b - stats_a
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        size = min(_BLOCK, n_resamples - start)
        moved = _coin_flips(rng, size, n_paintings) @ difference
        deltas[start : start + size] = metric.from_sums(total_a + moved, n_paintings) - metric.from_sums(
            total_b - moved, n_paintings
        )
    delta = score_a - score_b
    return RandomizationResult(
        metric=metric.name,
        score_a=score_a,
        score_b=score_b,
        delta=delta,
        p_value=_p_value(deltas, delta),
        n_resamples=n_resamples,
        seed=seed,
        n_paintings=n_paintings,
    )


def approximate_randomization_by_seed(
    a: Any,
    b: Any,
    metric: CorpusMetric,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[RandomizationResult]:
    """``paired_approximate_randomization`` on each seed i of (seeds, paintings, columns) arrays.

    Seed i uses the random seed ``seed + i`` (recorded in its result), so the seeds'
    tests are independent and each can be rerun alone.
    """
    stats_a = _as_array(a, metric, ndim=3, name="a")
    stats_b = _as_array(b, metric, ndim=3, name="b")
    if stats_a.shape[0] != stats_b.shape[0]:
        raise ValueError(f"a has {stats_a.shape[0]} seeds and b {stats_b.shape[0]}; seeds are paired here")
    return [
        paired_approximate_randomization(stats_a[i], stats_b[i], metric, n_resamples, seed + i)
        for i in range(stats_a.shape[0])
    ]


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order (statsmodels' "holm", not its default Holm-Sidak)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of p-values, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):  # also catches NaN
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    if p.size == 0:
        return p.copy()
    return multipletests(p, method="holm")[1]


def stars(p: float) -> str:
    """"***" below 0.001, "**" below 0.01, "*" below 0.05, else "n.s."."""
    if not 0 <= p <= 1:  # also catches NaN
        raise ValueError(f"a p-value must lie in [0, 1], got {p}")
    for level, mark in STAR_LEVELS:
        if p < level:
            return mark
    return NOT_SIGNIFICANT


def smallest_p_value(n_resamples: int) -> float:
    """The smallest p a test with ``n_resamples`` resamples can give: 1 / (B + 1)."""
    _check_resamples(n_resamples)
    return 1 / (n_resamples + 1)


def min_resamples(n_comparisons: int, level: float = STAR_LEVELS[0][0]) -> int:
    """Resamples (at least ``DEFAULT_RESAMPLES``) for which Holm over ``n_comparisons`` can reach p < ``level``.

    Holm multiplies the smallest p by the family size, so the smallest adjusted p is
    n_comparisons / (B + 1).
    """
    if n_comparisons < 1:
        raise ValueError(f"need at least one comparison, got {n_comparisons}")
    return max(DEFAULT_RESAMPLES, math.ceil(n_comparisons / level))


def _seed_average(
    painting_counts: np.ndarray, flat_stats: np.ndarray, seed_counts: np.ndarray, metric: CorpusMetric
) -> np.ndarray:
    """Per replicate: each seed's corpus score on the resampled paintings, averaged over resampled seeds."""
    n_seeds = seed_counts.shape[1]
    sums = (painting_counts @ flat_stats).reshape(len(painting_counts), n_seeds, -1)
    scores = metric.from_sums(sums, painting_counts.shape[1])
    return (scores * seed_counts).sum(axis=1) / n_seeds


def _resample_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """How often each of n items is drawn in each of ``size`` resamples of n with replacement."""
    draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _coin_flips(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """A (size, n) matrix of fair 0/1 floats; drawn as bytes, eight flips per random draw."""
    packed = rng.integers(0, 256, size=(size, -(-n // 8)), dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=n).astype(np.float64)


def _paintings_first(stats: np.ndarray) -> np.ndarray:
    """(seeds, paintings, columns) -> (paintings, seeds * columns)."""
    n_seeds, n_paintings, n_columns = stats.shape
    return stats.transpose(1, 0, 2).reshape(n_paintings, n_seeds * n_columns)


def _p_value(null_deltas: np.ndarray, observed: float) -> float:
    """Two-sided (k + 1) / (B + 1), k = null deltas at least as far from 0 as ``observed``."""
    threshold = abs(observed) - _TIE_TOLERANCE * (1 + abs(observed))
    extreme = int(np.count_nonzero(np.abs(null_deltas) >= threshold))
    return (extreme + 1) / (null_deltas.size + 1)


def _as_array(values: Any, metric: CorpusMetric, ndim: int, name: str) -> np.ndarray:
    """A finite float array of ``ndim`` dimensions whose last axis holds the metric's columns."""
    array = np.asarray(values, dtype=np.float64)
    layout = "(seeds, paintings, columns)" if ndim == 3 else "(paintings, columns)"
    if array.ndim != ndim or array.shape[-1] != len(metric.columns):
        raise ValueError(
            f"{name} must be a {layout} array with the {len(metric.columns)} columns of {metric.name} "
            f"{metric.columns}, got shape {array.shape}"
        )
    if array.shape[-2] == 0 or (ndim == 3 and array.shape[0] == 0):
        raise ValueError(f"{name} has no seeds or no paintings (shape {array.shape})")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite statistics")
    return array


def _check_same_paintings(n_a: int, n_b: int) -> None:
    if n_a != n_b:
        raise ValueError(f"the systems must be scored on the same paintings, got {n_a} and {n_b}")


def _check_resamples(n_resamples: int) -> None:
    if n_resamples < 1:
        raise ValueError(f"need at least one resample, got {n_resamples}")
