"""MLflow for every sweep: the Tune driver is the only process that writes to MLflow.

:class:`MlflowSweepCallback` is a ``ray.tune.Callback``. It receives every result the
training workers report (through Ray Train's ``TuneReportCallback``) in the driver's
event loop, one at a time, and writes it with one ``MlflowClient``. No worker opens the
tracking store, so a local SQLite file never sees two writers (and every write is retried
while the database is busy, e.g. because ``mlflow ui`` is reading it).

Mapping of what happens to what MLflow shows (names in ``trainables.tracking_schema``):

* sweep started -> parent run (found again by ``sevlm.sweep_name`` when resumed);
* trial started -> nested child run named ``trial_run_name(sweep, trial_id)``; a trial
  restarted by Tune (trial failure, ``--resume``) finds that run by its tags and continues
  it: status back to RUNNING, ``sevlm.trial_starts`` + 1;
* a training worker (re)started -> ``sevlm.worker_starts``, ``sevlm.resumed_from_step`` and
  the metric ``worker/start_step``; metrics of steps already in the run are not logged
  again, so the run holds one history without duplicates;
* evaluation -> metrics at the evaluation's step; final report -> test metrics and the
  artifacts (read from the final checkpoint Ray Train persisted to storage);
* trial finished -> FINISHED; stopped by the scheduler (ASHA) or interrupted sweep ->
  KILLED; out of retries -> FAILED.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables import ray_trainable as rt
from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
DEFAULT_DB_FILE = "mlflow.db"
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# Live callbacks of this process by sweep name (Tune restores callbacks from its pickled
# state on --resume; the CLI finds the live instance here to read the sweep's outcome).
_ACTIVE: dict[str, MlflowSweepCallback] = {}


# ----------------------------------------------------------------------- tracking URI


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
    return (db.parent / "mlartifacts" / _safe_name(experiment_name)).as_uri()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def ui_command(uri: str) -> str:
    """The exact shell command that opens the MLflow UI on a sweep's runs."""
    db = sqlite_path(uri)
    if db is not None:
        return (
            f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {_mlflow_executable()} ui --workers 1 "
            f"--backend-store-uri {shlex.quote(uri)}"
        )
    return f"open {uri.rstrip('/')} in a browser (the tracking server is already running)"


def _mlflow_executable() -> str:
    # The sweep usually runs from the project's virtualenv, which is not on PATH.
    beside = Path(sys.executable).parent / "mlflow"
    return shlex.quote(str(beside)) if beside.is_file() else "mlflow"


def ui_url(uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """Where the sweep's runs are in the UI (``mlflow ui`` listens on 127.0.0.1:5000)."""
    base = "http://127.0.0.1:5000" if sqlite_path(uri) is not None else uri.rstrip("/")
    if experiment_id is None:
        return base
    url = f"{base}/#/experiments/{experiment_id}"
    return f"{url}/runs/{run_id}" if run_id else url


# ----------------------------------------------------------------------- client + retry

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
    retried once that has had time to finish.
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)

    def opened():
        client = MlflowClient(tracking_uri=uri)
        with_retry(client.search_experiments, max_results=1, attempts=2)
        return client

    def racing(exc: BaseException) -> bool:
        text = str(exc).lower()
        return db is not None and ("already exists" in text or "alembic" in text)

    with _init_lock(db):
        return with_retry(opened, attempts=attempts, base_delay=base_delay, transient=racing)


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


def find_parent_run(client, experiment_id: str, sweep_name: str):
    runs = with_retry(
        client.search_runs,
        [experiment_id],
        filter_string=schema.search_filter_parent(sweep_name),
        max_results=5,
    )
    return runs[0] if runs else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _final_keys(result: dict[str, Any]) -> list[str]:
    """The final-metric keys of a final report: the list the worker sent with it, or (from a
    result without one, e.g. an older checkpoint) every test/ and best_ key."""
    listed = result.get(rt.KEY_FINAL_KEYS)
    if isinstance(listed, str):
        try:
            return [str(k) for k in json.loads(listed)]
        except ValueError:
            log.warning("unreadable %s in a final report: %r", rt.KEY_FINAL_KEYS, listed[:200])
    return [k for k in result if k.startswith((schema.TEST_PREFIX, schema.BEST_PREFIX))]


# --------------------------------------------------------------------------- callback


@dataclass
class _TrialRun:
    run_id: str
    last_eval_step: int = -1
    last_log_step: int = -1
    final_logged: bool = False
    sessions: set[str] = field(default_factory=set)
    node_ids: list[str] = field(default_factory=list)
    worker_starts: int = 0
    starts: int = 0  # Tune starts of the trial (first start, retries, --resume)
    open: bool = True
    end_status: str | None = None
    end_reason: str | None = None
    best_value: float | None = None
    last_result: dict[str, Any] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)


class MlflowSweepCallback(Callback):
    """Writes one sweep to MLflow from the Tune driver (see the module docstring)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        sweep_name: str,
        settings: dict[str, Any],
        *,
        sweep_kind: str = "alpha_search",
        sweep_path: str | None = None,
        parent_params: dict[str, Any] | None = None,
        parent_tags: dict[str, str] | None = None,
        paper_point: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.sweep_name = sweep_name
        self.settings = dict(settings)
        self.sweep_kind = sweep_kind
        self.sweep_path = sweep_path
        self.parent_params = dict(parent_params or {})
        self.parent_tags = dict(parent_tags or {})
        self.paper_point = dict(paper_point or {})
        self.spec = dict(spec or {})
        self._reset_runtime()

    # ---- pickling: Tune pickles callbacks into its experiment state (for --resume)
    def _reset_runtime(self) -> None:
        self._client = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._runs: dict[str, _TrialRun] = {}
        self._pending: list[tuple[str, list, list]] = []
        self._trial_index: dict[str, int] = {}
        self.outcome: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_client", "experiment_id", "parent_run_id", "_runs", "_pending", "_trial_index", "outcome"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    @property
    def metric(self) -> str:
        return self.settings.get("metric", "val/bleu4")

    @property
    def mode(self) -> str:
        return self.settings.get("mode", "max")

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ---- Tune hooks
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        _ACTIVE[self.sweep_name] = self
        self.start_parent()

    def start_parent(self) -> str:
        """Create the sweep's parent run, or continue it (``--resume``)."""
        client = self.client
        self.experiment_id = get_or_create_experiment(client, self.experiment_name, self.tracking_uri)
        parent = find_parent_run(client, self.experiment_id, self.sweep_name)
        tags = {
            schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.TAG_ROLE: schema.ROLE_PARENT,
            schema.TAG_SWEEP_NAME: self.sweep_name,
            schema.TAG_SWEEP_KIND: self.sweep_kind,
            schema.TAG_METRIC: self.metric,
            schema.TAG_MODE: self.mode,
            **self.parent_tags,
        }
        if self.sweep_path:
            tags[schema.TAG_SWEEP_PATH] = self.sweep_path
        if parent is None:
            run = with_retry(client.create_run, self.experiment_id, tags=tags, run_name=self.sweep_name)
            self.parent_run_id = run.info.run_id
            tags[schema.TAG_RESUME_COUNT] = "0"
        else:
            self.parent_run_id = parent.info.run_id
            resumed = int(parent.data.tags.get(schema.TAG_RESUME_COUNT, "0")) + 1
            tags[schema.TAG_RESUME_COUNT] = str(resumed)
            with_retry(client.update_run, self.parent_run_id, status=schema.STATUS_RUNNING)
        self._log_params(self.parent_run_id, self.parent_params)
        self._write(self.parent_run_id, tags=tags)
        if self.spec:
            self._log_json_artifact(self.parent_run_id, schema.ARTIFACT_SWEEP_SPEC, self.spec)
        return self.parent_run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial in trials:  # creation order (the paper's configuration is created first)
            self._trial_index.setdefault(trial.trial_id, trials.index(trial))
        self._guard(self._trial_started, trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._guard(self._tag, trial, {schema.TAG_ERROR: _error_text(trial)})

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._guard(self._trial_result, trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._guard(self._trial_ended, trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._guard(self._trial_ended, trial, error=True)

    def on_experiment_end(self, trials, **info) -> None:
        self._guard(self._experiment_ended, trials)

    def _guard(self, fn, *args, **kwargs) -> None:
        # A tracking problem must not kill the sweep; what could not be written is kept in
        # self._pending and written later (or saved to a file at the end).
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.exception("MLflow logging failed in %s", getattr(fn, "__name__", fn))

    # ---- trial runs
    def trial_index(self, trial) -> int:
        if trial.trial_id not in self._trial_index:
            suffix = str(trial.trial_id).rsplit("_", 1)[-1]
            self._trial_index[trial.trial_id] = int(suffix) if suffix.isdigit() else len(self._trial_index)
        return self._trial_index[trial.trial_id]

    def _find_or_create_trial_run(self, trial) -> _TrialRun:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        if self.parent_run_id is None:
            self.start_parent()
        name = schema.trial_run_name(self.sweep_name, trial.trial_id)
        found = with_retry(
            client.search_runs,
            [self.experiment_id],
            filter_string=schema.search_filter_trial(self.sweep_name, trial.trial_id),
            max_results=5,
        )
        if found:
            run = found[0]
            state = _TrialRun(run_id=run.info.run_id)
            state.worker_starts = int(run.data.tags.get(schema.TAG_WORKER_STARTS, "0"))
            state.last_eval_step = self._max_step(run.info.run_id, schema.EPOCH_METRIC)
            state.last_log_step = self._max_step(run.info.run_id, schema.TRAIN_STEP_PREFIX + "loss")
            state.final_logged = any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics)
            state.node_ids = [n for n in run.data.tags.get(schema.TAG_NODE_IDS, "").split(",") if n]
            starts = int(run.data.tags.get(schema.TAG_TRIAL_STARTS, "0"))
        else:
            tags = {
                schema.MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION,
                schema.TAG_ROLE: schema.ROLE_TRIAL,
                schema.TAG_SWEEP_NAME: self.sweep_name,
                schema.TAG_SWEEP_KIND: self.sweep_kind,
                schema.TAG_TRIAL_ID: trial.trial_id,
                schema.TAG_TRIAL_NAME: name,
                schema.TAG_TRIAL_INDEX: str(self.trial_index(trial)),
                schema.TAG_METRIC: self.metric,
                schema.TAG_MODE: self.mode,
                schema.TAG_IS_PAPER_CONFIG: str(self._is_paper(trial.config)).lower(),
                schema.TAG_DEVICE: "gpu" if self.settings.get("use_gpu") else "cpu",
            }
            run = with_retry(client.create_run, self.experiment_id, tags=tags, run_name=name)
            state = _TrialRun(run_id=run.info.run_id)
            starts = 0
        self._runs[trial.trial_id] = state
        state.starts = starts
        return state

    def _max_step(self, run_id: str, key: str) -> int:
        history = with_retry(self.client.get_metric_history, run_id, key)
        return max((m.step for m in history), default=-1)

    def _is_paper(self, config: dict[str, Any]) -> bool:
        if not self.paper_point:
            return False
        for k, v in self.paper_point.items():
            c = config.get(k)
            if isinstance(v, float) and _finite(c):
                if not math.isclose(float(c), v, rel_tol=1e-9):
                    return False
            elif c != v:
                return False
        return True

    def _trial_started(self, trial) -> None:
        state = self._find_or_create_trial_run(trial)
        state.open = True
        state.starts += 1
        with_retry(self.client.update_run, state.run_id, status=schema.STATUS_RUNNING)
        settings = rt.TrialSettings.from_dict(self.settings)
        name = schema.trial_run_name(self.sweep_name, trial.trial_id)
        try:
            params = rt.flat_trial_config(settings, trial.config, name)
        except Exception as exc:  # noqa: BLE001 - the trial itself will report the error
            log.warning("could not build the configuration of %s: %s", trial.trial_id, exc)
            params = {k: v for k, v in trial.config.items()}
        self._log_params(state.run_id, params)
        self._write(state.run_id, tags={schema.TAG_TRIAL_STARTS: str(state.starts)})

    def _tag(self, trial, tags: dict[str, str]) -> None:
        state = self._find_or_create_trial_run(trial)
        self._write(state.run_id, tags=tags)

    def _trial_result(self, trial, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        state = self._find_or_create_trial_run(trial)
        state.last_result = dict(result)
        now = int(time.time() * 1000)
        metrics: list = []
        tags: dict[str, str] = {}
        step = int(result.get(rt.KEY_STEP, 0) or 0)

        config_json = result.get(rt.KEY_CONFIG)
        if config_json:
            self._log_params(state.run_id, json.loads(config_json))

        session = result.get(rt.KEY_SESSION)
        if session and session not in state.sessions and rt.KEY_START_STEP in result:
            # a new training-worker session: the first one, or a restart from a checkpoint
            state.sessions.add(session)
            start = int(result.get(rt.KEY_START_STEP) or 0)
            state.worker_starts += 1
            tags[schema.TAG_WORKER_STARTS] = str(state.worker_starts)
            metrics.append(Metric(schema.WORKER_START_METRIC, float(start), now, start))
            if start > 0:
                tags[schema.TAG_RESUMED_FROM_STEP] = str(start)
            if result.get(rt.KEY_NODE_IP):
                tags[schema.TAG_NODE_IP] = str(result[rt.KEY_NODE_IP])
            node_id = result.get(rt.KEY_NODE_ID)
            if node_id:
                tags[schema.TAG_NODE_ID] = str(node_id)
                if node_id not in state.node_ids:
                    state.node_ids.append(str(node_id))
                tags[schema.TAG_NODE_IDS] = ",".join(state.node_ids)

        for record in json.loads(result.get(rt.KEY_REPLAY) or "[]"):
            # reports persisted before an interruption that may never have reached us
            if record.get(rt.KEY_FINAL) != 1.0:
                metrics += self._train_log_metrics(state, record, now)
                metrics += self._eval_metrics(state, record, now)
        metrics += self._train_log_metrics(state, result, now)

        if result.get(rt.KEY_FINAL) == 1.0:
            if not state.final_logged:
                final = {k: float(result[k]) for k in _final_keys(result) if _finite(result.get(k))}
                state.final_metrics = final
                metrics += [Metric(k, v, now, step) for k, v in final.items()]
                self._write(state.run_id, metrics=metrics, tags=tags)
                metrics, tags = [], {}
                final_dir = result.get(rt.CHECKPOINT_PATH_KEY) or result.get(rt.KEY_FINAL_DIR)
                if final_dir:
                    self._log_final_artifacts(state.run_id, final_dir)
                state.final_logged = True
            state.end_reason = (
                schema.END_EARLY_STOPPED if result.get(rt.KEY_STOPPED_EARLY) == 1.0 else schema.END_COMPLETED
            )
            if _finite(result.get(self.metric)):
                state.best_value = float(result[self.metric])
        else:
            if step > state.last_eval_step and result.get(rt.KEY_IS_BEST) == 1.0 and result.get(rt.CHECKPOINT_PATH_KEY):
                tags[schema.TAG_BEST_CHECKPOINT] = str(result[rt.CHECKPOINT_PATH_KEY])
                tags[schema.TAG_BEST_STEP] = str(step)
            metrics += self._eval_metrics(state, result, now)
        self._write(state.run_id, metrics=metrics, tags=tags)

    def _train_log_metrics(self, state: _TrialRun, result: dict[str, Any], now: int) -> list:
        from mlflow.entities import Metric

        metrics = []
        for log_step, values in json.loads(result.get(rt.KEY_TRAIN_LOG) or "[]"):
            if log_step <= state.last_log_step:
                continue
            for key, value in values.items():
                if _finite(value):
                    name = key[len("train/"):] if key.startswith("train/") else key
                    metrics.append(Metric(schema.TRAIN_STEP_PREFIX + name, float(value), now, int(log_step)))
            state.last_log_step = int(log_step)
        return metrics

    def _eval_metrics(self, state: _TrialRun, result: dict[str, Any], now: int) -> list:
        """The metrics of one evaluation report, unless its step is already in the run."""
        from mlflow.entities import Metric

        step = int(result.get(rt.KEY_STEP, 0) or 0)
        if step <= state.last_eval_step:
            return []
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in result.items()
            if _finite(value) and (key.startswith(("train/", schema.VAL_PREFIX)) or key == schema.EPOCH_METRIC)
        ]
        state.last_eval_step = step
        value = result.get(self.metric)
        if _finite(value) and not math.isnan(value):
            if state.best_value is None or (value > state.best_value if self.mode == "max" else value < state.best_value):
                state.best_value = float(value)
        return metrics

    def _trial_ended(self, trial, error: bool) -> None:
        state = self._find_or_create_trial_run(trial)
        tags: dict[str, str] = {}
        if error:
            status, reason = schema.STATUS_FAILED, schema.END_FAILED
            tags[schema.TAG_ERROR] = _error_text(trial)
        elif state.final_logged:
            status, reason = schema.STATUS_FINISHED, state.end_reason or schema.END_COMPLETED
        else:
            status, reason = schema.STATUS_KILLED, schema.END_PRUNED
        tags[schema.TAG_END_REASON] = reason
        self._write(state.run_id, tags=tags)
        self._flush()
        with_retry(self.client.set_terminated, state.run_id, status=status)
        state.open = False
        state.end_status, state.end_reason = status, reason

    def _experiment_ended(self, trials) -> None:
        interrupted = []
        for trial in trials:
            state = self._runs.get(trial.trial_id)
            if state is not None and state.open:
                self._write(state.run_id, tags={schema.TAG_END_REASON: schema.END_INTERRUPTED})
                with_retry(self.client.set_terminated, state.run_id, status=schema.STATUS_KILLED)
                state.open = False
                state.end_status, state.end_reason = schema.STATUS_KILLED, schema.END_INTERRUPTED
                interrupted.append(trial.trial_id)
        # Trials never started in this session (e.g. finished before a --resume).
        statuses = {}
        for trial in trials:
            state = self._runs.get(trial.trial_id)
            if state is not None and state.end_status:
                statuses[trial.trial_id] = state.end_status
            elif trial.status == "TERMINATED":
                statuses[trial.trial_id] = schema.STATUS_FINISHED
            elif trial.status == "ERROR":
                statuses[trial.trial_id] = schema.STATUS_FAILED
            else:
                statuses[trial.trial_id] = schema.STATUS_KILLED
        pending_trials = [t.trial_id for t in trials if t.status in ("PENDING", "PAUSED")]
        counts = {
            "total": len(trials),
            "finished": sum(s == schema.STATUS_FINISHED for s in statuses.values()),
            "failed": sum(s == schema.STATUS_FAILED for s in statuses.values()),
            "killed": sum(s == schema.STATUS_KILLED for s in statuses.values()),
        }
        was_interrupted = bool(interrupted) or bool(pending_trials)
        best = self._best(trials)
        self.outcome = {
            "interrupted": was_interrupted,
            "interrupted_trials": interrupted,
            "counts": counts,
            "best": best,
            "parent_run_id": self.parent_run_id,
            "experiment_id": self.experiment_id,
        }
        if self.parent_run_id is None:
            return
        tags = {
            schema.TAG_TRIALS_TOTAL: str(counts["total"]),
            schema.TAG_TRIALS_FINISHED: str(counts["finished"]),
            schema.TAG_TRIALS_FAILED: str(counts["failed"]),
            schema.TAG_TRIALS_KILLED: str(counts["killed"]),
        }
        from mlflow.entities import Metric

        metrics = []
        if best:
            tags[schema.TAG_BEST_TRIAL_ID] = best["trial_id"]
            if best.get("run_id"):
                tags[schema.TAG_BEST_RUN_ID] = best["run_id"]
            now = int(time.time() * 1000)
            for k, v in best["metrics"].items():
                if _finite(v):
                    metrics.append(Metric(schema.PARENT_BEST_METRIC_PREFIX + k, float(v), now, 0))
        self._write(self.parent_run_id, metrics=metrics, tags=tags)
        self._log_results_table(trials, statuses)
        if best:
            self._log_json_artifact(self.parent_run_id, schema.ARTIFACT_SWEEP_BEST, best)
        self._flush(final=True)
        if was_interrupted:
            status = schema.STATUS_KILLED
        elif counts["finished"] == 0 and counts["failed"] > 0:
            status = schema.STATUS_FAILED
        else:
            status = schema.STATUS_FINISHED
        with_retry(self.client.set_terminated, self.parent_run_id, status=status)

    # ---- summaries
    def _trial_value(self, trial) -> float | None:
        state = self._runs.get(trial.trial_id)
        if state is not None and state.best_value is not None:
            return state.best_value
        value = (trial.last_result or {}).get(self.metric)
        return float(value) if _finite(value) and not math.isnan(value) else None

    def _best(self, trials) -> dict[str, Any] | None:
        best = None
        for trial in trials:
            value = self._trial_value(trial)
            if value is None:
                continue
            if best is None or (value > best[0] if self.mode == "max" else value < best[0]):
                best = (value, trial)
        if best is None:
            return None
        value, trial = best
        state = self._runs.get(trial.trial_id)
        last = dict(trial.last_result or {})
        final = dict(state.final_metrics) if state and state.final_metrics else {
            k: last[k] for k in _final_keys(last) if _finite(last.get(k))
        }
        metrics = {self.metric: value, **final}
        if state is None:
            found = with_retry(
                self.client.search_runs,
                [self.experiment_id],
                filter_string=schema.search_filter_trial(self.sweep_name, trial.trial_id),
                max_results=1,
            )
            run_id = found[0].info.run_id if found else None
        else:
            run_id = state.run_id
        return {
            "trial_id": trial.trial_id,
            "run_id": run_id,
            "run_name": schema.trial_run_name(self.sweep_name, trial.trial_id),
            "config": {k: v for k, v in trial.config.items()},
            "metrics": metrics,
        }

    def _log_results_table(self, trials, statuses: dict[str, str]) -> None:
        keys = sorted({k for t in trials for k in t.config})
        run_ids = {tid: st.run_id for tid, st in self._runs.items()}
        if any(t.trial_id not in run_ids for t in trials):  # finished before a --resume
            for run in with_retry(self.client.search_runs, [self.experiment_id],
                                  filter_string=schema.search_filter_trials(self.sweep_name),
                                  max_results=10000):
                run_ids.setdefault(run.data.tags.get(schema.TAG_TRIAL_ID), run.info.run_id)
        rows = []
        for trial in trials:
            last = trial.last_result or {}
            row = {"trial_id": trial.trial_id, "status": statuses.get(trial.trial_id, ""),
                   "run_id": run_ids.get(trial.trial_id, "")}
            row.update({k: trial.config.get(k) for k in keys})
            row[self.metric] = self._trial_value(trial)
            for k, v in sorted(last.items()):
                if _finite(v) and k.startswith(schema.TEST_PREFIX):
                    row[k] = v
            rows.append(row)
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(schema.ARTIFACT_SWEEP_RESULTS).name
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            with_retry(self.client.log_artifact, self.parent_run_id, str(path),
                       str(Path(schema.ARTIFACT_SWEEP_RESULTS).parent))

    # ---- low-level writes
    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        run = with_retry(self.client.get_run, run_id)
        existing = run.data.params
        new = []
        for key, value in sorted(params.items()):
            text = _str(value)
            if key in existing:
                if existing[key] != text:
                    log.debug("param %s of run %s stays %r (new value %r)", key, run_id, existing[key], text)
                continue
            new.append(Param(key, text[:6000]))
        for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
            self._write(run_id, params=new[i:i + MAX_PARAMS_PER_BATCH])

    def _write(self, run_id: str, metrics=(), params=(), tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import RunTag

        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        if not (metrics or params or tag_list):
            return
        self._flush()
        for i in range(0, max(len(metrics), 1), MAX_METRICS_PER_BATCH):
            chunk = metrics[i:i + MAX_METRICS_PER_BATCH]
            batch = (run_id, chunk, list(params) if i == 0 else [], tag_list if i == 0 else [])
            try:
                with_retry(self.client.log_batch, batch[0], metrics=batch[1], params=batch[2], tags=batch[3])
            except Exception:  # noqa: BLE001
                log.exception("MLflow write failed; it is kept and retried later")
                self._pending.append(batch)

    def _flush(self, final: bool = False) -> None:
        pending, self._pending = self._pending, []
        for run_id, metrics, params, tags in pending:
            try:
                with_retry(self.client.log_batch, run_id, metrics=metrics, params=params, tags=tags,
                           attempts=12 if final else 8)
            except Exception:  # noqa: BLE001
                self._pending.append((run_id, metrics, params, tags))
        if final and self._pending:
            self._dump_pending()

    def _dump_pending(self) -> None:
        target = Path(self.sweep_path or ".") / "mlflow_unwritten.jsonl"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a") as f:
                for run_id, metrics, params, tags in self._pending:
                    f.write(json.dumps({
                        "run_id": run_id,
                        "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                        "params": [[p.key, p.value] for p in params],
                        "tags": [[t.key, t.value] for t in tags],
                    }) + "\n")
            log.error("%d MLflow writes failed; saved to %s", len(self._pending), target)
        except OSError:
            log.exception("could not save unwritten MLflow data")

    def _log_json_artifact(self, run_id: str, artifact: str, data: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact).name
            path.write_text(json.dumps(data, indent=2, default=str))
            parent = str(Path(artifact).parent)
            with_retry(self.client.log_artifact, run_id, str(path), None if parent == "." else parent)

    def _log_final_artifacts(self, run_id: str, final_dir: str) -> None:
        local = self._local_dir(final_dir)
        if local is None:
            log.warning("final artifacts of run %s not reachable at %s", run_id, final_dir)
            return
        try:
            for path in sorted(Path(local).iterdir()):
                if path.name in (rt.FINAL_MARKER, rt.REPORTS_FILE):
                    continue
                if path.is_dir():
                    with_retry(self.client.log_artifacts, run_id, str(path), path.name)
                else:
                    with_retry(self.client.log_artifact, run_id, str(path))
        finally:
            if local != final_dir:
                import shutil

                shutil.rmtree(local, ignore_errors=True)

    def _local_dir(self, path: str) -> str | None:
        if os.path.isdir(path):
            return path
        try:  # remote storage (bucket): download through Ray Train's Checkpoint
            import pyarrow.fs
            from ray.train import Checkpoint

            fs, _ = pyarrow.fs.FileSystem.from_uri(self.settings["storage_path"])
            tmp = tempfile.mkdtemp(prefix="sevlm_final_")
            Checkpoint(path=path, filesystem=fs).to_directory(tmp)
            return tmp
        except Exception:  # noqa: BLE001
            log.exception("could not fetch %s", path)
            return None


def _error_text(trial) -> str:
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001
        err = None
    text = str(err) if err else (getattr(trial, "error_file", None) or "")
    return text.strip().splitlines()[-1][:500] if text.strip() else "error"


def active_callback(sweep_name: str) -> MlflowSweepCallback | None:
    return _ACTIVE.get(sweep_name)
