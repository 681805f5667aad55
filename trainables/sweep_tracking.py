"""The sweep in MLflow as the sweep driver sees it: one :class:`SweepTracking` a sweep owns
the driver's MLflow client and the sweep's write queue (``trainables.mlflow_queue``).

Every write the driver makes goes through that one queue: the parent run (created when the
sweep starts, continued by ``--resume``), the trial runs (``trainables.mlflow_writer``, which
uses this object's client and queue), the end of runs a dead driver left RUNNING, and the
sweep's outcome when it ends. A tracking server that is away costs at most ``END_DRAIN_S``
at the end of a sweep and loses nothing (``--resume`` sends the rest first). Reads that need
an answer (the experiment's id, an existing parent run, the experiment's description, the
sweep's runs) are direct calls.

Tune pickles its callbacks, and with the trial writer this object, into its experiment
state: only the settings are pickled, and unpickling gives the instance this process already
has for the same store and sweep folder (the driver's), so that both share one client and
one queue.
"""

from __future__ import annotations

import csv
import json
import logging
import weakref
from pathlib import Path
from typing import Any

from trainables import mlflow_notes
from trainables import tracking_schema as schema
from trainables.mlflow_queue import END_DRAIN_S, QUEUE_ARTIFACTS, WriteQueue, queue_path, quick_http
from trainables.mlflow_store import (
    error_line,
    get_or_create_experiment,
    http_limits,
    open_tracking_store,
    sweep_runs,
    timed_metric,
    with_retry,
)

log = logging.getLogger(__name__)

PARENT_KEY = "parent"  # the queue's name for the parent run while its creation is queued
REPLAY_S = 120.0  # how long --resume waits for the tracking server with what an earlier driver queued

# (tracking URI, sweep folder) -> this process's SweepTracking of that sweep
_LIVE: weakref.WeakValueDictionary[tuple[str, str], SweepTracking] = weakref.WeakValueDictionary()


class TrackingStoreError(RuntimeError):
    """The tracking store cannot be used; the message says which store and why."""


def _restore(tracking_uri: str, experiment: str, sweep_name: str, sweep_kind: str, sweep_path: str) -> SweepTracking:
    """Unpickling: this process's instance for the same store and sweep, else a new one."""
    live = _LIVE.get((tracking_uri, sweep_path))
    return live if live is not None else SweepTracking(tracking_uri, experiment, sweep_name, sweep_kind, sweep_path)


class SweepTracking:
    """One sweep's MLflow on the driver (see the module docstring). ``client``: an
    MlflowClient on ``tracking_uri`` to use instead of opening one (tests); never pickled.
    ``experiment_id`` and ``parent_run_id`` are known once :meth:`open_parent_run` returned."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, sweep_kind: str, sweep_path: str,
                 *, client=None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_kind = sweep_kind
        self.sweep_path = sweep_path
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client = client
        self._queue: WriteQueue | None = None
        _LIVE[(tracking_uri, sweep_path)] = self

    def __reduce__(self):
        return _restore, (self.tracking_uri, self.experiment, self.sweep_name, self.sweep_kind, self.sweep_path)

    @property
    def client(self):
        """Opened on first use, once. A SQLite store is opened under its lock (a new file
        gets its tables); a server's client touches nothing until it is used."""
        if self._client is None:
            if self.tracking_uri.startswith("sqlite:"):
                self._client = open_tracking_store(self.tracking_uri)
            else:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def queue(self) -> WriteQueue:
        """The sweep's write queue, with what earlier drivers left in its journal."""
        if self._queue is None:
            self._queue = WriteQueue(self.client, queue_path(self.sweep_path, self.sweep_name))
        return self._queue

    # ---- before the sweep starts
    def probe(self) -> None:
        """Open the store once, quickly (a dead server fails in seconds, not minutes; a new
        SQLite file gets its tables). Raises TrackingStoreError saying why not."""
        try:
            with http_limits(timeout_s=10, max_retries=1):
                with_retry(self.client.search_experiments, max_results=1, attempts=2)
        except Exception as exc:  # noqa: BLE001
            raise TrackingStoreError(f"cannot use the MLflow tracking store {self.tracking_uri}: "
                                     f"{error_line(exc, 300)}") from None

    def replay_queued(self, budget_s: float = REPLAY_S) -> int:
        """Write what an earlier driver of the sweep left queued (``--resume``, before Tune
        starts); returns how many writes still wait (the queue keeps trying)."""
        path = queue_path(self.sweep_path, self.sweep_name)
        if not path.exists() or not path.stat().st_size:
            return 0
        self.queue.drain(budget_s)
        return len(self.queue)

    def open_parent_run(self, *, metric: str, params: dict[str, Any], tags: dict[str, str], spec: dict[str, Any],
                        total_trials: int | None = None, drain_s: float = END_DRAIN_S) -> tuple[str, str]:
        """Create the sweep's parent run, or continue it (``--resume``); returns
        ``(experiment_id, parent_run_id)``. The experiment's description says how its runs
        are organised; the parent's, until the sweep ends, that it runs. The writes are
        queued and sent at once (for up to ``drain_s``); a parent run whose creation the
        store did not take by then raises TrackingStoreError: the sweep cannot start."""
        client = self.client
        experiment_id = get_or_create_experiment(client, self.experiment, self.tracking_uri)
        describe_experiment(client, experiment_id)
        search = schema.search_filter_parent(self.sweep_name)
        found = with_retry(client.search_runs, [experiment_id], filter_string=search, max_results=5)
        tags = {
            schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.TAG_ROLE: schema.ROLE_PARENT,
            schema.TAG_SWEEP_NAME: self.sweep_name,
            schema.TAG_SWEEP_KIND: self.sweep_kind,
            schema.TAG_SWEEP_PATH: self.sweep_path,
            schema.TAG_METRIC: metric,
            schema.MLFLOW_NOTE: mlflow_notes.parent_note_running(self.sweep_name, self.sweep_kind, metric,
                                                                 total_trials),
            **tags,
        }
        queue = self.queue
        if found:
            run = found[0].info.run_id
            tags[schema.TAG_RESUME_COUNT] = str(int(found[0].data.tags.get(schema.TAG_RESUME_COUNT, "0")) + 1)
            logged = set(found[0].data.params)
            queue.set_status(run, schema.STATUS_RUNNING)
        else:
            # found again by its tags if the store made it but its answer was lost: never two
            run = queue.create_run(PARENT_KEY, experiment_id, dict(tags), self.sweep_name, search)
            tags[schema.TAG_RESUME_COUNT] = "0"
            logged = set()
        queue.log_new_params(run, params, logged)
        queue.log_batch(run, tags=tags)
        self._log_file(run, schema.ARTIFACT_SWEEP_SPEC, json.dumps(spec, indent=2, default=str))
        if not queue.drain(drain_s):
            log.warning("the MLflow server did not take %d writes of the parent run yet; they are kept in %s",
                        len(queue), queue.path)
        run_id = queue.run_id(run)
        if run_id is None:
            raise TrackingStoreError(f"the MLflow tracking store {self.tracking_uri} did not create the parent run "
                                     f"of sweep {self.sweep_name} within {drain_s:.0f} s; the sweep cannot start "
                                     f"(its writes wait in {queue.path})")
        self.experiment_id, self.parent_run_id = experiment_id, run_id
        return experiment_id, run_id

    # ---- after tuner.fit() returned
    def trial_run_ids(self) -> dict[str, str]:
        """Trial id -> MLflow run id of the sweep's trial runs; empty (and a warning) when the
        tracking server does not answer at once."""
        try:
            runs = self._sweep_runs_now()
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow did not answer (%s): the results table lists no run ids", error_line(exc))
            return {}
        return {tid: run.info.run_id for tid, run in runs.by_trial_id().items()}

    def end_orphaned_trial_runs(self, drain_s: float = END_DRAIN_S) -> list[str]:
        """End the sweep's trial runs that are still RUNNING once ``tuner.fit()`` returned.

        The trial writer ends every trial Tune ran (even an interrupted sweep's), so what is
        left was started by an earlier driver that died without ending it (SIGKILL, a lost
        machine): its trial was created after Tune's last saved state, and no ``--resume``
        continues it. They become KILLED (end reason "interrupted"), through the write queue;
        returns their run ids. A tracking server that does not answer at once leaves them for
        the next ``--resume``."""
        try:
            trials = self._sweep_runs_now().trials
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow did not answer (%s): runs an earlier driver left RUNNING are ended by "
                        "the next --resume", error_line(exc))
            return []
        orphans = [run.info.run_id for run in trials if run.info.status == schema.STATUS_RUNNING]
        if orphans:
            for run_id in orphans:
                self.queue.log_batch(run_id, tags={schema.TAG_END_REASON: schema.END_INTERRUPTED})
                self.queue.set_status(run_id, schema.STATUS_KILLED, terminated=True)
            self.queue.drain(drain_s)
        return orphans

    def close_parent_run(
        self,
        *,
        status: str,
        counts: dict[str, int],
        rows: list[dict[str, Any]],
        best: dict[str, Any] | None,
        drain_s: float = END_DRAIN_S,
        metric: str | None = None,
        columns: dict[str, str] | None = None,
    ) -> int:
        """Record the sweep's outcome in its parent run (counts, one row per trial, the best
        trial; with ``metric`` also the results table as the run's description, ``columns``:
        config key -> header) and end it with ``status``, through the sweep's write queue.
        Returns how many writes still wait for the tracking server (sent by ``--resume``)."""
        run, queue, sweep_name = self.parent_run_id, self.queue, self.sweep_name
        if run is None:
            raise RuntimeError("close_parent_run before open_parent_run")
        tags = {
            schema.TAG_TRIALS_TOTAL: str(counts["total"]),
            schema.TAG_TRIALS_FINISHED: str(counts["finished"]),
            schema.TAG_TRIALS_FAILED: str(counts["failed"]),
            schema.TAG_TRIALS_KILLED: str(counts["killed"]),
        }
        if metric is not None:
            tags[schema.MLFLOW_NOTE] = mlflow_notes.parent_note(
                sweep_name=sweep_name, sweep_kind=self.sweep_kind, metric=metric, status=status, counts=counts,
                rows=rows, columns=columns, best=best,
                # the sweep's folder is <storage>/<sweep name> (sweeps.spec)
                storage=(self.sweep_path[:-len(sweep_name) - 1] if self.sweep_path.endswith("/" + sweep_name)
                         else None))
        metrics = []
        if best:
            tags[schema.TAG_BEST_TRIAL_ID] = best["trial_id"]
            if best.get("run_id"):
                tags[schema.TAG_BEST_RUN_ID] = best["run_id"]
            metrics = [timed_metric(schema.PARENT_BEST_METRIC_PREFIX + k, v, 0) for k, v in best["metrics"].items()]
            self._log_file(run, schema.ARTIFACT_SWEEP_BEST, json.dumps(best, indent=2, default=str))
        queue.log_batch(run, metrics=metrics, tags=tags)
        header: list[str] = []
        for row in rows:
            header += [c for c in row if c not in header]
        path = self._artifact_file(schema.ARTIFACT_SWEEP_RESULTS)
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        queue.log_artifacts(run, str(path), _artifact_dir(schema.ARTIFACT_SWEEP_RESULTS))
        queue.set_status(run, status, terminated=True)
        if not queue.drain(drain_s):
            log.error("the MLflow server did not take %d writes; they are kept in %s and written by --resume",
                      len(queue), queue.path)
        return len(queue)

    # ---- helpers
    def _sweep_runs_now(self):
        """The sweep's runs if the store answers at once: one quick try (and one retry)
        before reading, so that a server that is away costs seconds, not minutes."""
        with quick_http():
            with_retry(self.client.search_experiments, max_results=1, attempts=2)
            return sweep_runs(self.client, self.sweep_name, self.experiment)

    def _artifact_file(self, artifact: str) -> Path:
        # The files of queued artifact writes stay until they are sent (maybe by --resume).
        folder = self.queue.path.parent / QUEUE_ARTIFACTS / "parent"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / Path(artifact).name

    def _log_file(self, run: str, artifact: str, text: str) -> None:
        """Queue ``text`` as the parent run's file ``artifact``."""
        path = self._artifact_file(artifact)
        path.write_text(text)
        self.queue.log_artifacts(run, str(path), _artifact_dir(artifact))


def describe_experiment(client, experiment_id: str) -> None:
    """The experiment's description in the UI: how the sweeps' runs are organised. Written
    when the experiment has none or has this project's (kept up to date); a description
    someone wrote in the UI stays."""
    experiment = with_retry(client.get_experiment, experiment_id)
    current = (experiment.tags or {}).get(schema.MLFLOW_NOTE)
    text = mlflow_notes.experiment_note()
    if current != text and (not current or current.startswith(mlflow_notes.EXPERIMENT_NOTE_TITLE)):
        with_retry(client.set_experiment_tag, experiment_id, schema.MLFLOW_NOTE, text)


def _artifact_dir(artifact: str) -> str | None:
    parent = str(Path(artifact).parent)
    return None if parent == "." else parent
