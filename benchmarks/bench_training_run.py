"""Wall time and peak memory of one default tiny run, split into training, generation and
metrics; with ``--allocator``, what keeping freed memory in malloc saves.

    .venv/bin/python benchmarks/bench_training_run.py [--output-dir DIR]
    .venv/bin/python benchmarks/bench_training_run.py --allocator [--pairs 3] [--steps 120]

The three phases are timed by wrapping the loop's own functions (``train_step``,
``generate_explanations``, ``score_generations``); set-up (data, feature cache, EA
classifier, model) is what remains of the wall time.

``--allocator``: the same short tiny run (one torch thread, the full model) in fresh
processes, alternately with ``sevlm.training.allocator.keep_freed_memory`` and without it;
wall, user and kernel time and page faults of each, side by side.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
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


# One run in a fresh process; argv: output folder, steps, "keep" or "default" malloc.
ALLOCATOR_RUN = r"""
import sys, torch
torch.set_num_threads(1)
from sevlm.config import apply_overrides, tiny
from sevlm.training import loop
out, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "default":
    loop.keep_freed_memory = lambda: False
cfg = apply_overrides(tiny(), {"output_dir": f"{out}/run-{mode}", "train.max_steps": steps,
                               "data.synthetic_dir": f"{out}/synthetic",
                               "data.feature_cache_dir": f"{out}/cache/features"})
print(loop.run_training(cfg).final_metrics["test/bleu4"])
"""


def bench_allocator(out: str, pairs: int, steps: int) -> None:
    def run(mode: str, run_steps: int) -> dict[str, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", ALLOCATOR_RUN, out, str(run_steps), mode],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the {mode} run failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
                "faults": after.ru_minflt - before.ru_minflt, "result": done.stdout.split()[-1]}

    run("keep", 2)  # data, feature cache, EA classifier
    runs: dict[str, list[dict]] = {"default": [], "keep": []}
    for _ in range(pairs):
        for mode in runs:
            runs[mode].append(run(mode, steps))
    print(f"tiny preset, full model, {steps} steps and two evaluations, one torch thread, {pairs} runs each "
          f"(alternating), mean per run:")
    mean = {mode: {k: sum(r[k] for r in rs) / len(rs) for k in ("wall", "user", "sys", "faults")}
            for mode, rs in runs.items()}
    for mode, label in (("default", "malloc defaults"), ("keep", "keep_freed_memory")):
        m = mean[mode]
        print(f"  {label:<18} wall {m['wall']:6.1f} s  user {m['user']:6.1f} s  kernel {m['sys']:5.1f} s  "
              f"page faults {m['faults'] / 1e6:5.2f} M")
    saved = mean["default"]["wall"] - mean["keep"]["wall"]
    same = len({r["result"] for rs in runs.values() for r in rs}) == 1
    print(f"  saved {saved:.1f} s per run ({100 * saved / mean['default']['wall']:.0f}% of the wall time); "
          f"identical results: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--allocator", action="store_true", help="keep_freed_memory against malloc's defaults")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each with --allocator (default 3)")
    parser.add_argument("--steps", type=int, default=120, help="steps per run with --allocator (default 120)")
    args = parser.parse_args()
    out = args.output_dir or tempfile.mkdtemp(prefix="sevlm-bench-run-")
    if args.allocator:
        bench_allocator(out, args.pairs, args.steps)
        return
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
