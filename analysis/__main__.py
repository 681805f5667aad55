"""python -m analysis SWEEP [--tracking-uri URI] [--experiment NAME] [--out DIR]

Rebuilds a sweep's report (tables, significance tests, figures, report.md / report.html)
from MLflow alone and logs it to the sweep's parent run. Imports no Ray.
"""

from __future__ import annotations

import argparse
import sys
import time

from analysis.report import DEFAULT_SEED, build_report
from analysis.runs import SweepNotFound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the sweep's name (its Ray Tune experiment name)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    parser.add_argument("--experiment", default=None,
                        help="MLflow experiment (default: the sweeps' default, else whichever holds the sweep)")
    parser.add_argument("--out", default=None, help="output folder (default reports/<sweep>)")
    parser.add_argument("--resamples", type=int, default=None,
                        help="resamples of the per-seed approximate randomisation (default 10000; the stars need none)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="resampling seed (recorded in the report)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = build_report(args.sweep, args.tracking_uri, args.experiment, args.out, n_resamples=args.resamples,
                           seed=args.seed, log_to_mlflow=not args.no_log)
    except SweepNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Report of {args.sweep}: {out / 'report.md'} ({time.perf_counter() - start:.1f} s)"
          + ("" if args.no_log else "; also in the parent run's artifacts under report/"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
