"""How many trial reports per second the sweep driver's MLflow writer sustains against the
SQLite-backed tracking server of a cluster's head, here on loopback, and what that means
for the size of a cluster.

The server is the head's (``scripts/mlflow_server.sh``: ``mlflow server``, one worker,
SQLite store, proxied artifacts), in a temporary folder on a free port. The writer is the
sweep's (``MlflowTrialWriter`` with its on-disk write queue), fed in the driver's way:
Tune hooks, one report at a time, with fake trials whose evaluation reports carry what a
real one does (every validation metric, the training losses, throughput, memory, and the
per-step training log since the previous evaluation). Each report is written before the
next is taken (every hook drains the queue), so reports/s is what the driver sustains.

    python benchmarks/bench_mlflow_writer.py [--trials 8] [--reports 20] [--log-steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SERVER = REPO / "scripts" / "mlflow_server.sh"


class FakeTrial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.status, self.last_result = trial_id, config, "RUNNING", {}

    def get_error(self):
        return None


def evaluation(step: int, log_steps: int, every: int, config_json: str | None = None) -> dict:
    from trainables import report_protocol as rp
    from trainables import tracking_schema as schema

    losses = ("train/loss", "train/loss_language", "train/loss_emotion", "train/loss_contrastive")
    metrics = {m: 0.5 for m in schema.VAL_METRICS}
    metrics.update({m: 1.0 for m in losses})
    metrics.update({schema.EPOCH_METRIC: step / 1000, schema.THROUGHPUT_METRIC: 90.0, schema.PEAK_MEMORY_METRIC: 3e9})
    train_log = [[step - every + (i + 1) * every // log_steps, {m: 1.0 for m in losses}] for i in range(log_steps)]
    return rp.evaluation_report(rp.WorkerSession("w", 0, "10.0.0.2", "node", "cuda"), step, metrics,
                                is_best=True, score=0.5, train_log=train_log, config_json=config_json, replay=[])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--reports", type=int, default=20, help="evaluation reports per trial")
    parser.add_argument("--log-steps", type=int, default=10, help="training-log entries per report")
    args = parser.parse_args()

    from trainables.mlflow_writer import MlflowTrialWriter
    from trainables.sweep_tracking import SweepTracking

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "SEVLM_MLFLOW_DIR": f"{tmp}/server", "SEVLM_MLFLOW_PORT": str(port)}
        subprocess.run([str(SERVER), "start"], env=env, check=True, capture_output=True)
        try:
            url = f"http://127.0.0.1:{port}"
            tracking = SweepTracking(url, "bench", "bench", "alpha_search", f"{tmp}/sweep")
            tracking.open_parent_run(metric="val/bleu4", params={}, tags={}, spec={})
            writer = MlflowTrialWriter(tracking, storage_path=tmp, metric="val/bleu4", trial_tags=lambda config: {})
            trials = [FakeTrial(f"t{i:03d}", {"model.alpha": 2.0}) for i in range(args.trials)]
            config = json.dumps({f"key{i}": i for i in range(60)})  # the flattened configuration
            started = time.perf_counter()
            for trial in trials:
                writer.on_trial_start(0, trials, trial)
            per_report = []
            every = 500
            for r in range(args.reports):
                for trial in trials:
                    report = evaluation((r + 1) * every, args.log_steps, every, config if r == 0 else None)
                    t0 = time.perf_counter()
                    writer.on_trial_result(0, trials, trial, report)
                    per_report.append(time.perf_counter() - t0)
            for trial in trials:
                writer.on_trial_complete(0, trials, trial)
            writer.on_experiment_end(trials)
            elapsed = time.perf_counter() - started
            assert len(writer.queue) == 0, "writes left in the queue"
        finally:
            subprocess.run([str(SERVER), "stop"], env=env, capture_output=True)

    n = args.trials * args.reports
    values = len(evaluation(every, args.log_steps, every))  # keys of one report (an upper bound of its metrics)
    per_report.sort()
    rate = n / elapsed
    print(f"{n} evaluation reports of {args.trials} trials ({args.log_steps} training-log steps each, "
          f"~{values} keys per report) in {elapsed:.1f} s")
    print(f"  sustained: {rate:.1f} reports/s = {rate * 60:.0f} evaluations per minute")
    print(f"  per report: median {per_report[len(per_report) // 2] * 1000:.0f} ms, "
          f"p95 {per_report[int(len(per_report) * 0.95)] * 1000:.0f} ms")
    print("  trials that evaluate every k minutes before MLflow is the bottleneck "
          "(at half the sustained rate, headroom for retries and the UI):")
    for k in (1, 5, 15):
        print(f"    k = {k:2d} min: {int(rate * 60 * k / 2)} concurrent trials")


if __name__ == "__main__":
    main()
