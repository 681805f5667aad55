"""The test behind the stars (analysis.seed_test): every number checked against scipy /
statsmodels or a direct computation on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as scipy_stats
from statsmodels.stats.anova import anova_lm

from analysis import seed_test
from analysis.predictions import METRICS
from analysis.stats import bleu_metric, mean_metric
from sevlm.metrics.corpus_stats import bleu_columns, corpus_bleu
from tests.test_analysis_stats import planted_bleu, planted_pair

BLEU4 = bleu_metric(4)
SCORE = mean_metric("score")
ACC = METRICS["acc"].corpus


def _no_painting_effect(rng: np.random.Generator, k: int, n: int, seed_sd: float) -> np.ndarray:
    """(k, n) differences whose painting means are all equal: no shared painting part (B = 0)."""
    noise = rng.standard_normal((k, n))
    noise -= noise.mean(axis=0, keepdims=True)
    return noise + seed_sd * rng.standard_normal((k, 1)) + 0.3


def test_linearised_scores_are_the_values_of_a_mean_metric_and_average_to_corpus_bleu() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((3, 40, 1))
    assert np.allclose(seed_test.linearized(scores, SCORE), scores[..., 0])
    counts = planted_bleu(rng, rng.uniform(0.6, 1.2, 60), 0.6)
    values = seed_test.linearized(counts, BLEU4)
    frame_bleu = [corpus_bleu(pd.DataFrame(c, columns=list(bleu_columns(4))), 4) for c in counts]
    assert np.allclose(values.mean(axis=1), frame_bleu)


def test_linearised_bleu_has_the_jackknife_variance_of_a_direct_leave_one_out() -> None:
    rng = np.random.default_rng(1)
    counts = planted_bleu(rng, rng.uniform(0.6, 1.2, 50), 0.6, n_seeds=1)[0]
    n = len(counts)
    left_out = np.array([BLEU4(np.delete(counts, i, axis=0)) for i in range(n)])
    jackknife_variance = (n - 1) / n * np.sum((left_out - left_out.mean()) ** 2)
    values = seed_test.linearized(counts[None], BLEU4)[0]
    assert values.var(ddof=1) / n == pytest.approx(jackknife_variance, rel=1e-9)


def test_mean_squares_agree_with_statsmodels_two_way_anova() -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((4, 30)) + rng.standard_normal((4, 1)) + rng.standard_normal((1, 30))
    parts = seed_test.variance_components(table)
    seeds, paintings = np.indices(table.shape)
    frame = pd.DataFrame({"y": table.ravel(), "seed": seeds.ravel(), "painting": paintings.ravel()})
    anova = anova_lm(smf.ols("y ~ C(seed) + C(painting)", frame).fit())
    assert np.isclose(parts.ms_seeds, anova.loc["C(seed)", "mean_sq"])
    assert np.isclose(parts.ms_paintings, anova.loc["C(painting)", "mean_sq"])
    assert np.isclose(parts.ms_error, anova.loc["Residual", "mean_sq"])
    assert parts.mean == pytest.approx(table.mean())


def test_without_shared_painting_noise_it_is_scipys_one_sample_t_over_the_seeds() -> None:
    rng = np.random.default_rng(3)
    difference = _no_painting_effect(rng, 4, 80, seed_sd=0.2)
    result = seed_test.seed_painting_test(difference[..., None] + 5.0, np.full((4, 80, 1), 5.0), SCORE)
    reference = scipy_stats.ttest_1samp(difference.mean(axis=1), 0.0)
    assert result.testable and result.shared_painting_variance == 0 and result.seed_df == 3
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-8)
    interval = reference.confidence_interval(0.95)
    assert result.ci_low == pytest.approx(interval.low, rel=1e-5)
    assert result.ci_high == pytest.approx(interval.high, rel=1e-5)
    assert np.allclose(result.seed_deltas, difference.mean(axis=1))


def test_generalised_p_agrees_with_its_definition_simulated_and_with_its_limits() -> None:
    delta, seed_var, shared_var, df = 0.9, 0.05, 0.08, 2
    rng = np.random.default_rng(4)
    z, u = rng.standard_normal(2_000_000), rng.chisquare(df, 2_000_000)
    simulated = np.mean(np.abs(z) * np.sqrt(seed_var * df / u + shared_var) >= delta)
    exact = seed_test.generalized_p_value(delta, seed_var, shared_var, df)
    assert exact == pytest.approx(simulated, abs=4 * np.sqrt(simulated / 2_000_000))
    # limits: only the seeds -> Student t; only shared paintings -> normal
    assert seed_test.generalized_p_value(delta, seed_var, 0.0, df) == pytest.approx(
        2 * scipy_stats.t.sf(delta / np.sqrt(seed_var), df), rel=1e-8)
    assert seed_test.generalized_p_value(delta, 0.0, shared_var, df) == pytest.approx(
        2 * scipy_stats.norm.sf(delta / np.sqrt(shared_var)), rel=1e-12)
    # the benchmark's midpoint rule is the same p near the 0.05 decision
    for d in np.linspace(0.3, 1.6, 14):
        for args in ((0.05, 0.08, 2), (0.2, 0.01, 4), (0.01, 0.2, 2)):
            fast = seed_test.generalized_p_value(d, *args, nodes=512)
            assert abs(fast - seed_test.generalized_p_value(d, *args)) < 1e-4


def test_interval_inverts_the_p_value() -> None:
    for seed_var, shared_var, df in ((0.05, 0.08, 2), (0.3, 0.001, 4), (1e-4, 0.5, 2)):
        half = seed_test.generalized_half_width(seed_var, shared_var, df, 0.95)
        assert seed_test.generalized_p_value(half, seed_var, shared_var, df) == pytest.approx(0.05, abs=1e-6)


def test_two_seeds_are_not_testable_and_identical_systems_get_p_one() -> None:
    a, b = planted_pair(5, delta=3.0, n_seeds=2)
    result = seed_test.seed_painting_test(a, b, SCORE)
    assert not result.testable and "2 paired seeds" in result.reason and np.isnan(result.p_value)
    assert np.isnan(result.ci_low) and len(result.seed_deltas) == 2 and result.delta > 2
    same = seed_test.seed_painting_test(a[:1].repeat(3, axis=0), a[:1].repeat(3, axis=0), SCORE)
    assert same.testable and same.p_value == 1.0 and same.delta == 0


def test_a_clear_difference_is_significant_and_its_interval_covers_it() -> None:
    a, b = planted_pair(6, delta=1.0, n_paintings=300, n_seeds=5, seed_sd=0.1)
    result = seed_test.seed_painting_test(a, b, SCORE)
    assert result.p_value < 1e-3 and result.ci_low < 1.0 < result.ci_high and 0 < result.painting_share < 1


def test_bleu_and_acc_run_on_their_statistics() -> None:
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(0.6, 1.2, 100)
    better, worse = planted_bleu(rng, difficulty, 0.7, 3), planted_bleu(rng, difficulty, 0.5, 3)
    result = seed_test.seed_painting_test(better, worse, BLEU4)
    direct = np.mean([BLEU4(x) for x in better]) - np.mean([BLEU4(x) for x in worse])
    assert result.delta == pytest.approx(direct) and result.p_value < 0.05
    hits = np.stack([(rng.random((3, 100)) < 0.6), np.ones((3, 100))], axis=-1).astype(float)
    assert seed_test.seed_painting_test(hits, hits[::-1], ACC).testable


def test_interval_of_one_system() -> None:
    rng = np.random.default_rng(8)
    scores = rng.standard_normal((2, 60, 1)) + 3
    conditional = seed_test.seed_painting_interval(scores, SCORE)
    reference = scipy_stats.ttest_1samp(scores[..., 0].mean(axis=0), 0).confidence_interval(0.95)
    assert not conditional.seeds_counted
    assert conditional.ci_low == pytest.approx(reference.low) and conditional.ci_high == pytest.approx(reference.high)
    counted = seed_test.seed_painting_interval(np.concatenate([scores, scores + 1.0]), SCORE)
    assert counted.seeds_counted and counted.ci_low < counted.score < counted.ci_high


def test_bad_input_is_named() -> None:
    a, b = planted_pair(9, n_seeds=3)
    with pytest.raises(ValueError, match="seeds are paired"):
        seed_test.seed_painting_test(a, b[:2], SCORE)
    with pytest.raises(ValueError, match="same paintings"):
        seed_test.seed_painting_test(a, b[:, :10], SCORE)
    with pytest.raises(ValueError, match="confidence"):
        seed_test.seed_painting_test(a, b, SCORE, confidence=1.0)
