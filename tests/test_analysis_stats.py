"""Significance tests of analysis.stats on planted per-painting statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    DEFAULT_RESAMPLES,
    approximate_randomization_by_seed,
    bleu_metric,
    holm,
    mean_metric,
    min_resamples,
    paired_approximate_randomization,
    paired_hierarchical_bootstrap,
    smallest_p_value,
    stars,
)
from sevlm.metrics.corpus_stats import bleu_columns, corpus_bleu

BLEU4 = bleu_metric(4)
SCORE = mean_metric("score")


def planted_bleu(
    rng: np.random.Generator, difficulty: np.ndarray, precision: float, n_seeds: int = 3
) -> np.ndarray:
    """(seeds, paintings, bleu_columns(4)) counts; ``difficulty`` per painting is shared by systems."""
    n_paintings = difficulty.size
    lengths = rng.integers(4, 16, size=(n_seeds, n_paintings))
    totals = np.stack([np.maximum(0, lengths - k + 1) for k in range(1, 5)], axis=-1)
    unigram = np.clip(precision * difficulty, 0, 1)[None, :, None]
    matches = rng.binomial(totals, unigram ** np.arange(1, 5))
    ref_lengths = np.maximum(1, lengths + rng.integers(-2, 5, size=lengths.shape))
    return np.concatenate([matches, totals, lengths[..., None], ref_lengths[..., None]], axis=-1).astype(float)


def planted_scores(
    rng: np.random.Generator, painting_effect: np.ndarray, shift: float, n_seeds: int, seed_sd: float
) -> np.ndarray:
    """(seeds, paintings, 1) scores: painting effect (shared by systems), system-painting
    effect, seed offset (sd ``seed_sd``) and per-painting seed noise."""
    system_effect = 0.5 * rng.standard_normal(painting_effect.size)
    seed_offset = seed_sd * rng.standard_normal((n_seeds, 1))
    noise = rng.standard_normal((n_seeds, painting_effect.size))
    return (painting_effect + system_effect + shift + seed_offset + noise)[..., None]


def planted_pair(seed: int, delta: float = 0.0, n_paintings: int = 200, n_seeds: int = 3, seed_sd: float = 0.0):
    """Two systems on the same paintings whose expected mean scores differ by ``delta``."""
    rng = np.random.default_rng(seed)
    effect = rng.standard_normal(n_paintings)
    return tuple(planted_scores(rng, effect, shift, n_seeds, seed_sd) for shift in (delta, 0.0))


def test_metrics_recompute_corpus_scores() -> None:
    rng = np.random.default_rng(1)
    counts = planted_bleu(rng, rng.uniform(0.5, 1.5, 40), 0.5, n_seeds=1)[0]
    frame = pd.DataFrame(counts, columns=list(bleu_columns(4)))
    index = rng.integers(0, 40, size=40)
    assert BLEU4.columns == bleu_columns(4)
    assert BLEU4(BLEU4.select(frame), index) == pytest.approx(corpus_bleu(frame, 4, index), abs=1e-15)
    scores = rng.random((40, 1))
    assert SCORE(scores, index) == pytest.approx(scores[index, 0].mean(), abs=1e-15)
    assert SCORE(scores) == pytest.approx(scores.mean(), abs=1e-15)


def test_clear_difference_is_significant() -> None:
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.6, 1.4, 300)
    a, b = planted_bleu(rng, difficulty, 0.6), planted_bleu(rng, difficulty, 0.45)
    boot = paired_hierarchical_bootstrap(a, b, BLEU4, n_resamples=2000, seed=11)
    assert boot.delta > 0 and boot.ci_low > 0
    assert boot.p_value < 0.05 and stars(boot.p_value) != "n.s."
    for result in approximate_randomization_by_seed(a, b, BLEU4, n_resamples=2000, seed=11):
        assert result.p_value < 0.05


def test_identical_systems_are_not_significant() -> None:
    rng = np.random.default_rng(3)
    a = planted_bleu(rng, rng.uniform(0.6, 1.4, 100), 0.5)
    boot = paired_hierarchical_bootstrap(a, a.copy(), BLEU4, n_resamples=500, seed=0)
    assert boot.delta == 0 and boot.ci_low == boot.ci_high == 0
    assert boot.p_value == 1 and stars(boot.p_value) == "n.s."
    assert [r.p_value for r in approximate_randomization_by_seed(a, a.copy(), BLEU4, 500)] == [1, 1, 1]


@pytest.mark.parametrize("metric", [BLEU4, SCORE], ids=lambda m: m.name)
def test_false_positive_rate_is_near_nominal(metric) -> None:
    """200 null data sets: the rejection rate at 0.05 stays within binomial error of 5% or below.

    The bootstrap's null is about systems, so its mean-type data add seed offsets about as
    large as a seed's test-set error (sd 0.1 vs 1.58 / sqrt(100) for a seed's delta); the
    randomisation test's null is about two runs, whose paintings are exchangeable.
    """
    boot_rejections = ar_rejections = 0
    n_datasets = 200
    for i in range(n_datasets):
        rng = np.random.default_rng(1000 + i)
        if metric is BLEU4:
            difficulty = rng.uniform(0.6, 1.4, 100)
            a, b = planted_bleu(rng, difficulty, 0.5), planted_bleu(rng, difficulty, 0.5)
            run_a, run_b = a[0], b[0]
        else:
            a, b = planted_pair(1000 + i, n_paintings=100, seed_sd=0.1)
            run_a, run_b = (x[0] for x in planted_pair(1000 + i, n_paintings=100, n_seeds=1))
        boot_rejections += paired_hierarchical_bootstrap(a, b, metric, 199, seed=i).p_value < 0.05
        ar_rejections += paired_approximate_randomization(run_a, run_b, metric, 199, seed=i).p_value < 0.05
    # 0.10 is 3.2 binomial standard deviations above 5% with 200 data sets.
    assert boot_rejections / n_datasets < 0.10
    # The randomisation test is (nearly) exact: also not absurdly conservative.
    assert 0.01 <= ar_rejections / n_datasets < 0.10


def test_randomization_agrees_with_scipy_permutation_test() -> None:
    a, b = planted_pair(5, delta=0.2, n_paintings=300, n_seeds=1)
    x, y = a[0, :, 0], b[0, :, 0]
    ours = paired_approximate_randomization(a[0], b[0], SCORE, n_resamples=DEFAULT_RESAMPLES, seed=5)
    reference = scipy_stats.permutation_test(
        (x, y),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=DEFAULT_RESAMPLES,
        alternative="two-sided",
        rng=np.random.default_rng(6),
    )
    assert ours.delta == pytest.approx(reference.statistic, abs=1e-12)
    # The comparison says something only away from 0 and 1.
    assert 0.005 < reference.pvalue < 0.5
    monte_carlo_sd = np.sqrt(2 * reference.pvalue * (1 - reference.pvalue) / DEFAULT_RESAMPLES)
    assert ours.p_value == pytest.approx(reference.pvalue, abs=4 * monte_carlo_sd)


def test_one_seed_bootstrap_ci_agrees_with_scipy_bootstrap() -> None:
    a, b = planted_pair(7, delta=0.2, n_paintings=300, n_seeds=1)
    ours = paired_hierarchical_bootstrap(a, b, SCORE, n_resamples=DEFAULT_RESAMPLES, seed=8)
    reference = scipy_stats.bootstrap(
        (a[0, :, 0], b[0, :, 0]),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=DEFAULT_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(9),
    )
    width = reference.confidence_interval.high - reference.confidence_interval.low
    assert ours.ci_low == pytest.approx(reference.confidence_interval.low, abs=0.05 * width)
    assert ours.ci_high == pytest.approx(reference.confidence_interval.high, abs=0.05 * width)


def test_bootstrap_ci_covers_the_planted_delta() -> None:
    planted = 0.15
    a, b = planted_pair(10, delta=planted)
    result = paired_hierarchical_bootstrap(a, b, SCORE, n_resamples=2000, seed=1)
    assert result.ci_low < planted < result.ci_high
    covered = 0
    for i in range(100):
        interval = paired_hierarchical_bootstrap(*planted_pair(2000 + i, delta=planted, n_paintings=100), SCORE, 199, i)
        covered += interval.ci_low < planted < interval.ci_high
    assert covered >= 88  # nominal 95 of 100; the two-level resampling errs wide, not narrow


def test_results_record_their_settings_and_are_reproducible() -> None:
    a, b = planted_pair(12, n_seeds=4)
    first = paired_hierarchical_bootstrap(a, b[:3], SCORE, n_resamples=300, seed=42, paired_seeds=False)
    again = paired_hierarchical_bootstrap(a, b[:3], SCORE, n_resamples=300, seed=42, paired_seeds=False)
    assert first == again
    assert (first.seed, first.n_resamples, first.n_seeds_a, first.n_seeds_b) == (42, 300, 4, 3)
    assert (first.n_paintings, first.paired_seeds, first.confidence) == (200, False, 0.95)
    assert first.score_a - first.score_b == pytest.approx(first.delta)
    assert [r.seed for r in approximate_randomization_by_seed(a, b, SCORE, 100, seed=42)] == [42, 43, 44, 45]
    with pytest.raises(ValueError, match="paired seeds"):
        paired_hierarchical_bootstrap(a, b[:3], SCORE, 100)
    with pytest.raises(ValueError, match="same paintings"):
        paired_hierarchical_bootstrap(a, b[:, :-1], SCORE, 100)
    with pytest.raises(ValueError, match="columns of bleu4"):
        paired_hierarchical_bootstrap(a, b, BLEU4, 100)


def test_smallest_reportable_p_allows_three_stars_after_holm() -> None:
    rng = np.random.default_rng(13)
    difficulty = rng.uniform(0.6, 1.4, 300)
    a, b = planted_bleu(rng, difficulty, 0.8), planted_bleu(rng, difficulty, 0.4)
    result = paired_hierarchical_bootstrap(a, b, BLEU4, n_resamples=DEFAULT_RESAMPLES, seed=0)
    assert result.p_value == smallest_p_value(DEFAULT_RESAMPLES) == 1 / (DEFAULT_RESAMPLES + 1)
    ar = paired_approximate_randomization(a[0], b[0], BLEU4, n_resamples=DEFAULT_RESAMPLES, seed=0)
    assert ar.p_value == 1 / (DEFAULT_RESAMPLES + 1)
    n_comparisons = 20
    # 10^4 resamples cannot give *** after Holm over 20 comparisons; min_resamples can.
    assert stars(holm([smallest_p_value(DEFAULT_RESAMPLES)] * n_comparisons).min()) == "**"
    enough = min_resamples(n_comparisons)
    assert enough >= DEFAULT_RESAMPLES
    assert all(stars(p) == "***" for p in holm([smallest_p_value(enough)] * n_comparisons))
    assert min_resamples(1) == DEFAULT_RESAMPLES


def _holm_step_down(pvalues: np.ndarray) -> np.ndarray:
    """Holm (1979) written out: sorted p_(i) times (m - i), running maximum, capped at 1."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def test_holm_agrees_with_reference_implementations() -> None:
    pvalues = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.0001, 0.9])
    adjusted = holm(pvalues)
    np.testing.assert_allclose(adjusted, _holm_step_down(pvalues), rtol=0, atol=1e-15)
    np.testing.assert_allclose(adjusted, multipletests(pvalues, method="holm")[1], rtol=0, atol=1e-15)
    # statsmodels' default (Holm-Sidak) differs: the wrapper must not fall back on it.
    assert not np.allclose(adjusted, multipletests(pvalues)[1])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.0, "***"), (0.00099, "***"), (0.001, "**"), (0.0099, "**"),
        (0.01, "*"), (0.0499, "*"), (0.05, "n.s."), (1.0, "n.s."),
    ],
)
def test_stars(p, expected) -> None:
    assert stars(p) == expected


def test_stars_rejects_invalid_p() -> None:
    for p in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError):
            stars(p)
