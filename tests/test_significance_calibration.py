"""A fast run of benchmarks/bench_significance_calibration.py: the stars' test holds its level
on planted nulls where today's bootstrap and the naive seed-level tests do not."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from analysis import calibration, seed_test

NULLS = 300
SEED = 11


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.mark.parametrize("kind,spread", [("meteor", 0), ("meteor", 2), ("meteor", 6), ("bleu4", 2), ("acc", 4)])
def test_new_test_holds_its_level_with_shared_paintings_at_three_seeds(kind, spread) -> None:
    cell = calibration.run_cell(kind, 3, 100, True, spread, NULLS, 40, SEED, tests=("t over seeds", "new"))
    low, _ = cell.interval("new", alpha=0.01)  # 99% Clopper-Pearson
    assert low <= calibration.LEVEL, f"false positives {cell.rate('new'):.3f} of {NULLS}"
    assert cell.power["new"] > 0.15  # it still finds planted effects


def test_naive_tests_lose_the_level_where_the_new_one_keeps_it() -> None:
    # seeds agree, painting noise shared: the t over the seeds' differences misses it
    agree = calibration.run_cell("meteor", 3, 100, True, 0, NULLS, 0, SEED, tests=("t over seeds", "new"))
    assert agree.interval("t over seeds", alpha=0.01)[0] > calibration.LEVEL
    # seeds disagree: today's bootstrap resamples 3 seeds too narrowly
    disagree = calibration.run_cell("meteor", 3, 100, True, 6, 150, 0, SEED, tests=("bootstrap", "new"))
    assert disagree.interval("bootstrap", alpha=0.01)[0] > calibration.LEVEL
    assert disagree.interval("new", alpha=0.01)[0] <= calibration.LEVEL


def test_planted_nulls_are_exchangeable_and_the_grid_axes_are_what_they_say() -> None:
    design = calibration.Design("bleu4", 5, 300, True)
    deltas = []
    for r in range(200):
        a, b = calibration.plant(design, np.random.default_rng([SEED, r]))
        deltas.append(np.mean(seed_test.linearized(a, calibration.METRICS["bleu4"]).mean(axis=1)
                              - seed_test.linearized(b, calibration.METRICS["bleu4"]).mean(axis=1)))
    assert abs(np.mean(deltas)) < 3 * np.std(deltas) / np.sqrt(len(deltas))  # the null is a null
    scale = calibration.pilot("meteor", 300, False, seed=SEED)
    # meteor: difference per latent unit is 1, its SE sqrt(2) x the noise sd over sqrt(n)
    assert scale.slope == pytest.approx(1.0, abs=1e-9)
    assert scale.test_se == pytest.approx(np.sqrt(2) * calibration.METEOR_NOISE_SD / np.sqrt(300), rel=0.1)
    assert scale.shared_fraction < 0.05
