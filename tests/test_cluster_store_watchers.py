"""Watching a sweep must not break it: processes started together on a new mlflow.db.

MLflow creates and migrates a new SQLite store in whichever process opens it first,
without a lock ("duplicate column name: step", "table ... already exists"). The project's
own entry points (the sweep, ``make mlflow-ui`` and the UI command a sweep prints, which
run ``trainables.mlflow_ui``, ``analysis/``) take turns through one file lock; a store
whose creation a process outside the lock abandoned is made again while it holds no run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEP_OPEN = ("from trainables.sweep_tracking import SweepTracking; "
              "SweepTracking({uri!r}, 'e', 's', 'alpha_search', '/nonexistent/s').probe(); print('opened')")


def _python(code: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_ui_entry_point_and_a_sweep_started_together_on_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = _free_port()
    log = (tmp_path / "ui.log").open("w")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # what `make mlflow-ui` and the printed UI command run, and a sweep's first open, at once
    ui = subprocess.Popen([sys.executable, "-m", "trainables.mlflow_ui", "--backend-store-uri", uri,
                           "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sweeps = [_python(SWEEP_OPEN.format(uri=uri)) for _ in range(2)]
    try:
        for proc in sweeps:
            out = proc.communicate(timeout=240)[0]
            assert proc.returncode == 0 and "opened" in out, out[-2000:]
        deadline = time.monotonic() + 120
        while True:
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the UI never answered"
                time.sleep(0.5)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
                ui.wait()
        log.close()


def test_a_store_whose_creation_was_abandoned_is_made_again_only_when_it_holds_no_run(tmp_path):
    # What a process outside the lock can leave when it dies (or is outrun) mid-migration:
    # tables, alembic's temporary tables, no run. A store with runs is never touched.
    import sqlite3

    from trainables.mlflow_store import _reset_unfinished_store, open_tracking_store

    db = tmp_path / "m.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid TEXT)")
        con.execute("CREATE TABLE _alembic_tmp_latest_metrics (x INT)")
    assert _reset_unfinished_store(db) is True
    client = open_tracking_store(f"sqlite:///{db}")
    assert [e.name for e in client.search_experiments()] == ["Default"]

    client.create_run("0")
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_latest_metrics (x INT)")
    assert _reset_unfinished_store(db) is False
    assert len(client.search_runs(["0"])) == 1
