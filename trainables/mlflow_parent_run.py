"""The sweep's parent run in MLflow, and what the driver writes when the sweep ends.

The parent run is opened when the sweep starts, right after the driver has checked that the
tracking store answers (``probe_tracking_store``), so its writes go straight to the store
(with retries). Everything written after ``tuner.fit()`` returns (the sweep's outcome, the
end of runs a dead driver left RUNNING) goes through the sweep's write queue
(``trainables.mlflow_queue``), like every trial write: a tracking server that is away at the
end of a sweep costs at most ``END_DRAIN_S`` and loses nothing (``--resume`` sends the rest).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from trainables import mlflow_notes
from trainables import tracking_schema as schema
from trainables.mlflow_queue import END_DRAIN_S, QUEUE_ARTIFACTS, quick_http, sweep_queue
from trainables.mlflow_store import (
    RunWriter,
    error_line,
    get_or_create_experiment,
    open_tracking_store,
    sweep_runs,
    timed_metric,
    with_retry,
)

log = logging.getLogger(__name__)

UNWRITTEN_FILE = "mlflow_unwritten.jsonl"  # in the sweep's directory: writes MLflow refused


def open_parent_run(
    tracking_uri: str,
    *,
    experiment: str,
    sweep_name: str,
    sweep_kind: str,
    sweep_path: str,
    metric: str,
    params: dict[str, Any],
    tags: dict[str, str],
    spec: dict[str, Any],
    total_trials: int | None = None,
) -> tuple[str, str]:
    """Create the sweep's parent run, or continue it (``--resume``); returns
    ``(experiment_id, parent_run_id)``. The experiment's description says how its runs are
    organised; the parent's, until the sweep ends, that it runs."""
    client = open_tracking_store(tracking_uri)
    writer = RunWriter(client, Path(sweep_path) / UNWRITTEN_FILE)
    experiment_id = get_or_create_experiment(client, experiment, tracking_uri)
    describe_experiment(client, experiment_id)
    found = with_retry(client.search_runs, [experiment_id],
                       filter_string=schema.search_filter_parent(sweep_name), max_results=5)
    tags = {
        schema.TAG_SCHEMA_VERSION: schema.SCHEMA_VERSION,
        schema.TAG_ROLE: schema.ROLE_PARENT,
        schema.TAG_SWEEP_NAME: sweep_name,
        schema.TAG_SWEEP_KIND: sweep_kind,
        schema.TAG_SWEEP_PATH: sweep_path,
        schema.TAG_METRIC: metric,
        schema.MLFLOW_NOTE: mlflow_notes.parent_note_running(sweep_name, sweep_kind, metric, total_trials),
        **tags,
    }
    if found:
        run_id = found[0].info.run_id
        tags[schema.TAG_RESUME_COUNT] = str(int(found[0].data.tags.get(schema.TAG_RESUME_COUNT, "0")) + 1)
        with_retry(client.update_run, run_id, status=schema.STATUS_RUNNING)
    else:
        run_id = with_retry(client.create_run, experiment_id, tags=tags, run_name=sweep_name).info.run_id
        tags[schema.TAG_RESUME_COUNT] = "0"
    writer.write_params(run_id, params)
    writer.write(run_id, tags=tags)
    writer.write_json(run_id, schema.ARTIFACT_SWEEP_SPEC, spec)
    writer.flush(final=True)
    return experiment_id, run_id


def describe_experiment(client, experiment_id: str) -> None:
    """The experiment's description in the UI: how the sweeps' runs are organised. Written
    when the experiment has none or has this project's (kept up to date); a description
    someone wrote in the UI stays."""
    experiment = with_retry(client.get_experiment, experiment_id)
    current = (experiment.tags or {}).get(schema.MLFLOW_NOTE)
    text = mlflow_notes.experiment_note()
    if current != text and (not current or current.startswith(mlflow_notes.EXPERIMENT_NOTE_TITLE)):
        with_retry(client.set_experiment_tag, experiment_id, schema.MLFLOW_NOTE, text)


def trial_run_ids(tracking_uri: str, sweep_name: str, experiment: str) -> dict[str, str]:
    """Trial id -> MLflow run id of the sweep's trial runs; empty (and a warning) when the
    tracking server does not answer at once."""
    try:
        with quick_http():
            runs = sweep_runs(tracking_uri, sweep_name, experiment)
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow did not answer (%s): the results table lists no run ids", error_line(exc))
        return {}
    return {tid: run.info.run_id for tid, run in runs.by_trial_id().items()}


def end_orphaned_trial_runs(tracking_uri: str, sweep_name: str, experiment: str, *, sweep_path: str,
                            drain_s: float = END_DRAIN_S) -> list[str]:
    """End the sweep's trial runs that are still RUNNING once ``tuner.fit()`` returned.

    The trial writer ends every trial Tune ran (even an interrupted sweep's), so what is
    left was started by an earlier driver that died without ending it (SIGKILL, a lost
    machine): its trial was created after Tune's last saved state, and no ``--resume``
    continues it. They become KILLED (end reason "interrupted"), through the write queue;
    returns their run ids. A tracking server that does not answer at once leaves them for
    the next ``--resume``."""
    try:
        with quick_http():
            trials = sweep_runs(tracking_uri, sweep_name, experiment).trials
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow did not answer (%s): runs an earlier driver left RUNNING are ended by "
                    "the next --resume", error_line(exc))
        return []
    orphans = [run.info.run_id for run in trials if run.info.status == schema.STATUS_RUNNING]
    if orphans:
        queue = sweep_queue(tracking_uri, sweep_path, sweep_name)
        for run_id in orphans:
            queue.log_batch(run_id, tags={schema.TAG_END_REASON: schema.END_INTERRUPTED})
            queue.set_status(run_id, schema.STATUS_KILLED, terminated=True)
        queue.drain(drain_s)
    return orphans


def close_parent_run(
    tracking_uri: str,
    parent_run_id: str,
    *,
    sweep_path: str,
    sweep_name: str,
    status: str,
    counts: dict[str, int],
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    drain_s: float = END_DRAIN_S,
    metric: str | None = None,
    sweep_kind: str | None = None,
    columns: dict[str, str] | None = None,
) -> int:
    """Record the sweep's outcome in its parent run (counts, one row per trial, the best
    trial; with ``metric`` also the results table as the run's description, ``columns``:
    config key -> header) and end it with ``status``, through the sweep's write queue.
    Returns how many writes still wait for the tracking server (sent by ``--resume``)."""
    queue = sweep_queue(tracking_uri, sweep_path, sweep_name)
    # The files of queued artifact writes stay until they are sent (maybe by --resume).
    folder = queue.path.parent / QUEUE_ARTIFACTS / "parent"
    tags = {
        schema.TAG_TRIALS_TOTAL: str(counts["total"]),
        schema.TAG_TRIALS_FINISHED: str(counts["finished"]),
        schema.TAG_TRIALS_FAILED: str(counts["failed"]),
        schema.TAG_TRIALS_KILLED: str(counts["killed"]),
    }
    if metric is not None:
        tags[schema.MLFLOW_NOTE] = mlflow_notes.parent_note(
            sweep_name=sweep_name, sweep_kind=sweep_kind or "sweep", metric=metric, status=status, counts=counts,
            rows=rows, columns=columns, best=best,
            # the sweep's folder is <storage>/<sweep name> (sweeps.spec)
            storage=sweep_path[:-len(sweep_name) - 1] if sweep_path.endswith("/" + sweep_name) else None)
    metrics = []
    if best:
        tags[schema.TAG_BEST_TRIAL_ID] = best["trial_id"]
        if best.get("run_id"):
            tags[schema.TAG_BEST_RUN_ID] = best["run_id"]
        metrics = [timed_metric(schema.PARENT_BEST_METRIC_PREFIX + k, v, 0) for k, v in best["metrics"].items()]
        path = _artifact_file(folder, schema.ARTIFACT_SWEEP_BEST)
        path.write_text(json.dumps(best, indent=2, default=str))
        queue.log_artifacts(parent_run_id, str(path), _artifact_dir(schema.ARTIFACT_SWEEP_BEST))
    queue.log_batch(parent_run_id, metrics=metrics, tags=tags)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path = _artifact_file(folder, schema.ARTIFACT_SWEEP_RESULTS)
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=columns)
        out.writeheader()
        out.writerows(rows)
    queue.log_artifacts(parent_run_id, str(path), _artifact_dir(schema.ARTIFACT_SWEEP_RESULTS))
    queue.set_status(parent_run_id, status, terminated=True)
    if not queue.drain(drain_s):
        log.error("the MLflow server did not take %d writes; they are kept in %s and written by --resume",
                  len(queue), queue.path)
    return len(queue)


def _artifact_file(folder: Path, artifact: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / Path(artifact).name


def _artifact_dir(artifact: str) -> str | None:
    parent = str(Path(artifact).parent)
    return None if parent == "." else parent

