"""Per-trial overhead of the ablation sweep (the grid strategy) against running the same
trials directly, and where a trial's time goes.

1. Warm-up: synthetic data, feature cache and EA classifier, as a sweep's first trial
   builds them (every later trial and run reads them).
2. Directly: each trial's configuration (exactly what the sweep's grid gives it) run by
   ``sevlm.training.loop.run_training`` in a fresh Python process, one torch thread, as
   ``python -m sevlm.train`` would run it. Timed from outside, and inside by phase:
   start-up (interpreter and imports), set-up (data, caches, model), training steps,
   evaluation (generation, then the metrics), the rest (checkpoints, predictions files).
3. The same trials as one ablation sweep, one at a time on one CPU
   (``sweeps/ablations.py --variants ... --seeds 1 --concurrency 1 --cpus-per-trial 1``).
   A trial's time in the sweep runs from the end of the previous one (the sweep's start
   for the first) to its own end, read from MLflow, so it counts everything the framework
   adds: Tune's scheduling, the trial actor, Ray Train's controller and worker, reports
   and checkpoints, MLflow writes.

With ``--framework-only`` the trials run a stand-in for the training loop that trains
nothing (``SEVLM_TRAINING_FN``): what remains is the framework's own cost per trial, free of
the noise of a minute of training on a shared machine.

    python benchmarks/bench_ablation_overhead.py [--variants baseline,full] [--steps N]
    python benchmarks/bench_ablation_overhead.py --framework-only --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Run in a fresh process: times the phases of one run_training call by wrapping the loop's
# own functions (set-up is build_context; evaluation is generation + metrics).
PHASES = r"""
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(1)
from collections import defaultdict
from sevlm.config import from_json
from sevlm.training import loop
spent = defaultdict(float)
def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t
    return wrapper
for name, attr in (("setup", "build_context"), ("training", "train_step"),
                   ("generation", "generate_explanations"), ("metrics", "score_generations")):
    setattr(loop, attr, timed(name, getattr(loop, attr)))
cfg = from_json(open(sys.argv[1]).read())
imports = time.perf_counter() - start
t = time.perf_counter()
result = loop.run_training(cfg)
run = time.perf_counter() - t
print(json.dumps({"imports": imports, "run": run, **spent, "test_acc": result.final_metrics.get("test/acc")}))
"""


def stand_in(cfg, callbacks=(), resume_from=None, progress=False):
    """``run_training`` that trains nothing: one final report (for --framework-only)."""
    from sevlm.training.callbacks import RunResult

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for cb in callbacks:
        cb.on_train_start({"seed": cfg.seed}, 0)
    result = RunResult(final_metrics={"test/acc": 0.0}, best_checkpoint_dir=None, output_dir=out)
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def framework_only(work: Path, variants: list[str], seeds: int) -> None:
    env = {**os.environ, "SEVLM_TRAINING_FN": "bench_ablation_overhead:stand_in",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    start = time.perf_counter()
    # what a direct run imports before its first step, then the stand-in
    subprocess.run([sys.executable, "-c", "import sevlm.training.loop, bench_ablation_overhead as b, sevlm.config as c; "
                    "b.stand_in(c.tiny().__class__(output_dir=%r))" % str(work / "direct")], env=env, check=True)
    direct = time.perf_counter() - start
    wall, in_sweep, _ = run_sweep(work, f"framework-{time.strftime('%Y%m%d-%H%M%S')}", variants, None, seeds, env)
    later = in_sweep[1:] or in_sweep
    print(f"framework only ({len(in_sweep)} trials that train nothing, one at a time): "
          f"{sum(later) / len(later):.1f} s per trial after the first "
          f"(times {', '.join(f'{t:.1f}' for t in in_sweep)} s); the same stand-in directly in a fresh "
          f"process: {direct:.1f} s; sweep command {wall:.1f} s")


def trial_configs(work: Path, variants: list[str], steps: int | None):
    """The configurations the ablation sweep gives these trials (seed 0), in this order: the
    sweep's own spec, built from its flags in ``work``, composed at each trial's point."""
    from sevlm.config import compose
    from sweeps import ablations
    from sweeps.spec import build_spec

    sweep = ablations.SWEEP
    args = sweep.parser().parse_args(["--name", "direct", "--storage", str(work / "direct"), "--variants",
                                      ",".join(variants), "--seeds", "1"] + steps_flags(steps))
    spec = build_spec(args, kind=sweep.kind, strategy_flags=sweep.strategy, default_overrides=sweep.default_overrides,
                      default_metric=sweep.default_metric, cwd=work)
    settings = spec.trial_settings
    configs = {point["ablation"]: compose(settings.base, settings.point_overrides(point),
                                          settings.run_overrides(point["ablation"])) for point in spec.plan.points()}
    return [configs[v] for v in variants]


def steps_flags(steps: int | None) -> list[str]:
    return [] if steps is None else ["--set", f"train.max_steps={steps}"]


def run_direct(cfg, work: Path) -> dict:
    from sevlm.config import to_json

    path = work / f"{Path(cfg.output_dir).name}.json"
    path.write_text(to_json(cfg))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PHASES, str(path)], check=True, capture_output=True, text=True,
                          cwd=REPO)
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    phases["wall"] = time.perf_counter() - start
    return phases


def run_sweep(work: Path, name: str, variants: list[str], steps: int | None, seeds: int = 1,
              env: dict[str, str] | None = None) -> tuple[float, list[float], list[float | None]]:
    """Wall time of the sweep command, and each trial's time and test ACC in it (sweep order)."""
    from trainables import mlflow_store
    from trainables import tracking_schema as schema

    cmd = [sys.executable, str(REPO / "sweeps" / "ablations.py"), "--name", name, "--variants", ",".join(variants),
           "--seeds", str(seeds), "--concurrency", "1", "--cpus-per-trial", "1", "--progress-interval", "600"]
    cmd += steps_flags(steps)
    env = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
        raise SystemExit(f"the sweep failed with exit code {done.returncode}")
    runs = mlflow_store.sweep_runs(f"sqlite:///{work / 'mlflow.db'}", name)
    previous = runs.parent.info.start_time
    times, accs = [], []
    for run in sorted(runs.trials, key=lambda r: r.info.end_time):
        times.append((run.info.end_time - previous) / 1000)
        accs.append(run.data.metrics.get(schema.TEST_PREFIX + "acc"))
        previous = run.info.end_time
    return wall, times, accs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="baseline,full", help="trials to compare, at seed 0 (default baseline,full)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per trial (default: a whole default trial)")
    p.add_argument("--framework-only", action="store_true", help="trials that train nothing (see above)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant with --framework-only (default 1)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ablation_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {work}; CPUs: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    if args.framework_only:
        framework_only(work, variants, args.seeds)
        return 0

    t = time.perf_counter()
    warm = trial_configs(work, variants[:1], 2)[0]
    run_direct(warm, work)
    print(f"warm-up (synthetic data, feature cache, EA classifier): {time.perf_counter() - t:.1f} s")

    direct = [run_direct(cfg, work) for cfg in trial_configs(work, variants, args.steps)]
    wall, in_sweep, sweep_accs = run_sweep(work, f"overhead-{time.strftime('%Y%m%d-%H%M%S')}", variants, args.steps)

    what = f"{args.steps} steps" if args.steps else "a whole default trial"
    print(f"\nper trial ({what}, one CPU), directly in a fresh process vs in the ablation sweep:")
    header = f"  {'variant':<22}{'direct':>8}{'sweep':>8}{'overhead':>18}   direct = start-up + set-up + training + evaluation + rest"
    print(header)
    for name, d, s, acc in zip(variants, direct, in_sweep, sweep_accs):
        evaluation = d.get("generation", 0) + d.get("metrics", 0)
        rest = d["run"] - d.get("setup", 0) - d.get("training", 0) - evaluation
        startup = d["wall"] - d["run"]
        print(f"  {name:<22}{d['wall']:7.1f}s{s:7.1f}s{s - d['wall']:+9.1f}s ({100 * (s - d['wall']) / d['wall']:+4.0f}%)"
              f"   {startup:.1f} + {d.get('setup', 0):.1f} + {d.get('training', 0):.1f} + {evaluation:.1f}"
              f" ({d.get('generation', 0):.1f} generation, {d.get('metrics', 0):.1f} metrics) + {rest:.1f}"
              f"   test ACC {d.get('test_acc', float('nan')):.2f} directly, {float('nan') if acc is None else acc:.2f} in the sweep"
              f" ({'same' if acc == d.get('test_acc') else 'DIFFERENT'})")
    later = [s - d["wall"] for d, s in zip(direct[1:], in_sweep[1:])]
    if later:
        mean = sum(later) / len(later)
        base = sum(d["wall"] for d in direct[1:]) / len(later)
        print(f"  overhead per trial after the first: {mean:+.1f} s ({100 * mean / base:+.0f}%)")
    print(f"sweep command: {wall:.1f} s, of which trials {sum(in_sweep):.1f} s and fixed costs (Python and Ray "
          f"start, MLflow set-up, results, shutdown) {wall - sum(in_sweep):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
