"""Per-trial framework overhead, and the peak memory of a default sweep.

1. The same tiny configuration (the default sweep's trial configuration: the paper's point
   of the alpha search on the tiny preset) is run
   a. directly: ``sevlm.training.loop.run_training(cfg)`` in this process, and
   b. as a one-trial sweep: ``sweeps/alpha_search.py --num-trials 1 --concurrency 1``
      (local Ray, Tune + OptunaSearch, the Ray Train V2 trainer, MLflow in SQLite),
   both on warm data (synthetic set, feature cache and EA classifier built beforehand),
   both with one torch thread. Printed: seconds, the overhead in seconds and in percent of
   the direct run, split into the sweep's fixed costs (starting Ray, MLflow) and the
   per-trial cost (trial wall time in Tune minus the direct run).
2. Peak memory of a default sweep (``sweeps/alpha_search.py`` with the default flags; by
   default reduced to ``--num-trials 2``: one wave at the default concurrency, which is
   what sets the peak), sampled every 0.5 s over the whole process tree (driver, Ray's
   daemons, the trial and training workers): the sum of PSS (proportional set size, shared
   pages split between processes) and of RSS.

    python benchmarks/bench_sweep_overhead.py [--steps N] [--memory-trials 2 | --full-default]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------- process-tree memory


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    tree = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += tree.get(pid, [])
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def _kind(pid: int) -> str:
    """A short name for a process: Ray sets the title of its workers (ray::RayTrainWorker...)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split(".")[0].split(":")[-1] or first
    name = os.path.basename(first)
    if name.startswith("python") and len(argv) > 1:
        arg = argv[1].decode(errors="replace")
        return f"python {os.path.basename(arg) or arg}"[:60]
    return name[:60]


class TreeMemorySampler:
    """Peak PSS and RSS of this process and all its descendants (Ray's included)."""

    def __init__(self, root: int | None = None, interval: float = 0.5):
        self.root = root or os.getpid()
        self.interval = interval
        self.peak_pss = self.peak_rss = 0
        self.peak_procs = 0
        self.peak_breakdown: dict[str, list[int]] = {}  # process kind -> [count, PSS KiB]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids = _tree(self.root)
            pss = rss = 0
            breakdown: dict[str, list[int]] = {}
            for pid in pids:
                p, r = _memory_kb(pid)
                pss += p
                rss += r
                entry = breakdown.setdefault(_kind(pid), [0, 0])
                entry[0] += 1
                entry[1] += p
            if pss > self.peak_pss:
                self.peak_pss, self.peak_procs, self.peak_breakdown = pss, len(pids), breakdown
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------- the runs


def trial_flags(steps: int | None) -> list[str]:
    """The only flag the compared sweep adds to the defaults (data: the defaults in ``work``)."""
    return [] if steps is None else ["--set", f"train.max_steps={steps}"]


def direct_config(work: Path, steps: int | None):
    """The configuration a one-trial alpha search gives its first (paper) trial: the sweep's
    own spec, built from its flags in ``work``, composed at the paper's point."""
    from sevlm.config import compose
    from sweeps import alpha_search
    from sweeps.spec import build_spec

    sweep = alpha_search.SWEEP
    args = sweep.parser().parse_args(["--name", "direct", "--storage", str(work / "direct"), "--num-trials", "1"]
                                     + trial_flags(steps))
    spec = build_spec(args, kind=sweep.kind, strategy_flags=sweep.strategy, default_overrides=sweep.default_overrides,
                      default_metric=sweep.default_metric, cwd=work)
    settings = spec.trial_settings
    return compose(settings.base, settings.point_overrides(spec.plan.paper_point), settings.run_overrides("direct"))


def run_direct(work: Path, steps: int | None) -> float:
    import torch

    from sevlm.training.loop import run_training

    torch.set_num_threads(1)
    cfg = direct_config(work, steps)
    start = time.perf_counter()
    run_training(cfg)
    return time.perf_counter() - start


def run_direct_fresh_process(work: Path, steps: int | None) -> float:
    """The same direct run in a new Python process, timed from outside (as a trial is)."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
        "from bench_sweep_overhead import run_direct\n"
        "from pathlib import Path\n"
        "run_direct(Path(%r), %r)\n"
    ) % (str(REPO), str(Path(__file__).resolve().parent), str(work), steps)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def run_sweep(work: Path, name: str, argv: list[str]) -> tuple[int, float, str]:
    from sweeps.alpha_search import main

    cwd = os.getcwd()
    os.chdir(work)
    out = io.StringIO()
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            # --no-report: the sweep's own cost, comparable with figures measured before
            # the alpha search built its report at its end
            rc = main(["--name", name, "--progress-interval", "600", "--no-report"] + argv)
        if rc != 0:
            print(out.getvalue())
        return rc, time.perf_counter() - start, out.getvalue()
    finally:
        os.chdir(cwd)


def trial_times(work: Path, name: str) -> list[dict]:
    """Per trial: Tune's wall time of the trial, and MLflow's run duration."""
    from trainables import mlflow_store
    from trainables import tracking_schema as schema

    out = []
    for run in mlflow_store.sweep_runs(f"sqlite:///{work / 'mlflow.db'}", name).trials:
        out.append({
            "trial_id": run.data.tags[schema.TAG_TRIAL_ID],
            "mlflow_s": (run.info.end_time - run.info.start_time) / 1000.0,
        })
    for path in (work / "ray_results" / name).glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            tid = lines[-1].get("trial_id")
            for row in out:
                if row["trial_id"] == tid:
                    row["tune_time_total_s"] = lines[-1].get("time_total_s")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps of the compared run (default: a whole default-sweep trial)")
    p.add_argument("--memory-trials", type=int, default=2,
                   help="trials of the default sweep whose memory is measured (default 2: one wave)")
    p.add_argument("--full-default", action="store_true", help="measure the full default sweep instead")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    print(f"work directory: {work}; CPUs: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")

    # Warm-up: synthetic data, feature cache, EA classifier, imports.
    t = time.perf_counter()
    import dataclasses

    from sevlm.training.loop import run_training

    warm = direct_config(work, 2)
    run_training(dataclasses.replace(warm, output_dir=str(work / "warmup")))
    print(f"warm-up (data, caches, imports): {time.perf_counter() - t:.1f} s")

    direct = run_direct(work, args.steps)
    what = f"{args.steps} steps" if args.steps else "a whole default-sweep trial"
    print(f"direct run_training ({what}, 1 thread): {direct:.1f} s")
    fresh = run_direct_fresh_process(work, args.steps)
    print(f"direct run_training in a fresh process (imports included): {fresh:.1f} s")

    flags = trial_flags(args.steps)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rc, total, out = run_sweep(work, f"overhead-{stamp}", ["--num-trials", "1", "--concurrency", "1",
                                                  "--cpus-per-trial", "1"] + flags)
    if rc != 0:
        print(out)
        print(f"sweep failed with exit code {rc}")
        return 1
    times = trial_times(work, f"overhead-{stamp}")
    trial = times[0] if times else {}
    tune_s = trial.get("tune_time_total_s") or trial.get("mlflow_s") or total
    per_trial = tune_s - direct
    print(f"one-trial sweep, whole command:   {total:.1f} s  (+{total - direct:.1f} s, "
          f"+{100 * (total - direct) / direct:.0f}% over the direct run)")
    print(f"  the trial itself (Tune wall):   {tune_s:.1f} s  (+{per_trial:.1f} s, "
          f"+{100 * per_trial / direct:.0f}%: Ray Train worker group, checkpoint reports, MLflow)")
    if trial.get("mlflow_s"):
        print(f"  MLflow run duration:            {trial['mlflow_s']:.1f} s")
    print(f"    of which a fresh process's imports: {fresh - direct:.1f} s; the rest, {tune_s - fresh:.1f} s "
          f"(+{100 * (tune_s - fresh) / direct:.0f}%), is Ray Train + Tune + MLflow")
    print(f"  fixed per sweep (Ray start, searcher, MLflow setup, shutdown): {total - tune_s:.1f} s")

    if not args.skip_memory:
        # In a child process, so that this process (torch, the direct runs) is not counted.
        import subprocess

        extra = [] if args.full_default else ["--num-trials", str(args.memory_trials)]
        cmd = [sys.executable, str(REPO / "sweeps" / "alpha_search.py"), "--name", f"memory-{stamp}",
               "--progress-interval", "600"] + extra
        start = time.perf_counter()
        with open(work / "memory_sweep.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            with TreeMemorySampler(proc.pid) as mem:
                rc = proc.wait()
        total = time.perf_counter() - start
        what = "full default sweep" if args.full_default else f"default sweep reduced to {args.memory_trials} trials"
        print(f"{what}: exit code {rc}, {total:.1f} s; peak memory of the process tree: "
              f"PSS {mem.peak_pss / 2**20:.2f} GiB, RSS {mem.peak_rss / 2**20:.2f} GiB "
              f"({mem.peak_procs} processes at the peak)")
        for kind, (count, kib) in sorted(mem.peak_breakdown.items(), key=lambda kv: -kv[1][1]):
            print(f"    {kind:<45} x{count:<3} PSS {kib / 2**10:7.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
