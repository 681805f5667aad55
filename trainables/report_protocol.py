"""What a training worker reports to the sweep driver, and how the driver reads it.

Ray Tune carries each report as one flat dict of numbers and strings, from the worker's
``ray.train.report`` through Ray Train's ``TuneReportCallback`` to the driver's callbacks.
The worker builds its reports with :func:`evaluation_report` and :func:`final_report`; the
driver reads them with :meth:`TrialReport.from_result`. No other module knows the keys.

Metric names (``val/...``, ``train/...``, ``test/...``) travel as the report's own keys
with float values; everything else is one of the ``KEY_*`` entries below.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

KEY_STEP = "step"
KEY_FINAL = "sevlm_final"  # 1.0 on the final report (test metrics + artifacts)
KEY_IS_BEST = "sevlm_is_best"  # 1.0 when this evaluation is the best so far
KEY_START_STEP = "sevlm_start_step"  # step the current worker session started from
KEY_SESSION = "sevlm_session"  # id of the worker session (changes on every restart)
KEY_CONFIG = "sevlm_config"  # JSON of the flattened config (until a report carried it)
KEY_TRAIN_LOG = "sevlm_train_log"  # JSON [[step, {metric: value}], ...] since last report
KEY_SCORE = "sevlm_score"  # checkpoint score (Ray Train keeps the best checkpoints)
KEY_STOPPED_EARLY = "sevlm_stopped_early"
KEY_NODE_IP = "sevlm_node_ip"
KEY_NODE_ID = "sevlm_node_id"
KEY_DEVICE = "sevlm_device"  # the device torch trains on: "cpu" or "cuda"
KEY_GPU_NAME = "sevlm_gpu_name"  # torch.cuda.get_device_name, "" on CPU
KEY_FINAL_DIR = "sevlm_final_dir"  # persisted final checkpoint, when re-reported
KEY_FINAL_KEYS = "sevlm_final_keys"  # JSON list: which keys of the final report are final metrics
# JSON list of the reports before the restored checkpoint, sent again by a resumed worker:
# a report persisted by Ray Train but never seen by the driver (sweep interrupted right
# after it) still reaches MLflow.
KEY_REPLAY = "sevlm_replay"
CHECKPOINT_PATH_KEY = "checkpoint_path"  # added by TuneReportCallback
# The score of a report that must never be kept as a "best" checkpoint.
UNSCORED = -1e30

# Files of a checkpoint the worker writes: its last reports (sent again after a restore),
# and in the final checkpoint's directory the marker of a finished run.
REPORTS_FILE = "sevlm_reports.json"  # the last reports, saved in each checkpoint
REPLAY_LENGTH = 8
FINAL_MARKER = "sevlm_final.json"
FINAL_DIR_NAME = "sevlm_final"


@dataclass(frozen=True)
class WorkerSession:
    """Who sends the reports: one training-worker process, from its (re)start."""

    session: str
    start_step: int
    node_ip: str
    node_id: str
    device: str
    gpu_name: str = ""


def _session_keys(session: WorkerSession | None) -> dict[str, Any]:
    if session is None:
        return {}
    return {
        KEY_SESSION: session.session,
        KEY_START_STEP: session.start_step,
        KEY_NODE_IP: session.node_ip,
        KEY_NODE_ID: session.node_id,
        KEY_DEVICE: session.device,
        KEY_GPU_NAME: session.gpu_name,
    }


def _score(value: float | None) -> float:
    # Every validation metric is higher-is-better; NaN never wins.
    return UNSCORED if value is None or value != value else float(value)


def evaluation_report(
    session: WorkerSession,
    step: int,
    metrics: Mapping[str, float],
    *,
    is_best: bool,
    score: float | None,
    train_log: list,
    config_json: str | None,
    replay: list[dict[str, Any]],
) -> dict[str, Any]:
    """One validation evaluation (``metrics``: ``val/...``, ``train/...``, ``epoch``)."""
    report = {
        **metrics,
        **_session_keys(session),
        KEY_STEP: int(step),
        KEY_FINAL: 0.0,
        KEY_IS_BEST: float(bool(is_best)),
        KEY_SCORE: _score(score),
        KEY_TRAIN_LOG: json.dumps(train_log),
    }
    return _with_extras(report, config_json, replay)


def final_report(
    session: WorkerSession | None,
    step: int,
    final_metrics: Mapping[str, float],
    *,
    stopped_early: bool,
    metric: str,
    metric_value: float,
    epoch: float | None = None,
    train_log: list = (),
    config_json: str | None = None,
    replay: list[dict[str, Any]] = (),
    final_dir: str | None = None,
) -> dict[str, Any]:
    """The end of a run: its final metrics (``test/...``, ``best_...``). ``metric`` carries
    the value of the checkpoint that was tested, because searchers and schedulers read
    the sweep's metric from every result."""
    report = {
        **final_metrics,
        **_session_keys(session),
        KEY_STEP: int(step),
        KEY_FINAL: 1.0,
        KEY_FINAL_KEYS: json.dumps(sorted(final_metrics)),
        KEY_IS_BEST: 0.0,
        KEY_STOPPED_EARLY: float(bool(stopped_early)),
        KEY_SCORE: UNSCORED,
        KEY_TRAIN_LOG: json.dumps(list(train_log)),
        metric: float(metric_value),
    }
    if epoch is not None:
        report[schema.EPOCH_METRIC] = float(epoch)  # for the progress table
    if final_dir is not None:
        report[KEY_FINAL_DIR] = final_dir
    return _with_extras(report, config_json, list(replay))


def _with_extras(report: dict[str, Any], config_json: str | None, replay: list) -> dict[str, Any]:
    if config_json is not None:
        report[KEY_CONFIG] = config_json
    if replay:
        report[KEY_REPLAY] = json.dumps(replay)
    return report


def stored_record(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps of a report, to send it again after a restore."""
    return {k: v for k, v in report.items() if k not in (KEY_REPLAY, KEY_CONFIG)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


@dataclass(frozen=True)
class TrialReport:
    """One report, as the driver reads it."""

    step: int
    final: bool
    is_best: bool = False
    session: WorkerSession | None = None
    config: dict[str, Any] | None = None
    train_log: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    replay: list[TrialReport] = field(default_factory=list)
    # Evaluation: "train/...", "val/..." and "epoch". Final: the final metrics.
    metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    checkpoint_path: str | None = None  # where Ray Train persisted this report's checkpoint

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> TrialReport:
        final = result.get(KEY_FINAL) == 1.0
        session = None
        if result.get(KEY_SESSION) and KEY_START_STEP in result:
            session = WorkerSession(
                session=str(result[KEY_SESSION]),
                start_step=int(result.get(KEY_START_STEP) or 0),
                node_ip=str(result.get(KEY_NODE_IP) or ""),
                node_id=str(result.get(KEY_NODE_ID) or ""),
                device=str(result.get(KEY_DEVICE) or ""),
                gpu_name=str(result.get(KEY_GPU_NAME) or ""),
            )
        if final:
            metrics = {k: float(result[k]) for k in _final_keys(result) if _number(result.get(k))}
        else:
            metrics = {
                k: float(v) for k, v in result.items()
                if _number(v) and (k.startswith(("train/", schema.VAL_PREFIX)) or k == schema.EPOCH_METRIC)
            }
        config = result.get(KEY_CONFIG)
        return cls(
            step=int(result.get(KEY_STEP, 0) or 0),
            final=final,
            is_best=result.get(KEY_IS_BEST) == 1.0,
            session=session,
            config=json.loads(config) if config else None,
            train_log=[(int(s), v) for s, v in json.loads(result.get(KEY_TRAIN_LOG) or "[]")],
            replay=[cls.from_result(r) for r in json.loads(result.get(KEY_REPLAY) or "[]")],
            metrics=metrics,
            stopped_early=result.get(KEY_STOPPED_EARLY) == 1.0,
            checkpoint_path=result.get(CHECKPOINT_PATH_KEY) or result.get(KEY_FINAL_DIR),
        )


def _final_keys(result: Mapping[str, Any]) -> list[str]:
    """The final-metric keys of a final report: the list the worker sent with it, or (from a
    result without one, e.g. an older checkpoint) every test/ and best_ key."""
    listed = result.get(KEY_FINAL_KEYS)
    if isinstance(listed, str):
        try:
            return [str(k) for k in json.loads(listed)]
        except ValueError:
            log.warning("unreadable %s in a final report: %r", KEY_FINAL_KEYS, listed[:200])
    return [k for k in result if k.startswith((schema.TEST_PREFIX, schema.BEST_PREFIX))]


def is_final(result: Mapping[str, Any]) -> bool:
    return result.get(KEY_FINAL) == 1.0
