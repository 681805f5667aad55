"""The MLflow tracking store of the sweeps, without Ray: where it is, how to open it, how to
retry its calls, and how to read a sweep's runs back.

Used by the sweep driver (``trainables.sweep_tracking``: its writes go through the write
queue of ``trainables.mlflow_queue``), the sweep tests, the benchmarks and ``analysis/``.
Names of tags, params, metrics and artifacts are in ``trainables.tracking_schema``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
DEFAULT_DB_FILE = "mlflow.db"
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value

# ------------------------------------------------------------------------ where it is


def resolve_tracking_uri(flag: str | None = None, cwd: str | os.PathLike | None = None) -> str:
    """``--tracking-uri`` flag, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    A relative SQLite path is made absolute against ``cwd`` (the current directory), so
    that trials, the UI command and a later ``--resume`` all see the same file.
    """
    uri = flag or os.environ.get(ENV_TRACKING_URI) or ""
    base = Path(cwd or os.getcwd())
    if not uri:
        return f"sqlite:///{(base / DEFAULT_DB_FILE).resolve()}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            return f"sqlite:///{(base / path).resolve()}"
        return uri
    if "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is neither sqlite:///<file> nor http(s)://<server>; "
            "the file store (./mlruns) is refused by MLflow 3"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def default_artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifacts of a local SQLite store go next to the database file."""
    db = sqlite_path(uri)
    if db is None:
        return None  # a tracking server decides (proxied artifacts)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment_name)
    return (db.parent / "mlartifacts" / safe).as_uri()


def ui_command(uri: str) -> str:
    """The exact shell command that opens the MLflow UI on a sweep's runs: ``mlflow ui``
    behind the sweeps' locked opener (``trainables.mlflow_ui``)."""
    if sqlite_path(uri) is not None:
        # The sweep usually runs from the project's virtualenv, which is not on PATH.
        return f"{shlex.quote(sys.executable)} -m trainables.mlflow_ui --backend-store-uri {shlex.quote(uri)}"
    return f"open {uri.rstrip('/')} in a browser (the tracking server is already running)"


def ui_url(uri: str, experiment_id: str | None = None, run_id: str | None = None,
           base: str | None = None) -> str:
    """Where the sweep's runs are in the UI (``mlflow ui`` listens on 127.0.0.1:5000, or
    ``base``), in its "Model training" view: MLflow 3 opens an experiment in its GenAI view
    (traces) unless the link asks for the other one."""
    if base is None:
        base = "http://127.0.0.1:5000" if sqlite_path(uri) is not None else uri.rstrip("/")
    if experiment_id is None:
        return base
    url = f"{base}/#/experiments/{experiment_id}"
    return (f"{url}/runs/{run_id}" if run_id else url) + "?" + schema.UI_WORKFLOW_QUERY


# ------------------------------------------------------------------ opening, retrying

_TRANSIENT = ("locked", "busy", "timed out", "timeout", "temporarily", "connection", "503", "502")


def _is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(t in text for t in _TRANSIENT)


def with_retry(fn, *args, attempts: int = 8, base_delay: float = 0.25, transient=None, **kwargs):
    """Call ``fn``; retry transient failures (SQLite busy, server unreachable; or what the
    ``transient`` predicate accepts) with backoff."""
    transient = transient or _is_transient
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if attempt == attempts - 1 or not transient(exc):
                raise
            delay = base_delay * 2**attempt
            log.warning("MLflow call %s failed (%s); retrying in %.1fs", getattr(fn, "__name__", fn), exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_tracking_store(uri: str, attempts: int = 6, base_delay: float = 0.5):
    """An MlflowClient on ``uri`` whose store is known to be usable (a new SQLite file gets
    its tables here).

    MLflow creates and migrates the tables of a new SQLite database in whichever process
    opens it first, without a lock: two sweeps started together, or a sweep and an
    ``mlflow ui``, make all but one fail with "table ... already exists". Our processes
    take turns through a file lock; a failure caused by anyone else's initialisation is
    retried once that has had time to finish. A process outside the lock that died in the
    middle of it leaves a half-migrated file that no retry can open: when that file holds
    no run yet, its tables are dropped and made again.
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    failures = []

    def opened():
        try:
            client = MlflowClient(tracking_uri=uri)
            with_retry(client.search_experiments, max_results=1, attempts=2)
            return client
        except Exception as exc:
            failures.append(exc)
            if len(failures) >= 4 and racing(exc):  # for seconds: nobody is finishing it
                _reset_unfinished_store(db)
            raise

    def racing(exc: BaseException) -> bool:
        text = str(exc).lower()
        # another process (not behind our lock) created or migrated the tables meanwhile
        return db is not None and any(t in text for t in ("already exists", "alembic", "duplicate column"))

    with _init_lock(db):
        return with_retry(opened, attempts=attempts, base_delay=base_delay, transient=racing)


def _reset_unfinished_store(db: Path) -> bool:
    """Drop every table of a SQLite store whose creation was abandoned, if it holds no run
    (nothing is lost: MLflow makes the tables again). True if it did."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        if "runs" in tables and con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
            return False
        con.execute("PRAGMA foreign_keys = OFF")
        for table in tables:
            con.execute(f'DROP TABLE IF EXISTS "{table}"')
        con.commit()
    log.warning("dropped the tables of %s: an MLflow process died while creating them", db)
    return True


@contextlib.contextmanager
def http_limits(timeout_s: int, max_retries: int):
    """MLflow's HTTP client (read from the environment at each request) gives up after
    ``max_retries`` retries of ``timeout_s`` each, instead of urllib3's ~4 minutes."""
    limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries)}
    saved = {k: os.environ.get(k) for k in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def error_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error, for a one-line log message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


@contextlib.contextmanager
def _init_lock(db: Path | None):
    if db is None:
        yield
        return
    import fcntl
    import hashlib

    # In the temp dir, not next to the database: nothing to clean up in the project.
    key = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"sevlm-mlflow-init-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_or_create_experiment(client, name: str, uri: str) -> str:
    exp = with_retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            with_retry(client.restore_experiment, exp.experiment_id)
        return exp.experiment_id
    try:
        return with_retry(
            client.create_experiment,
            name,
            artifact_location=default_artifact_location(uri, name),
            tags={schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION},
        )
    except Exception:  # noqa: BLE001 - created concurrently
        exp = with_retry(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return exp.experiment_id


# -------------------------------------------------------------------------- reading


@dataclass
class SweepRuns:
    """The MLflow runs of one sweep: its parent run (None before it exists) and its trials."""

    experiment_id: str | None
    parent: Any = None  # mlflow.entities.Run
    trials: list = field(default_factory=list)

    def by_trial_id(self) -> dict[str, Any]:
        return {run.data.tags.get(schema.TAG_TRIAL_ID): run for run in self.trials}


def sweep_runs(client, sweep_name: str, experiment: str = schema.DEFAULT_EXPERIMENT) -> SweepRuns:
    """Every run of ``sweep_name`` in ``experiment``; ``client`` is an MlflowClient or a URI."""
    if isinstance(client, str):
        client = open_tracking_store(client)
    exp = with_retry(client.get_experiment_by_name, experiment)
    if exp is None:
        return SweepRuns(experiment_id=None)
    runs = with_retry(
        client.search_runs,
        [exp.experiment_id],
        filter_string=schema.search_filter_sweep(sweep_name),
        max_results=50_000,
    )
    parents = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_PARENT]
    trials = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TRIAL]
    return SweepRuns(exp.experiment_id, parents[0] if parents else None, trials)


# -------------------------------------------------------------------------- writing


def timed_metric(key: str, value: float, step: int):
    """A metric stamped now (a queued write keeps its time, so a replay is a duplicate that
    MLflow drops)."""
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), int(step))


def param_text(value: Any) -> str:
    """A param's text; sequences as JSON, so that a tuple (a composed configuration's) and
    the list it becomes in a saved spec or a worker's report read the same."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_LENGTH]

