"""The sweep in MLflow, written by the Tune driver only.

:class:`MlflowTrialWriter` is a ``ray.tune.Callback``. It receives every result the
training workers report (through Ray Train's ``TuneReportCallback``) in the driver's event
loop, one at a time, and turns it into MLflow writes, which go through the sweep's write
queue kept on disk (``trainables.mlflow_queue``), the one the driver's
:class:`~trainables.sweep_tracking.SweepTracking` owns with its MLflow client: a tracking
server that is down or slow does not stall the sweep, and what it missed is written when
it is back (or by ``--resume``). No worker opens the tracking store, so a local SQLite file
never sees two writers (a busy database is retried like an absent server). It writes and
computes nothing else: the sweep's outcome comes from ``tuner.fit()``'s result, and the
driver records it in the parent run (``SweepTracking.close_parent_run``), through the same
queue.

Mapping of what happens to what MLflow shows (names in ``trainables.tracking_schema``):

* sweep started -> parent run (``SweepTracking.open_parent_run``, before Tune starts;
  continued when resumed);
* trial started -> nested child run named ``trial_run_name(sweep, trial_id)``, tagged by
  the sweep's strategy (variant and seed, or whether it is the paper's configuration); a
  trial restarted by Tune (trial failure, ``--resume``) finds that run by its tags and
  continues it: status back to RUNNING, ``sevlm.trial_starts`` + 1;
* a training worker (re)started -> ``sevlm.worker_starts``, ``sevlm.resumed_from_step`` and
  the metric ``worker/start_step``; metrics of steps already in the run are not logged
  again, so the run holds one history without duplicates; its first report carries the
  run's flattened configuration, logged as params;
* evaluation -> metrics at the evaluation's step; final report -> the final metrics and the
  artifacts (read from the final checkpoint Ray Train persisted to storage);
* trial finished -> FINISHED; stopped by the scheduler (ASHA) or interrupted sweep ->
  KILLED; out of retries -> FAILED.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables import tracking_schema as schema
from trainables.mlflow_queue import END_DRAIN_S, QUEUE_ARTIFACTS, WriteQueue, quick_http
from trainables.mlflow_store import timed_metric
from trainables.node_checks import error_summary
from trainables.report_protocol import FINAL_MARKER, REPORTS_FILE, TrialReport
from trainables.sweep_tracking import SweepTracking

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------ trial runs


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
    end_reason: str | None = None
    params: set[str] = field(default_factory=set)  # param keys the run has (or has queued)


class MlflowTrialWriter(Callback):
    """Writes every trial of one sweep to MLflow (see the module docstring), with the
    client and the write queue of ``tracking``, whose parent run is open."""

    def __init__(
        self,
        tracking: SweepTracking,
        *,
        storage_path: str,
        metric: str,
        trial_tags: Callable[[dict[str, Any]], dict[str, str]],
    ):
        if tracking.parent_run_id is None:
            raise ValueError("the trial writer needs the sweep's parent run: call open_parent_run first")
        self.tracking = tracking
        self.storage_path = storage_path
        self.metric = metric
        self.trial_tags = trial_tags
        self._reset()

    # Tune pickles callbacks into its experiment state (for --resume): only the settings
    # (the SweepTracking's are its own; unpickled, it is the driver's, already open).
    def _reset(self) -> None:
        self._runs: dict[str, _TrialRun] = {}
        self._trial_index: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_runs", "_trial_index")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        return self.tracking.client

    @property
    def queue(self) -> WriteQueue:
        """Every write of a trial run goes through it (the sweep's one write queue)."""
        return self.tracking.queue

    @property
    def sweep_name(self) -> str:
        return self.tracking.sweep_name

    # ---- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial in trials:  # creation order (the paper's configuration is created first)
            self._trial_index.setdefault(trial.trial_id, trials.index(trial))
        self._guard(self._trial_started, trial)
        self._guard(self.queue.drain)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._guard(lambda: self.queue.log_batch(self._run(trial).run_id, tags={schema.TAG_ERROR: _error_text(trial)}))
        self._guard(self.queue.drain)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._guard(self._trial_result, trial, result)
        self._guard(self.queue.drain)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._guard(self._trial_ended, trial, error=False)
        self._guard(self.queue.drain)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._guard(self._trial_ended, trial, error=True)
        self._guard(self.queue.drain)

    def on_step_end(self, iteration, trials, **info) -> None:
        # Tune's event loop turns about once a second: a server that came back gets what
        # is queued even while no trial reports (drain backs off while it is away).
        self._guard(self._drain_queued)

    def on_experiment_end(self, trials, **info) -> None:
        self._guard(self._experiment_ended)

    def _drain_queued(self) -> None:
        if len(self.queue):
            self.queue.drain()

    def _guard(self, fn, *args, **kwargs) -> None:
        # A tracking problem must not kill the sweep; what could not be written waits in
        # the queue (on disk) and is written later, or by --resume.
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.exception("MLflow logging failed in %s", getattr(fn, "__name__", fn))

    # ---- trial runs
    def _index(self, trial) -> int:
        if trial.trial_id not in self._trial_index:
            suffix = str(trial.trial_id).rsplit("_", 1)[-1]
            self._trial_index[trial.trial_id] = int(suffix) if suffix.isdigit() else len(self._trial_index)
        return self._trial_index[trial.trial_id]

    def _run(self, trial) -> _TrialRun:
        """The trial's run: known, found again by its tags (a restarted trial), or new
        (its creation queued: it needs no server now)."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        search = schema.search_filter_trial(self.sweep_name, trial.trial_id)
        try:  # one quick try; when the server is away the queued creation searches again
            with quick_http():
                state = self._found_run(search)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow search for trial %s failed (%s); its run is created later", trial.trial_id, exc)
            state = None
        if state is None:
            name = schema.trial_run_name(self.sweep_name, trial.trial_id)
            tags = {
                schema.MLFLOW_PARENT_RUN_ID: self.tracking.parent_run_id,
                schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION,
                schema.TAG_ROLE: schema.ROLE_TRIAL,
                schema.TAG_SWEEP_NAME: self.sweep_name,
                schema.TAG_SWEEP_KIND: self.tracking.sweep_kind,
                schema.TAG_TRIAL_ID: trial.trial_id,
                schema.TAG_TRIAL_NAME: name,
                schema.TAG_TRIAL_INDEX: str(self._index(trial)),
                schema.TAG_METRIC: self.metric,
                **self.trial_tags(dict(trial.config)),
            }
            ref = self.queue.create_run(trial.trial_id, self.tracking.experiment_id, tags, name, search)
            state = _TrialRun(run_id=ref)
        self._runs[trial.trial_id] = state
        return state

    def _found_run(self, search: str) -> _TrialRun | None:
        found = self.client.search_runs([self.tracking.experiment_id], filter_string=search, max_results=5)
        if not found:
            return None
        run = found[0]
        tags = run.data.tags
        return _TrialRun(
            run_id=run.info.run_id,
            worker_starts=int(tags.get(schema.TAG_WORKER_STARTS, "0")),
            last_eval_step=self._max_step(run.info.run_id, schema.EPOCH_METRIC),
            last_log_step=self._max_step(run.info.run_id, schema.TRAIN_STEP_PREFIX + "loss"),
            final_logged=any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics),
            node_ids=[n for n in tags.get(schema.TAG_NODE_IDS, "").split(",") if n],
            starts=int(tags.get(schema.TAG_TRIAL_STARTS, "0")),
            params=set(run.data.params),
        )

    def _max_step(self, run_id: str, key: str) -> int:
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=-1)

    def _trial_started(self, trial) -> None:
        state = self._run(trial)
        state.open = True
        state.starts += 1
        self.queue.set_status(state.run_id, schema.STATUS_RUNNING)
        self.queue.log_batch(state.run_id, tags={schema.TAG_TRIAL_STARTS: str(state.starts)})

    def _trial_result(self, trial, result: dict[str, Any]) -> None:
        report = TrialReport.from_result(result)
        state = self._run(trial)
        if report.config:
            self.queue.log_new_params(state.run_id, report.config, state.params)
        metrics: list = []
        tags: dict[str, str] = {}
        session = report.session
        if session is not None and session.session not in state.sessions:
            # a new training-worker session: the first one, or a restart from a checkpoint
            state.sessions.add(session.session)
            state.worker_starts += 1
            tags[schema.TAG_WORKER_STARTS] = str(state.worker_starts)
            metrics.append(timed_metric(schema.WORKER_START_METRIC, session.start_step, session.start_step))
            if session.start_step > 0:
                tags[schema.TAG_RESUMED_FROM_STEP] = str(session.start_step)
            tags[schema.TAG_DEVICE] = session.device
            if session.gpu_name:
                tags[schema.TAG_GPU_NAME] = session.gpu_name
            tags[schema.TAG_NODE_IP] = session.node_ip
            if session.node_id:
                tags[schema.TAG_NODE_ID] = session.node_id
                if session.node_id not in state.node_ids:
                    state.node_ids.append(session.node_id)
                tags[schema.TAG_NODE_IDS] = ",".join(state.node_ids)
        for earlier in report.replay:
            # reports persisted before an interruption that may never have reached us
            if not earlier.final:
                metrics += self._train_log(state, earlier) + self._evaluation(state, earlier)
        metrics += self._train_log(state, report)
        if report.final:
            if not state.final_logged:
                metrics += [timed_metric(k, v, report.step) for k, v in report.metrics.items()]
                self.queue.log_batch(state.run_id, metrics=metrics, tags=tags)
                metrics, tags = [], {}
                if report.checkpoint_path:
                    self._log_final_artifacts(state.run_id, report.checkpoint_path)
                state.final_logged = True
            state.end_reason = schema.END_EARLY_STOPPED if report.stopped_early else schema.END_COMPLETED
        else:
            if report.step > state.last_eval_step and report.is_best and report.checkpoint_path:
                tags[schema.TAG_BEST_CHECKPOINT] = report.checkpoint_path
                tags[schema.TAG_BEST_STEP] = str(report.step)
            metrics += self._evaluation(state, report)
        self.queue.log_batch(state.run_id, metrics=metrics, tags=tags)

    def _train_log(self, state: _TrialRun, report: TrialReport) -> list:
        metrics = []
        for step, values in report.train_log:
            if step <= state.last_log_step:
                continue
            for key, value in values.items():
                name = key[len("train/"):] if key.startswith("train/") else key
                metrics.append(timed_metric(schema.TRAIN_STEP_PREFIX + name, value, step))
            state.last_log_step = step
        return metrics

    def _evaluation(self, state: _TrialRun, report: TrialReport) -> list:
        """The metrics of one evaluation report, unless its step is already in the run."""
        if report.step <= state.last_eval_step:
            return []
        state.last_eval_step = report.step
        return [timed_metric(k, v, report.step) for k, v in report.metrics.items()]

    def _trial_ended(self, trial, error: bool) -> None:
        state = self._run(trial)
        tags: dict[str, str] = {}
        if error:
            status, reason = schema.STATUS_FAILED, schema.END_FAILED
            tags[schema.TAG_ERROR] = _error_text(trial)
        elif state.final_logged:
            status, reason = schema.STATUS_FINISHED, state.end_reason or schema.END_COMPLETED
        else:
            status, reason = schema.STATUS_KILLED, schema.END_PRUNED
        tags[schema.TAG_END_REASON] = reason
        self.queue.log_batch(state.run_id, tags=tags)
        self.queue.set_status(state.run_id, status, terminated=True)
        state.open = False

    def _experiment_ended(self) -> None:
        for state in self._runs.values():
            if state.open:  # the sweep was interrupted: the trial continues on --resume
                self.queue.log_batch(state.run_id, tags={schema.TAG_END_REASON: schema.END_INTERRUPTED})
                self.queue.set_status(state.run_id, schema.STATUS_KILLED, terminated=True)
                state.open = False
        if not self.queue.drain(END_DRAIN_S):
            log.error("the MLflow server did not take %d writes; they are kept in %s and written "
                      "by --resume", len(self.queue), self.queue.path)

    # ---- artifacts
    def _log_final_artifacts(self, run_id: str, final_dir: str) -> None:
        # Queued by path: the final checkpoint stays in storage (a bucket's is fetched
        # into the queue's folder first), so it is there whenever the write is sent.
        local = self._local_dir(final_dir)
        if local is None:
            log.warning("final artifacts of run %s not reachable at %s", run_id, final_dir)
            return
        for path in sorted(Path(local).iterdir()):
            if path.name not in (FINAL_MARKER, REPORTS_FILE):
                self.queue.log_artifacts(run_id, str(path), path.name if path.is_dir() else None)

    def _local_dir(self, path: str) -> str | None:
        if os.path.isdir(path):
            return path
        try:  # remote storage (bucket): download through Ray Train's Checkpoint
            import pyarrow.fs
            from ray.train import Checkpoint

            fs, _ = pyarrow.fs.FileSystem.from_uri(self.storage_path)
            target = self.queue.path.parent / QUEUE_ARTIFACTS / Path(path).parent.name
            target.mkdir(parents=True, exist_ok=True)
            Checkpoint(path=path, filesystem=fs).to_directory(str(target))
            return str(target)
        except Exception:  # noqa: BLE001
            log.exception("could not fetch %s", path)
            return None


def _error_text(trial) -> str:
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001
        err = None
    if err:
        return error_summary(str(err))
    error_file = getattr(trial, "error_file", None)  # where Tune keeps a restored trial's error
    try:
        return error_summary(Path(error_file).read_text() if error_file else "")
    except OSError:
        return error_summary(str(error_file))
