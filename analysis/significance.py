"""Every variant against the full model, and each variant's score with its interval.

The stars come from the paired hierarchical bootstrap (``analysis.stats``) with Holm over
the family of every variant x starred metric; the per-seed approximate randomisation gives
the secondary "k of n seeds significant". Metrics outside the family get Δ, CI and a raw p
for reading, never stars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.predictions import METRICS, SCALE, STARRED, Aligned, Metric
from analysis.runs import Sweep
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


def family(sweep: Sweep, aligned: Aligned, reference: str = FULL) -> list[tuple[str, str]]:
    """(variant, metric) pairs behind the stars: every variant with runs x starred metric present."""
    present = {m.name for m in metrics_present(aligned)}
    variants = [v for v in sweep.seeds_by_variant() if v != reference]
    return [(v, m) for v in variants for m in STARRED if m in present]


def settings_for(sweep: Sweep, aligned: Aligned, seed: int, n_resamples: int | None = None) -> TestSettings:
    """At least ``min_resamples`` for the family, so that Holm can still give p < 0.001."""
    pairs = family(sweep, aligned)
    needed = stats.min_resamples(max(len(pairs), 1))
    return TestSettings(max(n_resamples or 0, needed), seed, pairs)


def _seed_arrays(pairs: dict, aligned: Aligned, variant: str, seeds: list[int], metric: Metric) -> np.ndarray:
    return aligned.stack([pairs[(variant, s)] for s in seeds], metric.corpus)


def compare(sweep: Sweep, aligned: Aligned, settings: TestSettings) -> pd.DataFrame:
    """One row per variant x metric present: Δ = reference − variant, CI, raw and Holm p, stars."""
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
        paired = bool(common)
        for metric in metrics_present(aligned):
            a_seeds, b_seeds = (common, common) if paired else (seeds[reference], seeds[variant])
            a = _seed_arrays(pairs, aligned, reference, a_seeds, metric)
            b = _seed_arrays(pairs, aligned, variant, b_seeds, metric)
            boot = stats.paired_hierarchical_bootstrap(
                a, b, metric.corpus, settings.n_resamples, settings.seed, paired_seeds=paired
            )
            # the secondary test backs the stars: only for the family's comparisons
            secondary = paired and (variant, metric.name) in starred
            k, n = _seeds_significant(a, b, metric, settings) if secondary else (None, None)
            rows.append({
                "variant": variant,
                "metric": metric.name,
                "reference": SCALE * boot.score_a,
                "score": SCALE * boot.score_b,
                "delta": SCALE * boot.delta,
                "ci_low": SCALE * boot.ci_low,
                "ci_high": SCALE * boot.ci_high,
                "p_raw": boot.p_value,
                "in_family": (variant, metric.name) in starred,
                "seeds": ",".join(map(str, a_seeds)) + ("" if paired else " vs " + ",".join(map(str, b_seeds))),
                "paired_seeds": paired,
                "paintings": boot.n_paintings,
                "ar_significant": k,
                "ar_seeds": n,
            })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    table["stars"] = ""
    mask = table["in_family"].to_numpy()
    if mask.any():
        adjusted = stats.holm(table.loc[mask, "p_raw"].to_numpy())
        table.loc[mask, "p_holm"] = adjusted
        table.loc[mask, "stars"] = [stats.stars(p) for p in adjusted]
    return table


def _seeds_significant(a: np.ndarray, b: np.ndarray, metric: Metric, settings: TestSettings) -> tuple[int, int]:
    results = stats.approximate_randomization_by_seed(a, b, metric.corpus, settings.n_resamples, settings.seed)
    return sum(r.p_value < SEED_LEVEL for r in results), len(results)


def intervals(sweep: Sweep, aligned: Aligned, settings: TestSettings, metrics: list[Metric]) -> pd.DataFrame:
    """Each variant's seed-averaged score with its hierarchical-bootstrap 95% CI (percent)."""
    rows, pairs = [], sweep.pairs()
    for variant, seeds in sweep.seeds_by_variant().items():
        for metric in metrics:
            ci = stats.hierarchical_bootstrap_interval(
                _seed_arrays(pairs, aligned, variant, seeds, metric), metric.corpus, settings.n_resamples,
                settings.seed,
            )
            rows.append({"variant": variant, "metric": metric.name, "score": SCALE * ci.score,
                         "ci_low": SCALE * ci.ci_low, "ci_high": SCALE * ci.ci_high, "seeds": len(seeds)})
    return pd.DataFrame(rows)


def per_seed_scores(sweep: Sweep, aligned: Aligned, metrics: list[Metric]) -> pd.DataFrame:
    """Each run's corpus score recomputed on the aligned paintings (the dots of the figures)."""
    rows, pairs = [], sweep.pairs()
    for variant, seeds in sweep.seeds_by_variant().items():
        for seed in seeds:
            frame = aligned.frames[pairs[(variant, seed)]].loc[aligned.paintings]
            for metric in metrics:
                rows.append({"variant": variant, "seed": seed, "metric": metric.name,
                             "score": SCALE * metric.corpus(metric.corpus.select(frame))})
    return pd.DataFrame(rows)
