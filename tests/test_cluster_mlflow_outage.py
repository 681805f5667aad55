"""Nothing lost when MLflow goes away: the real tracking server (started and stopped by
scripts/mlflow_server.sh, as on a cluster's head) is stopped while a sweep runs, for
longer than a trial's evaluation, and started again. The sweep goes on and, at its end,
every metric of every trial is in MLflow, one run per trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_sweep import SCRIPT, _free_port, _wait_for, assert_complete_history, fast_flags, EVAL_EVERY
from trainables import tracking_schema as schema

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "scripts" / "mlflow_server.sh"


def _server(action: str, env: dict[str, str]) -> None:
    done = subprocess.run([str(SERVER), action], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sweep_outlives_its_tracking_server_and_loses_nothing(tmp_path):
    from mlflow import MlflowClient

    from trainables.mlflow_store import sweep_runs

    port = _free_port()
    server_env = {**os.environ, "SEVLM_MLFLOW_DIR": str(tmp_path / "server"), "SEVLM_MLFLOW_PORT": str(port)}
    server_env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    name = "outage"
    _server("start", server_env)
    log_path = tmp_path / "sweep.log"
    env = {**server_env, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(SCRIPT), "--num-trials", "2", "--concurrency", "1", "--name", name,
            "--tracking-uri", url, "--progress-interval", "60"] + fast_flags(tmp_path / "data", evals=4)
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    queue = tmp_path / "ray_results" / name / "mlflow_queue.jsonl"
    try:
        def first_evaluation():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                trials = sweep_runs(MlflowClient(tracking_uri=url), name).trials
            except Exception:  # noqa: BLE001
                return None
            return any("epoch" in t.data.metrics for t in trials)

        _wait_for(first_evaluation, 300, "the first evaluation in MLflow")
        _server("stop", server_env)
        # away for longer than an evaluation: writes pile up in the driver's queue on disk
        _wait_for(lambda: queue.exists() and queue.read_text().count('"op": "log_batch"') >= 3, 240,
                  "evaluations queued while the server is away")
        time.sleep(5)
        _server("start", server_env)
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run([str(SERVER), "stop"], env=server_env, capture_output=True, timeout=120)
    sweep_log = log_path.read_text()
    assert rc == 0, sweep_log[-3000:]

    _server("start", server_env)
    try:
        client = MlflowClient(tracking_uri=url)
        runs = sweep_runs(client, name)
        assert runs.parent is not None and runs.parent.info.status == "FINISHED"
        trial_ids = [t.data.tags[schema.TAG_TRIAL_ID] for t in runs.trials]
        assert len(trial_ids) == 2 and len(set(trial_ids)) == 2, "a duplicate run"
        for run in runs.trials:
            assert run.info.status == "FINISHED"
            assert assert_complete_history(client, run) == [EVAL_EVERY * (i + 1) for i in range(4)]
        assert not queue.exists() or queue.read_text() == "", "writes left in the queue"
    finally:
        _server("stop", server_env)
