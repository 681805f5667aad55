"""A sweep driver that goes away leaves nothing RUNNING forever (real Ray, real MLflow on a
SQLite file, the shrunken tiny configuration of test_sweep.py):

* SIGTERM (and SIGHUP, the same handler) ends the sweep as the first Ctrl-C does: the
  interrupted trial's run and the parent run are KILLED, Tune's state is saved, exit 130;
* after a SIGKILL, ``--resume`` stops the Ray the dead driver left running, does not
  re-run the finished trial and leaves no run RUNNING (the continued trial finishes;
  runs nothing continues are KILLED).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import leftovers
from test_sweep import SCRIPT, _wait_for, fast_flags, sweep_runs
from trainables import tracking_schema as schema


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("signal_data")


@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


def _start(tmp_path: Path, data_dir: Path, name: str, evals: int) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, str(SCRIPT), "--num-trials", "2", "--concurrency", "1", "--name", name,
            "--progress-interval", "60"] + fast_flags(data_dir, evals=evals)
    log_path = tmp_path / f"{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path


def _trials_when(proc, log_path: Path, db: Path, name: str, want):
    def check():
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early: {log_path.read_text()[-3000:]}")
        if not db.exists():
            return None
        try:
            _, _, trials = sweep_runs(db, name)
        except Exception:  # noqa: BLE001 - the experiment is being created
            return None
        return want(trials)

    return check


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_ends_the_sweep_like_ctrl_c(tmp_path, data_dir):
    from ray import tune

    name = "terminated"
    db = tmp_path / "mlflow.db"
    proc, log_path = _start(tmp_path, data_dir, name, evals=4)
    try:
        def checkpointed(trials):
            running = [t for t in trials if t.info.status == "RUNNING" and "epoch" in t.data.metrics]
            return running or None

        running = _wait_for(_trials_when(proc, log_path, db, name, checkpointed), 300,
                            "a trial's first checkpoint")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert rc == 130, log[-3000:]
    assert f"--resume --name {name}" in log
    _, parents, trials = sweep_runs(db, name)
    assert parents[0].info.status == "KILLED"
    assert not [t for t in trials if t.info.status == "RUNNING"]
    interrupted = {t.info.run_id: t for t in trials}[running[0].info.run_id]
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags[schema.TAG_END_REASON] == schema.END_INTERRUPTED
    assert tune.Tuner.can_restore(str(tmp_path / "ray_results" / name))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_after_sigkill_leaves_nothing_running_and_reruns_nothing_finished(tmp_path, data_dir):
    name = "killed"
    db = tmp_path / "mlflow.db"
    proc, log_path = _start(tmp_path, data_dir, name, evals=3)
    try:
        def one_finished_one_checkpointed(trials):
            finished = [t for t in trials if t.info.status == "FINISHED"]
            running = [t for t in trials if t.info.status == "RUNNING" and "epoch" in t.data.metrics]
            return (finished, running) if finished and running else None

        finished, running = _wait_for(_trials_when(proc, log_path, db, name, one_finished_one_checkpointed),
                                      450, "one finished and one checkpointed trial")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, _, trials = sweep_runs(db, name)
    assert {t.info.run_id: t for t in trials}[running[0].info.run_id].info.status == "RUNNING"  # orphaned
    # the Ray the dead driver started (its session's processes), still running
    record = json.loads((tmp_path / "ray_results" / name / leftovers.DRIVER_FILE).read_text())
    time.sleep(3)
    left = leftovers.session_processes(record["session"])
    print(f"{len(left)} processes of the killed driver's Ray session were still running")

    from sweeps.alpha_search import main

    assert main(["--resume", "--name", name, "--progress-interval", "60"]) == 0
    assert not [pid for pid in left if leftovers._alive(pid)], "the dead driver's Ray is still running"

    client, parents, trials = sweep_runs(db, name)
    assert parents[0].info.status == "FINISHED"
    assert not [t for t in trials if t.info.status == "RUNNING"], "a run stayed RUNNING"
    by_id = {t.info.run_id: t for t in trials}
    done = by_id[finished[0].info.run_id]
    assert done.data.tags[schema.TAG_TRIAL_STARTS] == "1"  # not re-run
    assert done.info.end_time == finished[0].info.end_time
    # one run per trial: the finished trial was not run again under a new trial id
    trial_ids = [t.data.tags[schema.TAG_TRIAL_ID] for t in trials]
    assert len(trial_ids) == len(set(trial_ids))
    assert len([t for t in trials if t.info.status == "FINISHED"]) == 2, \
        [(t.data.tags[schema.TAG_TRIAL_ID], t.info.status) for t in trials]
