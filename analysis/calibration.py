"""Planted nulls and effects for calibrating the significance tests (benchmark and test suite).

A planted ablation: systems a and b, k seeds each (seed s of a paired with seed s of b),
the same n test paintings for every seed. Every (system, seed, painting) has a latent
quality

    q = 0.55 + difficulty_i +/- shared_i / 2 + seed_effect[system, seed] +/- effect / 2

(+ for a, - for b): the painting's difficulty (the same for both systems, it cancels in a
paired difference), what painting i does to the difference in every seed (``shared``:
one system is better on some paintings, the other on others; zero on average), the
training randomness of each trained model, and the planted effect. Under the null
(effect 0) a and b are exchangeable, so the expected difference is exactly zero whatever
the metric's non-linearity. Observed statistics are then drawn from q:

- ``meteor``: a mean metric, q plus independent noise per (system, seed, painting);
- ``acc``: 0/1 hits with probability q, over the ~85% of paintings with a dominant emotion;
- ``bleu4``: corpus BLEU-4 from per-painting clipped n-gram counts (matches of order m
  drawn binomially with precision q^m), hypothesis and reference lengths.

Grid axes are stated on the scale of the metric: the test-set SE is the within-seed
standard error of one seed's difference over the paintings, the seed spread is the sd
of the per-seed differences caused by training randomness alone, in units of that SE.
``calibrate_cell`` converts them to latent standard deviations from a pilot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.proportion import proportion_confint

from analysis import seed_test, stats
from analysis.stats import CorpusMetric, bleu_metric, mean_metric

KINDS = ("bleu4", "meteor", "acc")
BASE_QUALITY = 0.55
DIFFICULTY_SD = 0.12
# Latent sd of the per-painting difference every seed shares, per kind: "none" or "high".
SHARED_SD = {"bleu4": 0.14, "meteor": 0.14, "acc": 0.35}
METEOR_NOISE_SD = 0.1
DOMINANT_SHARE = 0.85
LEVEL = 0.05
# Resamples of the old bootstrap per planted test: p = (k + 1) / (B + 1) < 0.05 is decided
# exactly with B + 1 a multiple of 20.
BOOTSTRAP_RESAMPLES = 199
TESTS = ("bootstrap", "t over seeds", "HKSJ", "Satterthwaite", "new")
FAST_NODES = 512


def _ratio(sums: np.ndarray, n: int) -> np.ndarray:
    return np.divide(sums[..., 0], sums[..., 1], out=np.zeros_like(sums[..., 1]), where=sums[..., 1] > 0)


METRICS: dict[str, CorpusMetric] = {
    "bleu4": bleu_metric(4),
    "meteor": mean_metric("meteor"),
    "acc": CorpusMetric("acc", ("acc_hit", "has_dominant"), _ratio),
}


@dataclass(frozen=True)
class Design:
    kind: str
    n_seeds: int
    n_paintings: int
    shared: bool  # painting noise of the difference shared by the seeds ("high") or not
    seed_sd: float = 0.0  # latent sd of each trained model's seed effect
    effect: float = 0.0  # latent planted effect (a better by this)


def plant(design: Design, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, paintings, columns) statistics of a and b for ``METRICS[design.kind]``."""
    k, n = design.n_seeds, design.n_paintings
    difficulty = rng.normal(0.0, DIFFICULTY_SD, n)
    shared = rng.normal(0.0, SHARED_SD[design.kind], n) if design.shared else np.zeros(n)
    sign = np.array([1.0, -1.0])[:, None, None]  # a, b
    latent = (BASE_QUALITY + difficulty[None, None, :] + sign * (shared[None, None, :] + design.effect) / 2
              + rng.normal(0.0, design.seed_sd, (2, k, 1)))  # (system, seed, painting)
    draw = _DRAWS[design.kind]
    if design.kind == "acc":
        dominant = (rng.random(n) < DOMINANT_SHARE).astype(float)
        out = draw(latent, rng, dominant)
    else:
        out = draw(latent, rng)
    return out[0], out[1]


def _draw_meteor(latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (latent + rng.normal(0.0, METEOR_NOISE_SD, latent.shape))[..., None]


def _draw_acc(latent: np.ndarray, rng: np.random.Generator, dominant: np.ndarray) -> np.ndarray:
    hits = (rng.random(latent.shape) < np.clip(latent, 0.01, 0.99)) * dominant
    return np.stack([hits, np.broadcast_to(dominant, latent.shape)], axis=-1)


def _draw_bleu(latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    precision = np.clip(latent, 0.02, 0.98)
    ref_len = rng.integers(8, 15, latent.shape[-1]).astype(float)
    hyp_len = np.maximum(ref_len + rng.integers(-2, 3, latent.shape), 1.0)
    totals = np.stack([np.maximum(hyp_len - m, 0.0) for m in range(4)], axis=-1)
    matches = rng.binomial(totals.astype(np.int64), precision[..., None] ** np.arange(1, 5)).astype(float)
    return np.concatenate([matches, totals, hyp_len[..., None], np.broadcast_to(ref_len, latent.shape)[..., None]],
                          axis=-1)


_DRAWS: dict[str, Callable] = {"meteor": _draw_meteor, "acc": _draw_acc, "bleu4": _draw_bleu}


@dataclass(frozen=True)
class Scale:
    """A cell's pilot: metric units per latent unit and the test-set SE of one seed's difference."""

    slope: float
    test_se: float
    shared_fraction: float  # of one seed's painting variance, the part every seed shares


def pilot(kind: str, n_paintings: int, shared: bool, n_seeds: int = 5, reps: int = 30, seed: int = 0) -> Scale:
    """Slope of the metric's difference in the latent effect (common random numbers) and the SE."""
    metric = METRICS[kind]
    h = 0.02
    slopes, ses, shared_parts, totals = [], [], [], []
    for r in range(reps):
        base = Design(kind, n_seeds, n_paintings, shared)
        up = plant(Design(kind, n_seeds, n_paintings, shared, effect=h), np.random.default_rng([seed, r]))
        down = plant(Design(kind, n_seeds, n_paintings, shared, effect=-h), np.random.default_rng([seed, r]))
        slopes.append((_delta(up, metric) - _delta(down, metric)) / (2 * h))
        a, b = plant(base, np.random.default_rng([seed, r, 1]))
        diff = seed_test.linearized(a, metric) - seed_test.linearized(b, metric)
        ses.append(np.sqrt(diff.var(axis=1, ddof=1).mean() / n_paintings))
        parts = seed_test.variance_components(diff)
        shared_parts.append(max(parts.ms_paintings - parts.ms_error, 0.0) / n_seeds)
        totals.append(max(parts.ms_paintings - parts.ms_error, 0.0) / n_seeds + parts.ms_error)
    return Scale(float(np.mean(slopes)), float(np.mean(ses)), float(np.mean(shared_parts) / np.mean(totals)))


def _delta(pair: tuple[np.ndarray, np.ndarray], metric: CorpusMetric) -> float:
    a, b = pair
    n = a.shape[1]
    return float((metric.from_sums(a.sum(axis=1), n) - metric.from_sums(b.sum(axis=1), n)).mean())


def p_values(a: np.ndarray, b: np.ndarray, metric: CorpusMetric, seed: int, tests: tuple[str, ...] = TESTS
             ) -> dict[str, float]:
    """Two-sided p of each of ``tests`` on one planted pair.

    "new" is ``seed_test.seed_painting_test``'s p computed with the midpoint rule
    (``FAST_NODES``) instead of adaptive quadrature: the same number to about 1e-4 near
    0.05 (tests/test_significance_calibration.py checks it), 50x faster.
    """
    diff = seed_test.linearized(a, metric) - seed_test.linearized(b, metric)
    k, n = diff.shape
    deltas = diff.mean(axis=1)
    parts = seed_test.variance_components(diff)
    out = {}
    if "new" in tests:
        out["new"] = seed_test.generalized_p_value(parts.mean, parts.seed_variance, parts.shared_painting_variance,
                                                   k - 1, nodes=FAST_NODES)
    if "Satterthwaite" in tests:
        out["Satterthwaite"] = float(2 * scipy_stats.t.sf(abs(parts.mean) / math.sqrt(parts.variance), parts.df))
    if "t over seeds" in tests:
        out["t over seeds"] = float(scipy_stats.ttest_1samp(deltas, 0.0).pvalue)
    if "HKSJ" in tests:
        within = np.maximum(diff.var(axis=1, ddof=1) / n, 1e-30)
        meta = combine_effects(deltas, within, method_re="pm", use_t=True)
        se = float(meta.sd_eff_w_re_hksj)
        out["HKSJ"] = float(2 * scipy_stats.t.sf(abs(float(meta.mean_effect_re)) / se, k - 1)) if se > 0 else 1.0
    if "bootstrap" in tests:
        out["bootstrap"] = stats.paired_hierarchical_bootstrap(a, b, metric, BOOTSTRAP_RESAMPLES, seed).p_value
    return out


@dataclass(frozen=True)
class CellResult:
    design: Design
    spread: float  # seed spread / test-set SE, as asked
    scale: Scale
    effect_in_metric: float  # planted effect in metric units (power rows)
    rejections: dict[str, int]  # test -> nulls rejected at LEVEL
    n_nulls: int
    power: dict[str, float]
    n_effects: int

    def rate(self, test: str) -> float:
        return self.rejections[test] / self.n_nulls

    def interval(self, test: str, alpha: float = 0.05) -> tuple[float, float]:
        """Clopper-Pearson interval of the false-positive rate."""
        low, high = proportion_confint(self.rejections[test], self.n_nulls, alpha=alpha, method="beta")
        return float(low), float(high)


def run_cell(kind: str, n_seeds: int, n_paintings: int, shared: bool, spread: float, n_nulls: int,
             n_effects: int, seed: int, tests: tuple[str, ...] = TESTS, effect_z: float = 2.8) -> CellResult:
    """False positives on ``n_nulls`` planted nulls and power on ``n_effects`` planted effects.

    The planted effect is ``effect_z`` times the true sd of the seed-averaged difference
    (a z test with known variance would find it 80% of the time at 2.8).
    """
    scale = pilot(kind, n_paintings, shared, seed=seed)
    metric = METRICS[kind]
    seed_sd = spread * scale.test_se / (scale.slope * math.sqrt(2))  # both systems' seeds vary
    sd_mean = scale.test_se * math.sqrt(spread ** 2 / n_seeds + scale.shared_fraction
                                        + (1 - scale.shared_fraction) / n_seeds)
    effect_metric = effect_z * sd_mean
    rejections = dict.fromkeys(tests, 0)
    hits = dict.fromkeys(tests, 0)
    for planted, effect, count in ((True, 0.0, n_nulls), (False, effect_metric / scale.slope, n_effects)):
        for r in range(count):
            rng = np.random.default_rng([seed, int(planted), r, n_seeds, n_paintings, int(shared), int(10 * spread)])
            a, b = plant(Design(kind, n_seeds, n_paintings, shared, seed_sd, effect), rng)
            ps = p_values(a, b, metric, seed + r, tests)
            for test in tests:
                if ps[test] < LEVEL:
                    (rejections if planted else hits)[test] += 1
    power = {t: hits[t] / n_effects if n_effects else float("nan") for t in tests}
    return CellResult(Design(kind, n_seeds, n_paintings, shared, seed_sd), spread, scale, effect_metric,
                      rejections, n_nulls, power, n_effects)
