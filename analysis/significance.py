"""Every variant against the full model, and each variant's score with its interval.

The stars come from the generalised t over seeds x paintings (``analysis.seed_test``) on
the seeds both systems have, with Holm over the testable comparisons of the family (every
variant x starred metric). Fewer than ``seed_test.MIN_SEEDS`` paired seeds: "not
testable", no stars. The per-seed approximate randomisation gives the secondary "k of n
seeds significant", conditional on the trained models. Metrics outside the family get Δ,
CI and a raw p for reading, never stars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import seed_test, stats
from analysis.predictions import METRICS, SCALE, STARRED, Aligned, Metric
from analysis.runs import MlflowSweep
from sevlm.variants import FULL

# Per-seed approximate randomisation counts a seed as significant below this (uncorrected).
SEED_LEVEL = 0.05


@dataclass
class TestSettings:
    """How the tests were run: the report states all of it."""

    n_resamples: int
    seed: int
    family: list[tuple[str, str]] = field(default_factory=list)  # (variant, metric)
    reference: str = FULL


def metrics_present(aligned: Aligned) -> list[Metric]:
    return [m for m in METRICS.values() if aligned.available(m)]


def family(sweep: MlflowSweep, aligned: Aligned, reference: str = FULL) -> list[tuple[str, str]]:
    """(variant, metric) pairs behind the stars: every variant with runs x starred metric present."""
    present = {m.name for m in metrics_present(aligned)}
    variants = [v for v in sweep.seeds_by_variant() if v != reference]
    return [(v, m) for v in variants for m in STARRED if m in present]


def settings_for(sweep: MlflowSweep, aligned: Aligned, seed: int, n_resamples: int | None = None) -> TestSettings:
    """The family and the approximate randomisation's resamples (the stars need none)."""
    return TestSettings(n_resamples or stats.DEFAULT_RESAMPLES, seed, family(sweep, aligned))


def _seed_arrays(pairs: dict, aligned: Aligned, variant: str, seeds: list[int], metric: Metric) -> np.ndarray:
    return aligned.stack([pairs[(variant, s)] for s in seeds], metric.corpus)


def compare(sweep: MlflowSweep, aligned: Aligned, settings: TestSettings) -> pd.DataFrame:
    """One row per variant x metric present: Δ = reference − variant, per-seed Δ, CI, test, raw and
    Holm p, stars ("not testable" below ``seed_test.MIN_SEEDS`` paired seeds)."""
    seeds, pairs = sweep.seeds_by_variant(), sweep.pairs()
    reference = settings.reference
    if reference not in seeds:
        return pd.DataFrame()
    rows = []
    starred = set(settings.family)
    for variant in seeds:
        if variant == reference:
            continue
        common = [s for s in seeds[reference] if s in seeds[variant]]
        for metric in metrics_present(aligned):
            rows.append(_compare_one(pairs, aligned, reference, variant, common, seeds, metric, settings,
                                     (variant, metric.name) in starred))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    # "not testable" is a verdict on a starred comparison; the other metrics never get stars
    table["stars"] = [seed_test.NOT_TESTABLE if family and not testable else ""
                      for family, testable in zip(table["in_family"], table["testable"])]
    mask = (table["in_family"] & table["testable"]).to_numpy()
    if mask.any():
        adjusted = stats.holm(table.loc[mask, "p_raw"].to_numpy())
        table.loc[mask, "p_holm"] = adjusted
        table.loc[mask, "stars"] = [stats.stars(p) for p in adjusted]
    return table


def _compare_one(pairs, aligned, reference, variant, common, seeds, metric, settings, in_family) -> dict:
    if common:
        a = _seed_arrays(pairs, aligned, reference, common, metric)
        b = _seed_arrays(pairs, aligned, variant, common, metric)
        result = seed_test.seed_painting_test(a, b, metric.corpus)
        reason = result.reason
        deltas = "; ".join(f"{s}: {SCALE * d:+.3f}" for s, d in zip(common, result.seed_deltas))
    else:  # no seed in common: nothing to pair, only the scores are shown
        a = _seed_arrays(pairs, aligned, reference, seeds[reference], metric)
        b = _seed_arrays(pairs, aligned, variant, seeds[variant], metric)
        result, reason, deltas = None, "no seed in common with the reference", ""
    n = a.shape[1]
    score_a = float(metric.corpus.from_sums(a.sum(axis=1), n).mean())
    score_b = float(metric.corpus.from_sums(b.sum(axis=1), n).mean())
    testable = result is not None and result.testable
    nan = float("nan")
    # the secondary test backs the stars: only for the family's comparisons
    k, m = _seeds_significant(a, b, metric, settings) if common and in_family else (None, None)
    return {
        "variant": variant,
        "metric": metric.name,
        "reference": SCALE * score_a,
        "score": SCALE * score_b,
        "delta": SCALE * (score_a - score_b),
        "seed_deltas": deltas,
        "ci_low": SCALE * result.ci_low if testable else nan,
        "ci_high": SCALE * result.ci_high if testable else nan,
        "test": seed_test.NAME if testable else seed_test.NOT_TESTABLE,
        "not_testable_reason": reason,
        "seed_df": result.seed_df if testable else nan,
        "effective_df": result.effective_df if testable else nan,
        "painting_share": result.painting_share if testable else nan,
        "p_raw": result.p_value if testable else nan,
        "testable": testable,
        "in_family": in_family,
        "seeds": ",".join(map(str, common)) if common
        else ",".join(map(str, seeds[reference])) + " vs " + ",".join(map(str, seeds[variant])),
        "paired_seeds": bool(common),
        "paintings": n,
        "ar_significant": k,
        "ar_seeds": m,
    }


def _seeds_significant(a: np.ndarray, b: np.ndarray, metric: Metric, settings: TestSettings) -> tuple[int, int]:
    results = stats.approximate_randomization_by_seed(a, b, metric.corpus, settings.n_resamples, settings.seed)
    return sum(r.p_value < SEED_LEVEL for r in results), len(results)


def intervals(sweep: MlflowSweep, aligned: Aligned, settings: TestSettings, metrics: list[Metric]) -> pd.DataFrame:
    """Each variant's seed-averaged score with the 95% interval of ``seed_test`` (percent);
    ``seeds_counted`` is False below ``seed_test.MIN_SEEDS`` seeds (the paintings' interval alone)."""
    rows, pairs = [], sweep.pairs()
    for variant, seeds in sweep.seeds_by_variant().items():
        for metric in metrics:
            ci = seed_test.seed_painting_interval(_seed_arrays(pairs, aligned, variant, seeds, metric), metric.corpus)
            rows.append({"variant": variant, "metric": metric.name, "score": SCALE * ci.score,
                         "ci_low": SCALE * ci.ci_low, "ci_high": SCALE * ci.ci_high, "seeds": len(seeds),
                         "seeds_counted": ci.seeds_counted})
    return pd.DataFrame(rows)


def per_seed_scores(sweep: MlflowSweep, aligned: Aligned, metrics: list[Metric]) -> pd.DataFrame:
    """Each run's corpus score recomputed on the aligned paintings (the dots of the figures)."""
    rows, pairs = [], sweep.pairs()
    for variant, seeds in sweep.seeds_by_variant().items():
        for seed in seeds:
            frame = aligned.frames[pairs[(variant, seed)]].loc[aligned.paintings]
            for metric in metrics:
                rows.append({"variant": variant, "seed": seed, "metric": metric.name,
                             "score": SCALE * metric.corpus(metric.corpus.select(frame))})
    return pd.DataFrame(rows)
