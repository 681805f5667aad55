"""Calibration of the report's significance tests on planted nulls and planted effects (CPU).

For every cell of (metric, seeds 3 / 5, test-set size, shared painting noise none / high,
seed spread 0..6x the test-set SE) it plants ``--nulls`` null ablations and ``--effects``
ablations with a real difference (analysis/calibration.py says how), runs each test on
them and prints the false-positive rate at 0.05 with its 95% Clopper-Pearson interval,
and the power, for:

- bootstrap: the old stars, the paired hierarchical bootstrap of analysis/stats.py
  (B = 199 resamples: p = (k + 1) / 200 < 0.05 is decided exactly);
- new: the test behind the stars now (analysis/seed_test.py);
- t over seeds, HKSJ (Hartung-Knapp random effects over the per-seed differences,
  statsmodels) and Satterthwaite (the same variance as "new", t with estimated df):
  the alternatives the module docstring argues against, false positives only.

    python benchmarks/bench_significance_calibration.py            # the full grid
    python benchmarks/bench_significance_calibration.py --quick    # a few cells

The full grid (2 metrics x 2 x 3 x 2 x 5 = 120 cells, 300 nulls + 100 effects each) took
1198 s (20.0 min) on one core of the shared development machine at nice 10; its table is
in docs/significance.md. --quick (12 cells) took 6 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from threadpoolctl import threadpool_limits  # noqa: E402

from analysis.calibration import KINDS, LEVEL, TESTS, run_cell  # noqa: E402

SIDE = ("bootstrap", "new")
OTHERS = tuple(t for t in TESTS if t not in SIDE)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="bleu4,meteor", help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--seeds", type=_ints, default=[3, 5])
    parser.add_argument("--paintings", type=_ints, default=[100, 300, 1000])
    parser.add_argument("--spreads", type=_floats, default=[0, 1, 2, 4, 6], help="seed spread / test-set SE")
    parser.add_argument("--shared", default="none,high", help="shared painting noise: none, high or both")
    parser.add_argument("--nulls", type=int, default=300)
    parser.add_argument("--effects", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 100 paintings, spreads 0,2,6, 200 nulls")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.paintings, args.spreads, args.nulls, args.effects = [3], [100], [0, 2, 6], 200, 50
    kinds = args.kinds.split(",")
    shared = [{"none": False, "high": True}[s] for s in args.shared.split(",")]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"# commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; level {LEVEL}; "
          f"{args.nulls} nulls and {args.effects} effects per cell; FP: false-positive rate [95% Clopper-Pearson]; "
          "power at a planted effect of 2.8 sd of the seed-averaged difference")
    header = ("| metric | seeds | paintings | shared | spread | shared part | "
              + " | ".join(f"FP {t} | power {t}" for t in SIDE) + " | " + " | ".join(f"FP {t}" for t in OTHERS) + " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    start = time.perf_counter()
    worst = 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        for kind in kinds:
            for k in args.seeds:
                for n in args.paintings:
                    for share in shared:
                        for spread in args.spreads:
                            cell = run_cell(kind, k, n, share, spread, args.nulls, args.effects, args.seed)
                            cells = []
                            for test in SIDE:
                                low, high = cell.interval(test)
                                cells += [f"{cell.rate(test):.3f} [{low:.3f}, {high:.3f}]", f"{cell.power[test]:.2f}"]
                            cells += [f"{cell.rate(t):.3f}" for t in OTHERS]
                            worst = max(worst, cell.interval("new")[0])
                            print(f"| {kind} | {k} | {n} | {'high' if share else 'none'} | {spread:g} | "
                                  f"{cell.scale.shared_fraction:.2f} | " + " | ".join(cells) + " |", flush=True)
    elapsed = time.perf_counter() - start
    print(f"\n# {elapsed:.0f} s ({elapsed / 60:.1f} min) on one BLAS thread; highest lower bound of the new "
          f"test's false-positive interval: {worst:.3f} ({'at or below' if worst <= LEVEL else 'ABOVE'} {LEVEL})")
    return 0 if worst <= LEVEL else 1


if __name__ == "__main__":
    sys.exit(main())
