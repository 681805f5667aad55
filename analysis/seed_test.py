"""The test behind the stars: seeds carry training randomness, paintings test-set noise, once.

Two systems a and b are each trained from the same seeds s = 1..k (seed s of a paired with
seed s of b) and scored on the same n test paintings. Every seed's difference
d_s = score(a_s) - score(b_s) is the full corpus metric on the whole test set (corpus BLEU
from summed statistics, one brevity penalty). The question is whether the difference in
expectation over training seeds *and* over test paintings drawn like ours is zero.

Method (a two-way crossed random-effects model and a generalised t):

1. Each seed's corpus score is linearised over paintings by the jackknife: painting i gets
   the pseudo-value n f(all) - (n - 1) f(all but i), recentred so that their mean is the
   corpus score itself. For a mean metric (METEOR, ROUGE-L, CIDEr with fixed IDF) these are
   the per-painting values; for corpus BLEU and the ratio metrics (ACC over paintings with
   a dominant emotion) they are the influence values of the delta method, computed from
   the sums exactly as the score is.
2. D[s, i] = L_a[s, i] - L_b[s, i] is then a seeds x paintings table whose mean is the
   seed-averaged difference. Model: D = mu + u_s + p_i + e_si, with u_s the training
   randomness of seed s, p_i what painting i does to the difference in every seed (shared
   by the seeds because they read the same paintings) and e_si the rest.
3. Var(mean D) = sigma_u^2 / k + sigma_p^2 / n + sigma_e^2 / (k n), estimated from the
   two-way ANOVA mean squares (checked against statsmodels' ``anova_lm`` in the tests) as
   A + B with A = MS_seeds / (k n) and B = max(MS_paintings - MS_error, 0) / (k n). In
   words: A is the spread of the per-seed differences over k (training randomness plus each
   seed's own painting noise) and has k - 1 degrees of freedom; B is the painting noise
   the seeds share, counted once, estimated from n - 1 paintings (as good as known).
4. The p-value is the generalised p-value of Tsui & Weerahandi (1989) for that mixture:
   p = P(|Z| sqrt(A (k - 1) / U + B) >= |delta|), Z standard normal, U chi-square with
   k - 1 df (one integral, ``scipy.integrate.quad``). With B = 0 it is exactly the
   one-sample t test over the seeds' differences (k - 1 df, checked against scipy's
   ``ttest_1samp``); with A = 0 the z test over the shared painting noise. The interval
   inverts the same pivot. Satterthwaite's t with estimated df was the first choice and
   was measured too liberal at 3 seeds (7-9% false positives where the two parts are
   comparable, 2,000 planted nulls a cell): the df it estimates is large exactly when the
   seeds happen to agree. The report prints its effective df for reading.

Calibration (``benchmarks/bench_significance_calibration.py``: 120 cells of BLEU-4 and
METEOR, 3 / 5 seeds, 100 / 300 / 1000 paintings, shared painting noise none / high, seed
spread 0, 1, 2, 4, 6x the test-set SE; 300 planted nulls each; docs/significance.md has
the table). False positives at the 0.05 level:

- this test: mean 0.041, no cell's 95% Clopper-Pearson interval above 0.05 (highest
  0.077 [0.049, 0.113], where it coincides with the exact t over the seeds);
- the paired hierarchical bootstrap of ``analysis.stats`` (the old stars): above 0.05 in
  58 of 120 cells, 16-27% at spread 6 with 3 seeds, 10-13% with 5. It resamples 3-5
  seeds with replacement, which shrinks their spread, and reads percentiles as normal;
- the one-sample t over the k per-seed differences and the Hartung-Knapp random-effects
  combination of them (``statsmodels.stats.meta_analysis``, HKSJ variance): up to 46%.
  They treat the seeds' differences as independent, but the seeds are scored on the
  same paintings, so painting noise that shows in every seed's difference (p_i) never
  shows in their spread; the model above estimates it from the seeds x paintings table;
- Satterthwaite's t on the same variance: up to 10% (3 seeds, spread 2-4).

Power at a planted effect of 2.8 sd of the seed-averaged difference: 0.34-0.47 (mean over
cells) at 3 seeds, 0.56-0.65 at 5, against the bootstrap's 0.65-0.82 bought with its
false positives; where seeds agree it is about the bootstrap's (0.62-0.79 vs 0.64-0.81).

Fewer than ``MIN_SEEDS`` paired seeds: not testable. With 2 seeds the seed variance has
one degree of freedom, a t with 1 df needs |t| > 12.7 for p < 0.05, and a claim about
retraining would rest on two trained models per system; what the paintings of those
models say is the per-seed test's answer, conditional on the models, and stays reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import integrate, optimize, special
from scipy import stats as scipy_stats

from analysis.stats import CorpusMetric, _as_array, _check_same_paintings

# Fewer paired seeds than this: "not testable" (see the module docstring).
MIN_SEEDS = 3
NOT_TESTABLE = "not testable"
NAME = "generalised t over seeds x paintings"
# Below this variance (relative to the squared scores) the difference is taken as exact.
_ZERO_VARIANCE = 1e-24
# Nodes of the quantile rule for intervals and for the benchmark's many p-values.
_INTERVAL_NODES = 4096
# The rule's nodes crowd towards the chi-square's lower tail (q = t^power), where the
# integrand's scale sqrt(A df / u) grows without bound.
_NODE_POWER = 4


@dataclass(frozen=True)
class VarianceComponents:
    """Two-way ANOVA of a seeds x paintings table, one observation per cell."""

    mean: float
    ms_seeds: float
    ms_paintings: float
    ms_error: float
    n_seeds: int
    n_paintings: int

    @property
    def seed_variance(self) -> float:
        """A: Var of the mean from the seeds' spread, Var(per-seed means) / k (k - 1 df)."""
        return self.ms_seeds / (self.n_seeds * self.n_paintings)

    @property
    def shared_painting_variance(self) -> float:
        """B: Var of the mean from painting noise every seed shares (0 when not estimable as > 0)."""
        return max(self.ms_paintings - self.ms_error, 0.0) / (self.n_seeds * self.n_paintings)

    @property
    def variance(self) -> float:
        return self.seed_variance + self.shared_painting_variance

    @property
    def df(self) -> float:
        """Satterthwaite's effective degrees of freedom of ``variance`` (for reading, not for p)."""
        k, n = self.n_seeds, self.n_paintings
        if self.ms_paintings <= self.ms_error:  # truncated: the seeds' mean square alone
            return float(k - 1)
        scale = k * n
        terms = [(self.ms_seeds / scale) ** 2 / (k - 1), (self.ms_paintings / scale) ** 2 / (n - 1),
                 (self.ms_error / scale) ** 2 / ((k - 1) * (n - 1))]
        return float(self.variance ** 2 / sum(terms))


@dataclass(frozen=True)
class SeedTestResult:
    """Delta = score_a - score_b (means over seeds) and, when testable, its generalised t test."""

    metric: str
    score_a: float
    score_b: float
    delta: float
    seed_deltas: tuple[float, ...]  # per seed, in the order given
    testable: bool
    reason: str  # why not testable; "" when testable
    se: float  # sqrt(A + B)
    seed_df: int  # k - 1: the degrees of freedom of the seeds' part
    effective_df: float  # Satterthwaite's, for reading
    p_value: float
    ci_low: float
    ci_high: float
    confidence: float
    seed_variance: float  # A: of the mean difference, from the seeds' spread
    shared_painting_variance: float  # B: of the mean difference, painting noise the seeds share
    n_seeds: int
    n_paintings: int

    @property
    def painting_share(self) -> float:
        """B / (A + B): how much of the variance is shared painting noise."""
        total = self.seed_variance + self.shared_painting_variance
        return self.shared_painting_variance / total if total > 0 else float("nan")


@dataclass(frozen=True)
class SeedIntervalResult:
    """One system's seed-averaged score with its interval."""

    metric: str
    score: float
    ci_low: float
    ci_high: float
    confidence: float
    seeds_counted: bool  # False: fewer than MIN_SEEDS, the interval is the paintings' alone
    n_seeds: int
    n_paintings: int


def linearized(stats: Any, metric: CorpusMetric) -> np.ndarray:
    """(seeds, paintings) jackknife-linearised per-painting scores; row means = corpus scores."""
    array = _as_array(stats, metric, ndim=3, name="stats")
    n = array.shape[1]
    if n < 2:
        raise ValueError(f"need at least two paintings to linearise a corpus score, got {n}")
    totals = array.sum(axis=1)  # (seeds, columns)
    full = metric.from_sums(totals, n)  # (seeds,)
    left_out = metric.from_sums(totals[:, None, :] - array, n - 1)  # (seeds, paintings)
    pseudo = n * full[:, None] - (n - 1) * left_out
    return full[:, None] + pseudo - pseudo.mean(axis=1, keepdims=True)


def variance_components(table: np.ndarray) -> VarianceComponents:
    """Mean squares of seeds, paintings and error of a (seeds, paintings) table."""
    table = np.asarray(table, dtype=np.float64)
    k, n = table.shape
    if k < 2 or n < 2:
        raise ValueError(f"need at least 2 seeds and 2 paintings, got a {k} x {n} table")
    grand = table.mean()
    rows = table.mean(axis=1)
    cols = table.mean(axis=0)
    residual = table - rows[:, None] - cols[None, :] + grand
    return VarianceComponents(
        mean=float(grand),
        ms_seeds=float(n * np.sum((rows - grand) ** 2) / (k - 1)),
        ms_paintings=float(k * np.sum((cols - grand) ** 2) / (n - 1)),
        ms_error=float(np.sum(residual ** 2) / ((k - 1) * (n - 1))),
        n_seeds=k,
        n_paintings=n,
    )


def generalized_p_value(delta: float, seed_variance: float, shared_variance: float, seed_df: int,
                        nodes: int | None = None) -> float:
    """P(|Z| sqrt(A df / U + B) >= |delta|), U ~ chi2(df): two-sided, Tsui & Weerahandi's p.

    ``nodes=None`` integrates adaptively (the report's p, exact to the last digit shown);
    an int uses that many chi-square quantile midpoints (vectorisable, for the benchmark).
    """
    if seed_variance < 0 or shared_variance < 0 or seed_df < 1:
        raise ValueError(f"need variances >= 0 and df >= 1, got {seed_variance}, {shared_variance}, {seed_df}")
    if seed_variance == 0:
        return 1.0 if delta == 0 else float(2 * special.ndtr(-abs(delta) / np.sqrt(shared_variance))) \
            if shared_variance > 0 else 0.0

    def tail(u):
        return 2 * special.ndtr(-abs(delta) / np.sqrt(seed_variance * seed_df / u + shared_variance))

    if nodes is not None:
        u, weights = _chi2_nodes(seed_df, nodes)
        return float(np.sum(weights * tail(u)))
    # Split where the integrand bends (around the chi-square's bulk) so quad sees the tails.
    pdf = scipy_stats.chi2(seed_df).pdf
    cut = float(scipy_stats.chi2.ppf(0.5, seed_df))
    low = integrate.quad(lambda u: tail(u) * pdf(u), 0, cut, limit=200, epsabs=1e-13)[0]
    high = integrate.quad(lambda u: tail(u) * pdf(u), cut, np.inf, limit=200, epsabs=1e-13)[0]
    return float(min(max(low + high, 0.0), 1.0))


def generalized_half_width(seed_variance: float, shared_variance: float, seed_df: int, confidence: float) -> float:
    """c with P(|Z| sqrt(A df / U + B) <= c) = confidence: the interval is delta +/- c."""
    if seed_variance == 0:
        return float(scipy_stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(shared_variance))
    u, weights = _chi2_nodes(seed_df, _INTERVAL_NODES)
    scale = np.sqrt(seed_variance * seed_df / u + shared_variance)

    def coverage(c: float) -> float:
        return float(np.sum(weights * (2 * special.ndtr(c / scale) - 1))) - confidence

    upper = (scipy_stats.t.ppf(0.5 + confidence / 2, seed_df) * np.sqrt(seed_variance)
             + scipy_stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(shared_variance)) * 2
    return float(optimize.brentq(coverage, 0.0, upper, xtol=1e-12 * (1 + upper)))


def _chi2_nodes(df: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles u of chi2(df) and weights summing to 1: the midpoint rule in t, q = t^_NODE_POWER."""
    t = (np.arange(n) + 0.5) / n
    return scipy_stats.chi2.ppf(t ** _NODE_POWER, df), _NODE_POWER * t ** (_NODE_POWER - 1) / n


def seed_painting_test(a: Any, b: Any, metric: CorpusMetric, *, confidence: float = 0.95) -> SeedTestResult:
    """Two-sided test of the seed-averaged difference; seeds of ``a`` and ``b`` paired by position.

    ``a`` and ``b`` are (seeds, paintings, columns) arrays of the same shape. With fewer
    than ``MIN_SEEDS`` seeds the result says why it is not testable (NaN p, CI and df).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    stats_a = _as_array(a, metric, ndim=3, name="a")
    stats_b = _as_array(b, metric, ndim=3, name="b")
    _check_same_paintings(stats_a.shape[1], stats_b.shape[1])
    if stats_a.shape[0] != stats_b.shape[0]:
        raise ValueError(f"a has {stats_a.shape[0]} seeds and b {stats_b.shape[0]}; the seeds are paired here")
    k, n = stats_a.shape[:2]
    diff = linearized(stats_a, metric) - linearized(stats_b, metric)
    seed_deltas = tuple(float(x) for x in diff.mean(axis=1))
    score_a = float(metric.from_sums(stats_a.sum(axis=1), n).mean())
    score_b = float(metric.from_sums(stats_b.sum(axis=1), n).mean())
    delta = score_a - score_b
    nan = float("nan")
    if k < MIN_SEEDS:
        return SeedTestResult(metric.name, score_a, score_b, delta, seed_deltas, False,
                              f"{k} paired seed{'s' if k != 1 else ''} (needs {MIN_SEEDS})", nan, k - 1, nan, nan,
                              nan, nan, confidence, nan, nan, k, n)
    parts = variance_components(diff)
    seed_var, shared_var = parts.seed_variance, parts.shared_painting_variance
    if parts.variance <= _ZERO_VARIANCE * (1 + delta ** 2):
        # Every painting of every seed differs by the same amount (identical systems: 0).
        p, half = (1.0 if delta == 0 else 0.0), 0.0
    else:
        p = generalized_p_value(delta, seed_var, shared_var, k - 1)
        half = generalized_half_width(seed_var, shared_var, k - 1, confidence)
    return SeedTestResult(metric.name, score_a, score_b, delta, seed_deltas, True, "", float(np.sqrt(parts.variance)),
                          k - 1, parts.df, p, delta - half, delta + half, confidence, seed_var, shared_var, k, n)


def seed_painting_interval(stats: Any, metric: CorpusMetric, *, confidence: float = 0.95) -> SeedIntervalResult:
    """Interval of one system's seed-averaged score, from the same decomposition as the test.

    With fewer than ``MIN_SEEDS`` seeds the interval is the paintings' alone (conditional on
    the trained models, t with n - 1 df): the figures draw it differently.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    values = linearized(stats, metric)
    k, n = values.shape
    score = float(values.mean())
    if k >= MIN_SEEDS:
        parts = variance_components(values)
        half = generalized_half_width(parts.seed_variance, parts.shared_painting_variance, k - 1, confidence)
    else:  # the painting noise of the seed mean, the models held fixed
        se = float(np.sqrt(values.mean(axis=0).var(ddof=1) / n))
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
    return SeedIntervalResult(metric.name, score, score - half, score + half, confidence, k >= MIN_SEEDS, k, n)
