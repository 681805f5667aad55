"""One SEVLM training run as a Ray Train (V2) run inside a Ray Tune trial.

Layers, from the inside out:

* :func:`train_worker` runs on the one Ray Train worker. It calls the training loop
  (``sevlm.training.loop.run_training``) with a :class:`RayReportCallback`, which reports
  every evaluation with the checkpoint the loop has just written, and at the end one
  *final* report whose checkpoint holds the run's artifacts (test predictions, samples
  with their images, where the best checkpoint is). A restarted worker resumes from
  ``ray.train.get_checkpoint()``. The reports are built by ``trainables.report_protocol``.
* :func:`build_trainer` builds the ``TorchTrainer``: one worker, one GPU when the cluster
  has GPUs (CPU otherwise), ``ray.train.RunConfig(name=trial_run_name(...))`` so that a
  restarted trial (Tune retry, ``--resume``) finds its Ray Train run and checkpoints in
  storage again, ``FailureConfig(max_failures=...)`` for worker failures.
* :func:`run_trial` is the Tune function trainable; :func:`make_trainable` binds it to the
  sweep: its settings, the function that turns a Tune config into configuration overrides
  (the sweep's strategy), and a fractional CPU (a trial function holding a whole CPU
  deadlocks the worker group on a 2-CPU machine). Metrics reach Tune through
  ``ray.tune.integration.ray_train.TuneReportCallback``; only the Tune driver writes to
  MLflow (``trainables.mlflow_writer``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sevlm.training.callbacks import TrainingCallback
from trainables import report_protocol as rp
from trainables import tracking_schema as schema
from trainables.placement import register_placement_group

log = logging.getLogger(__name__)

DEFAULT_TRAINING_FN = "sevlm.training.loop:run_training"
# CPU held by the Tune trial function itself (it only waits on the Ray Train controller).
TRIAL_FN_CPUS = 0.1
# Every validation metric sevlm reports is higher-is-better (the loop keeps the checkpoint
# with the highest monitored value): Tune, ASHA, Optuna and Ray Train all get this mode.
MODE = "max"
# Ray Train's controller checks its workers every 2 s by default, and a finished run waits
# for the next check: about 1.5 s of every trial. Checking every 0.5 s costs a few
# milliseconds of CPU per second. Propagated by Ray Train to the controller and workers.
HEALTH_CHECK_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
REPORTS_FILE = "sevlm_reports.json"  # the last reports, saved in each checkpoint
REPLAY_LENGTH = 8
# Files of the final checkpoint directory.
FINAL_MARKER = "sevlm_final.json"
FINAL_DIR_NAME = "sevlm_final"


@dataclass
class TrialSettings:
    """Everything a trial needs besides its own overrides (the same for all trials)."""

    sweep_name: str
    storage_path: str  # Tune storage root (absolute path or URI)
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed dotted-key overrides
    metric: str = "val/bleu4"  # picks the checkpoint that is tested (train.monitor_metric)
    use_gpu: bool = False
    cpus_per_worker: float = 0.9  # CPU of the training worker (GPU: 0 = Ray's default)
    max_failures: int = 2  # worker failures retried by Ray Train, per trial attempt
    keep_checkpoints: int | None = 2  # best N by `metric` (the latest is always kept)
    output_root: str | None = None  # trials write to <output_root>/<run name>; default <storage>/<sweep>/outputs
    # "module:function" with run_training's signature; $SEVLM_TRAINING_FN overrides it
    # (a developer hook, e.g. for a stand-in loop).
    training_fn: str = field(default_factory=lambda: os.environ.get("SEVLM_TRAINING_FN", DEFAULT_TRAINING_FN))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSettings:
        return cls(**dict(data))

    @property
    def train_storage_path(self) -> str:
        """Ray Train runs of the sweep: ``<storage>/<sweep>/train/<trial run name>``."""
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}/train"

    @property
    def outputs_path(self) -> str:
        if self.output_root:
            return self.output_root
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}/outputs"


# ------------------------------------------------------------------------- configs


def trial_config(settings: TrialSettings, overrides: Mapping[str, Any], run_name: str | None = None):
    """The ``ExperimentConfig`` of one trial: preset, the sweep's fixed overrides, the
    trial's own overrides. Raises ValueError if the model cannot be built from it."""
    from sevlm.config import apply_overrides, preset, validate

    cfg = apply_overrides(preset(settings.preset), dict(settings.overrides))
    cfg = apply_overrides(cfg, dict(overrides))
    extra: dict[str, Any] = {}
    if not (cfg.model.neg_wrong_emotion or cfg.model.neg_other_image):
        # Nothing to contrast: a point with both negative types off trains without the
        # contrastive loss (and its alpha has no effect).
        extra["model.use_contrastive"] = False
    if "train.monitor_metric" not in settings.overrides:
        # The loop tests the checkpoint that is best by the sweep's metric.
        extra["train.monitor_metric"] = settings.metric
    if run_name is not None:
        # every trial writes into its own directory (a --set output_dir=... is the root)
        extra["output_dir"] = f"{settings.outputs_path}/{run_name}"
    cfg = apply_overrides(cfg, extra)
    validate(cfg)
    return cfg


def resolve_training_fn(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "run_training")


# -------------------------------------------------------------------------- worker


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (bool, int, float))}


class RayReportCallback(TrainingCallback):
    """Forwards one ``run_training`` call to Ray Train.

    Every evaluation becomes one ``ray.train.report`` with the loop's checkpoint; the
    training-log entries since the previous evaluation travel with it (so that a metric is
    reported exactly once, together with the checkpoint that covers it). The end of the run
    becomes a final report whose checkpoint directory holds the artifacts.
    """

    def __init__(self, settings: TrialSettings, device: str, node_ip: str, node_id: str):
        self.settings = settings
        self.worker = dict(session=uuid.uuid4().hex[:12], device=device, node_ip=node_ip, node_id=node_id)
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
        metric = self.settings.metric
        value = final.get(schema.BEST_PREFIX + metric, self.last_metric)
        _write_final_dir(final_dir, result, final, _best_checkpoint_info(metric), self.last_step)
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


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: one training run, resumed from the last checkpoint."""
    import ray
    import ray.train

    settings = TrialSettings.from_dict(config["settings"])
    run_name = config["run_name"]
    cfg = trial_config(settings, config["overrides"], run_name)
    if not settings.use_gpu:
        import torch

        torch.set_num_threads(max(1, int(round(settings.cpus_per_worker))))
    callback = RayReportCallback(
        settings, "gpu" if settings.use_gpu else "cpu", ray.util.get_node_ip_address(),
        ray.get_runtime_context().get_node_id(),
    )
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


# ------------------------------------------------------------------------- trainer


def build_trainer(overrides: Mapping[str, Any], settings: TrialSettings, run_name: str, *, in_tune: bool = True):
    """The ``TorchTrainer`` of one trial (one worker; one GPU when ``settings.use_gpu``)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if settings.use_gpu:
        resources = {"GPU": 1}
        if settings.cpus_per_worker:
            resources["CPU"] = settings.cpus_per_worker
    else:
        resources = {"CPU": settings.cpus_per_worker}
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        train_worker,
        # One worker: the process group is never used for collectives. gloo also works
        # where NCCL does not (CPU-only torch on a node with a GPU, fake GPUs in tests).
        torch_config=TorchConfig(backend="gloo"),
        train_loop_config={"settings": settings.to_dict(), "overrides": dict(overrides), "run_name": run_name},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=settings.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=settings.train_storage_path,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=settings.keep_checkpoints,
                checkpoint_score_attribute=rp.KEY_SCORE,
                checkpoint_score_order=MODE,
            ),
            callbacks=callbacks,
        ),
    )


def run_trial(config: dict[str, Any], settings: dict[str, Any], to_overrides: Callable[[dict], dict]) -> None:
    """Tune function trainable: one Ray Train run named after the trial."""
    from ray import tune

    trial_settings = TrialSettings.from_dict(settings)
    run_name = schema.trial_run_name(trial_settings.sweep_name, tune.get_context().get_trial_id())
    for key, value in HEALTH_CHECK_ENV.items():
        os.environ.setdefault(key, value)
    build_trainer(to_overrides(config), trial_settings, run_name).fit()


def make_trainable(settings: TrialSettings, to_overrides: Callable[[dict], dict]):
    """``run_trial`` bound to the sweep: its settings, the strategy's translation of a Tune
    config into configuration overrides, and a fractional CPU."""
    from ray import tune

    fn = tune.with_parameters(run_trial, settings=settings.to_dict(), to_overrides=to_overrides)
    return tune.with_resources(fn, {"cpu": TRIAL_FN_CPUS})
