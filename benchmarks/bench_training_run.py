"""Wall time and peak memory of one default tiny run, split into training, generation and
metrics.

    .venv/bin/python benchmarks/bench_training_run.py [--output-dir DIR]

The three phases are timed by wrapping the loop's own functions (``train_step``,
``generate_explanations``, ``score_generations``); set-up (data, feature cache, EA
classifier, model) is what remains of the wall time.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict

import sevlm  # noqa: F401
from sevlm.config import apply_overrides, tiny
from sevlm.training import loop

SPENT: dict[str, float] = defaultdict(float)


def _timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()
    out = args.output_dir or tempfile.mkdtemp(prefix="sevlm-bench-run-")
    cfg = apply_overrides(tiny(), {"output_dir": f"{out}/run",
                                   "data.synthetic_dir": f"{out}/synthetic",
                                   "data.feature_cache_dir": f"{out}/cache/features"})
    loop.train_step = _timed("training", loop.train_step)
    loop.generate_explanations = _timed("generation", loop.generate_explanations)
    loop.score_generations = _timed("metrics", loop.score_generations)
    start = time.perf_counter()
    result = loop.run_training(cfg)
    wall = time.perf_counter() - start
    setup = wall - sum(SPENT.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"default tiny run (preset tiny, {cfg.train.epochs} epochs, "
          f"{cfg.data.synthetic_paintings} synthetic paintings), first run (cold caches)")
    print(f"  wall time          {wall:8.1f} s")
    for name in ("training", "generation", "metrics"):
        print(f"  {name:<18} {SPENT[name]:8.1f} s  ({100 * SPENT[name] / wall:4.1f}%)")
    print(f"  set-up and rest    {setup:8.1f} s  ({100 * setup / wall:4.1f}%)")
    print(f"  peak memory (RSS)  {peak:8.0f} MiB")
    print(f"  test ACC {result.final_metrics['test/acc']:.1f}  "
          f"BLEU-4 {result.final_metrics['test/bleu4']:.1f}  "
          f"METEOR {result.final_metrics.get('test/meteor', float('nan')):.1f}")


if __name__ == "__main__":
    main()
