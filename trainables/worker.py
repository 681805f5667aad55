"""The Ray Train worker of one trial: runs the training loop with a callback that reports
every evaluation (with its checkpoint) and the run's end to Ray Train, resuming from the
last checkpoint after a restart. Imports torch and sevlm: only the worker process loads it
(see ``trainables.trial.train_worker``)."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sevlm.training.callbacks import TrainingCallback
from trainables import report_protocol as rp
from trainables import tracking_schema as schema
from trainables.node_checks import NodeSetupError, check_cuda, check_paths, node_label
from trainables.placement import register_placement_group
from trainables.report_protocol import FINAL_DIR_NAME, FINAL_MARKER, REPLAY_LENGTH, REPORTS_FILE
from trainables.settings import TrialSettings

log = logging.getLogger(__name__)


def resolve_training_fn(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "run_training")


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (bool, int, float))}


class RayReportCallback(TrainingCallback):
    """Forwards one ``run_training`` call to Ray Train.

    Every evaluation becomes one ``ray.train.report`` with the loop's checkpoint; the
    training-log entries since the previous evaluation travel with it (so that a metric is
    reported exactly once, together with the checkpoint that covers it). The end of the run
    becomes a final report whose checkpoint directory holds the artifacts.
    """

    def __init__(self, settings: TrialSettings, device: Mapping[str, str], node_ip: str, node_id: str):
        self.settings = settings
        self.worker = dict(session=uuid.uuid4().hex[:12], device=device["device"], gpu_name=device.get("gpu_name", ""),
                           node_ip=node_ip, node_id=node_id)
        self.session: rp.WorkerSession | None = None  # known once training starts
        self.config_json: str | None = None  # sent until one report carried it
        self.last_step = 0
        self.last_epoch = 0.0
        self.last_metric: float | None = None
        self.train_log: list[list[Any]] = []
        self.recent: list[dict[str, Any]] = []  # the last reports, saved in each checkpoint
        self.replay: list[dict[str, Any]] = []  # reports to send again (after a restore)

    def restore_reports(self, checkpoint_dir: Path) -> None:
        """Load the reports saved in a restored checkpoint; they are sent again once."""
        path = Path(checkpoint_dir) / REPORTS_FILE
        if path.is_file():
            try:
                self.recent = json.loads(path.read_text())[-REPLAY_LENGTH:]
            except (OSError, ValueError):
                self.recent = []
            self.replay = list(self.recent)

    def _remember(self, report: dict[str, Any], directory: Path) -> None:
        self.recent = (self.recent + [rp.stored_record(report)])[-REPLAY_LENGTH:]
        (Path(directory) / REPORTS_FILE).write_text(json.dumps(self.recent))

    def _sent(self) -> None:
        self.config_json = None
        self.train_log = []
        self.replay = []

    # -- hooks
    def on_train_start(self, config_flat: dict, start_step: int) -> None:
        self.config_json = json.dumps(config_flat, default=str, sort_keys=True)
        self.session = rp.WorkerSession(start_step=int(start_step), **self.worker)
        self.last_step = int(start_step)

    def on_train_log(self, step: int, metrics: dict[str, float]) -> None:
        self.train_log.append([int(step), _numeric(metrics)])

    def on_evaluation(self, event) -> None:
        import ray.train

        metrics = _numeric(event.metrics)
        metrics.setdefault(schema.EPOCH_METRIC, float(event.epoch))
        report = rp.evaluation_report(
            self.session, event.step, metrics, is_best=event.is_best,
            score=metrics.get(self.settings.metric), train_log=self.train_log,
            config_json=self.config_json, replay=self.replay,
        )
        self.last_epoch = metrics[schema.EPOCH_METRIC]
        self.last_metric = metrics.get(self.settings.metric)
        self._remember(report, event.checkpoint_dir)
        checkpoint = ray.train.Checkpoint.from_directory(str(event.checkpoint_dir))
        ray.train.report(report, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{event.step:08d}")
        self.last_step = int(event.step)
        self._sent()

    def on_train_end(self, result) -> None:
        import ray.train

        final_dir = Path(result.output_dir) / FINAL_DIR_NAME
        final = _numeric(result.final_metrics)
        heldout_dir = _score_heldout(self.settings.heldout, result, final) if self.settings.heldout else None
        metric = self.settings.metric
        value = final.get(schema.BEST_PREFIX + metric, self.last_metric)
        _write_final_dir(final_dir, result, final, _best_checkpoint_info(metric), self.last_step)
        if heldout_dir is not None:  # logged to MLflow with the final dir's other folders
            shutil.copytree(heldout_dir, final_dir / schema.ARTIFACT_HELDOUT_DIR / heldout_dir.name)
        report = rp.final_report(
            self.session, self.last_step, final, stopped_early=bool(result.stopped_early),
            metric=metric, metric_value=float("nan") if value is None else value,
            epoch=self.last_epoch, train_log=self.train_log, config_json=self.config_json,
            replay=self.replay,
        )
        self._remember(report, final_dir)
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(str(final_dir)),
                         checkpoint_dir_name=FINAL_DIR_NAME)
        self._sent()


def _score_heldout(heldout: str, result, final: dict[str, float]) -> Path | None:
    """Score the tested (best) checkpoint on the sweep's held-out set, add the scores to
    ``final`` and return the folder of its files. A failure (say the set is missing on this
    node) is logged and costs only these scores, not the trained run."""
    from sevlm.heldout import evaluate_checkpoint, parse_heldout

    if result.best_checkpoint_dir is None:
        log.warning("no best checkpoint: held-out set %s not scored", heldout)
        return None
    try:
        spec = parse_heldout(heldout)
        out = Path(result.output_dir) / schema.ARTIFACT_HELDOUT_DIR / f"{spec.dataset}_{spec.split}"
        evaluation = evaluate_checkpoint(spec, result.best_checkpoint_dir, out)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("held-out evaluation on %s failed", heldout)
        return None
    final.update({schema.heldout_metric(spec.dataset, k): float(v) for k, v in evaluation.metrics.items()})
    return out


def _best_checkpoint_info(metric: str) -> dict[str, Any]:
    """Where Ray Train stored the best evaluation checkpoint of this run (so far)."""
    import ray.train

    try:
        reported = ray.train.get_all_reported_checkpoints(timeout_s=60)
    except Exception as exc:  # noqa: BLE001 - informative only
        log.warning("could not list reported checkpoints: %s", exc)
        return {}
    scored = [rc for rc in reported if not rp.is_final(rc.metrics or {}) and rc.metrics.get(rp.KEY_SCORE) is not None]
    if not scored:
        return {}
    best = max(scored, key=lambda rc: rc.metrics[rp.KEY_SCORE])
    return {"path": best.checkpoint.path, "step": best.metrics.get(rp.KEY_STEP), "metric": metric,
            "value": best.metrics.get(metric)}


def _write_final_dir(final_dir: Path, result, final: dict, best: dict, step: int) -> None:
    if final_dir.exists():
        shutil.rmtree(final_dir)
    final_dir.mkdir(parents=True)
    artifacts = dict(result.artifacts or {})
    predictions = artifacts.get("predictions_test")
    if predictions and Path(predictions).is_file():
        target = final_dir / schema.ARTIFACT_PREDICTIONS_TEST
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(predictions, target)
    data_report = artifacts.get("data_report")  # what loading did to the data (issue 13)
    if data_report and Path(data_report).is_file():
        shutil.copyfile(data_report, final_dir / schema.ARTIFACT_DATA_REPORT)
    samples = artifacts.get("samples")
    if samples and Path(samples).exists():
        samples = Path(samples)
        shutil.copytree(samples if samples.is_dir() else samples.parent, final_dir / schema.ARTIFACT_SAMPLES_DIR)
    if result.best_checkpoint_dir is not None:
        best = {**best, "local_path": str(result.best_checkpoint_dir)}
    (final_dir / schema.ARTIFACT_BEST_CHECKPOINT).write_text(json.dumps(best, indent=2, default=str))
    (final_dir / schema.ARTIFACT_FINAL_METRICS).write_text(json.dumps(final, indent=2))
    marker = {"final_metrics": final, "stopped_early": bool(result.stopped_early), "step": step}
    (final_dir / FINAL_MARKER).write_text(json.dumps(marker))


def _report_finished_run(checkpoint, local: Path, settings: TrialSettings, callback: RayReportCallback) -> None:
    """The restored checkpoint is a finished run's final one: report its result again."""
    import ray.train

    data = json.loads((local / FINAL_MARKER).read_text())
    final = data["final_metrics"]
    value = final.get(schema.BEST_PREFIX + settings.metric, float("nan"))
    ray.train.report(rp.final_report(
        None, int(data.get("step", 0)), final, stopped_early=bool(data.get("stopped_early")),
        metric=settings.metric, metric_value=value, replay=callback.replay, final_dir=checkpoint.path,
    ))


def run_worker(config: dict[str, Any]) -> None:
    """One training run, resumed from the last checkpoint."""
    import ray
    import ray.train

    settings = TrialSettings.from_dict(config["settings"])
    run_name = config["run_name"]
    cfg, device = _checked_on_this_node(settings, config["point"], run_name)
    if device["device"] == "cpu":
        import torch

        torch.set_num_threads(max(1, int(round(settings.cpus_per_worker))))
    callback = RayReportCallback(settings, device, ray.util.get_node_ip_address(),
                                 ray.get_runtime_context().get_node_id())
    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        local = Path(cfg.output_dir) / "restored_checkpoint"
        if local.exists():
            shutil.rmtree(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.to_directory(str(local))
        callback.restore_reports(local)
        if (local / FINAL_MARKER).is_file():
            _report_finished_run(checkpoint, local, settings, callback)
            return
        resume_from = local
        log.info("resuming %s from %s", run_name, checkpoint.path)

    register_placement_group(settings.sweep_name, run_name)
    run_training = resolve_training_fn(settings.training_fn)
    run_training(cfg, [callback], resume_from=resume_from)
    if settings.local_scratch:  # Ray Train has copied every reported checkpoint to storage
        shutil.rmtree(cfg.output_dir, ignore_errors=True)


def _checked_on_this_node(settings: TrialSettings, point: Mapping[str, Any], run_name: str):
    """The trial's configuration (the sweep's base, the trial's point, its own folder and
    the device torch can use here), once this node has what it needs
    (``trainables.node_checks``): for a GPU trial a CUDA that torch can use, its input paths,
    the held-out set and loadable pretrained weights. The device is set explicitly: the
    loop never falls back to the CPU on its own."""
    from sevlm.config import compose, input_paths
    from sevlm.model.weights import WeightsUnavailableError, ensure_pretrained_available

    device = check_cuda() if settings.use_gpu else {"device": "cpu", "gpu_name": ""}
    cfg = compose(settings.base, settings.point_overrides(point),
                  {**settings.run_overrides(run_name), "train.device": device["device"]})
    try:
        ensure_pretrained_available(cfg.model)
    except WeightsUnavailableError as exc:
        raise NodeSetupError(f"node {node_label()}: {exc}") from None
    paths = input_paths(cfg)
    if settings.heldout:
        paths["--heldout"] = settings.heldout.partition(":")[2]
    check_paths(paths)
    if settings.heldout:  # the folder is there: its split file too?
        from sevlm.heldout import parse_heldout

        try:
            parse_heldout(settings.heldout)
        except ValueError as exc:
            raise NodeSetupError(f"node {node_label()}: {exc}") from None
    return cfg, device
