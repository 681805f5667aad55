"""One SEVLM training run as a Ray Train (V2) run inside a Ray Tune trial.

Layers, from the inside out:

* :func:`train_worker` runs on the one Ray Train worker. It calls
  ``sevlm.training.loop.run_training`` with a :class:`RayReportCallback`, which reports
  every evaluation to Ray Train with ``ray.train.report(metrics, checkpoint=...)``
  (the checkpoint the loop has just written), and at the end one *final* report whose
  checkpoint holds the run's artifacts (test predictions, samples with their images,
  where the best checkpoint is). A restarted worker resumes from
  ``ray.train.get_checkpoint()``.
* :func:`build_trainer` builds the ``TorchTrainer``: one worker, one GPU when the cluster
  has GPUs (CPU otherwise), ``ray.train.RunConfig(name=trial_run_name(...))`` so that a
  restarted trial (Tune retry, ``--resume``) finds its Ray Train run and checkpoints in
  storage again, ``FailureConfig(max_failures=...)`` for worker failures.
* :func:`run_trial` is the Tune function trainable; :func:`make_trainable` wraps it with
  the sweep settings and a fractional CPU (a trial function holding a whole CPU deadlocks
  the worker group on a 2-CPU machine). Metrics reach Tune through
  ``ray.tune.integration.ray_train.TuneReportCallback``; the Tune driver is the only
  process that writes to MLflow (``trainables.mlflow_tracking``).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sevlm.training.callbacks import TrainingCallback
from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

DEFAULT_TRAINING_FN = "sevlm.training.loop:run_training"
# CPU held by the Tune trial function itself (it only waits on the Ray Train controller).
TRIAL_FN_CPUS = 0.1

# ------------------------------------------------------------------ report protocol
# Keys of the dicts the worker reports (besides the metric names of tracking_schema).
KEY_STEP = "step"
KEY_FINAL = "sevlm_final"  # 1.0 on the final report (test metrics + artifacts)
KEY_IS_BEST = "sevlm_is_best"  # 1.0 when this evaluation is the best so far
KEY_START_STEP = "sevlm_start_step"  # step the current worker session started from
KEY_SESSION = "sevlm_session"  # id of the worker session (changes on every restart)
KEY_CONFIG = "sevlm_config"  # JSON of the flattened config (first report of a session)
KEY_TRAIN_LOG = "sevlm_train_log"  # JSON [[step, {metric: value}], ...] since last report
KEY_SCORE = "sevlm_score"  # checkpoint score (Ray Train keeps the best checkpoints)
KEY_STOPPED_EARLY = "sevlm_stopped_early"
KEY_NODE_IP = "sevlm_node_ip"
KEY_NODE_ID = "sevlm_node_id"
KEY_DEVICE = "sevlm_device"
KEY_FINAL_DIR = "sevlm_final_dir"  # persisted final checkpoint, when re-reported
KEY_FINAL_KEYS = "sevlm_final_keys"  # JSON list: which keys of the final report are final metrics
# JSON list of the reports before the restored checkpoint (at most REPLAY_LENGTH), sent
# again by a resumed worker: a report persisted by Ray Train but never seen by the Tune
# driver (sweep interrupted right after it) still reaches MLflow.
KEY_REPLAY = "sevlm_replay"
REPORTS_FILE = "sevlm_reports.json"
REPLAY_LENGTH = 8
CHECKPOINT_PATH_KEY = "checkpoint_path"  # added by TuneReportCallback
REGISTRY_PREFIX = "sevlm_pg_registry_"  # + sweep name: see PlacementGroupReaper
# Files of the final checkpoint directory.
FINAL_MARKER = "sevlm_final.json"
FINAL_DIR_NAME = "sevlm_final"


@dataclass
class TrialSettings:
    """Everything a trial needs besides its sampled parameters (same for all trials)."""

    sweep_name: str
    storage_path: str  # Tune storage root (absolute path or URI)
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed dotted-key overrides
    metric: str = "val/bleu4"
    mode: str = "max"
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


def normalize_trial_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the search-space invariants to a trial's sampled parameters.

    With both negative-sample switches off there is nothing to contrast: the model refuses
    ``use_contrastive=True`` then, so such a point means "no contrastive loss" (and
    ``model.alpha`` has no effect).
    """
    out = dict(params)
    wrong = out.get("model.neg_wrong_emotion")
    other = out.get("model.neg_other_image")
    if wrong is False and other is False:
        out["model.use_contrastive"] = False
    return out


def trial_config(settings: TrialSettings, params: Mapping[str, Any], run_name: str | None = None):
    """The ``ExperimentConfig`` of one trial: preset, fixed overrides, sampled params."""
    from sevlm.config import apply_overrides, preset

    cfg = preset(settings.preset)
    cfg = apply_overrides(cfg, dict(settings.overrides))
    params = normalize_trial_params(params)
    cfg = apply_overrides(cfg, params)
    if cfg.model.use_contrastive and not (cfg.model.neg_wrong_emotion or cfg.model.neg_other_image):
        cfg.model.use_contrastive = False
    extra: dict[str, Any] = {}
    if settings.metric.startswith(schema.VAL_PREFIX) and "train.monitor_metric" not in settings.overrides:
        # The loop keeps (and tests) the checkpoint that is best by the sweep's metric.
        extra["train.monitor_metric"] = settings.metric
    if run_name is not None:
        # every trial writes into its own directory (a --set output_dir=... is the root)
        extra["output_dir"] = f"{settings.outputs_path}/{run_name}"
    if extra:
        cfg = apply_overrides(cfg, _known_only(cfg, extra))
    return cfg


def _known_only(cfg, overrides: dict[str, Any]) -> dict[str, Any]:
    from sevlm.config import to_flat_dict

    known = to_flat_dict(cfg)
    return {k: v for k, v in overrides.items() if k in known}


def flat_trial_config(settings: TrialSettings, params: Mapping[str, Any], run_name: str | None = None) -> dict[str, Any]:
    from sevlm.config import to_flat_dict

    return to_flat_dict(trial_config(settings, params, run_name))


def resolve_training_fn(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "run_training")


# -------------------------------------------------------------------------- worker


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def _score(value: float | None, mode: str) -> float:
    """Checkpoint score: the metric, or the worst possible value (final/unscored)."""
    worst = -1e30 if mode == "max" else 1e30
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return worst
    return float(value)


class RayReportCallback(TrainingCallback):
    """Forwards one ``run_training`` call to Ray Train.

    Every evaluation becomes one ``ray.train.report`` with the loop's checkpoint; the
    training-log entries since the previous evaluation travel with it (so that a metric is
    reported exactly once, together with the checkpoint that covers it). The end of the run
    becomes a final report whose checkpoint directory holds the artifacts.
    """

    def __init__(self, settings: TrialSettings, device: str, node_ip: str, node_id: str = ""):
        self.settings = settings
        self.session = uuid.uuid4().hex[:12]
        self.device = device
        self.node_ip = node_ip
        self.node_id = node_id
        self.config_json: str | None = None
        self.start_step = 0
        self.last_step = 0
        self.train_log: list[list[Any]] = []
        self.sent_config = False
        self.last_epoch = 0.0
        self.last_metric: float | None = None
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
        record = {k: v for k, v in report.items() if k not in (KEY_REPLAY, KEY_CONFIG)}
        self.recent = (self.recent + [record])[-REPLAY_LENGTH:]
        (Path(directory) / REPORTS_FILE).write_text(json.dumps(self.recent))

    # -- hooks
    def on_train_start(self, config_flat: dict, start_step: int) -> None:
        self.config_json = json.dumps(config_flat, default=str, sort_keys=True)
        self.start_step = int(start_step)
        self.last_step = int(start_step)

    def on_train_log(self, step: int, metrics: dict[str, float]) -> None:
        self.train_log.append([int(step), _numeric(metrics)])

    def _common(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            KEY_STEP: int(step),
            KEY_START_STEP: self.start_step,
            KEY_SESSION: self.session,
            KEY_NODE_IP: self.node_ip,
            KEY_NODE_ID: self.node_id,
            KEY_DEVICE: self.device,
            KEY_TRAIN_LOG: json.dumps(self.train_log),
        }
        if not self.sent_config and self.config_json is not None:
            out[KEY_CONFIG] = self.config_json
        if self.replay:
            out[KEY_REPLAY] = json.dumps(self.replay)
        return out

    def _sent(self) -> None:
        self.sent_config = True
        self.train_log = []
        self.replay = []

    def on_evaluation(self, event) -> None:
        import ray.train

        metrics = _numeric(event.metrics)
        report = {
            **metrics,
            **self._common(event.step),
            KEY_FINAL: 0.0,
            KEY_IS_BEST: float(bool(event.is_best)),
            KEY_SCORE: _score(metrics.get(self.settings.metric), self.settings.mode),
        }
        report.setdefault(schema.EPOCH_METRIC, float(event.epoch))
        self.last_epoch = float(report[schema.EPOCH_METRIC])
        self.last_metric = metrics.get(self.settings.metric)
        self._remember(report, event.checkpoint_dir)
        checkpoint = ray.train.Checkpoint.from_directory(str(event.checkpoint_dir))
        ray.train.report(
            report, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{event.step:08d}"
        )
        self.last_step = int(event.step)
        self._sent()

    def on_train_end(self, result) -> None:
        import ray.train

        final_dir = Path(result.output_dir) / FINAL_DIR_NAME
        final = _numeric(result.final_metrics)
        best = _best_checkpoint_info(self.settings)
        _write_final_dir(final_dir, result, final, best, self.config_json, self.last_step)
        metric = self.settings.metric
        value = final.get(schema.BEST_PREFIX + metric, final.get(metric))
        report = {
            **final,
            **self._common(self.last_step),
            KEY_FINAL: 1.0,
            KEY_FINAL_KEYS: json.dumps(sorted(final)),
            KEY_IS_BEST: 0.0,
            KEY_STOPPED_EARLY: float(bool(result.stopped_early)),
            KEY_SCORE: _score(None, self.settings.mode),
        }
        report.setdefault(schema.EPOCH_METRIC, self.last_epoch)
        if value is None:
            value = self.last_metric if self.last_metric is not None else float("nan")
        # Searcher and schedulers read `metric` from every result: the final result carries
        # the trial's best value, the one of the checkpoint that was tested.
        report[metric] = float(value)
        self._remember(report, final_dir)
        ray.train.report(
            report,
            checkpoint=ray.train.Checkpoint.from_directory(str(final_dir)),
            checkpoint_dir_name=FINAL_DIR_NAME,
        )
        self._sent()



def _best_checkpoint_info(settings: TrialSettings) -> dict[str, Any]:
    """Where Ray Train stored the best evaluation checkpoint of this run (so far)."""
    import ray.train

    try:
        reported = ray.train.get_all_reported_checkpoints(timeout_s=60)
    except Exception as exc:  # noqa: BLE001 - informative only
        log.warning("could not list reported checkpoints: %s", exc)
        return {}
    best = None
    for rc in reported:
        m = rc.metrics or {}
        if m.get(KEY_FINAL) == 1.0 or m.get(KEY_SCORE) is None:
            continue
        score = m.get(KEY_SCORE)
        if best is None or (score > best[0] if settings.mode == "max" else score < best[0]):
            best = (score, rc)
    if best is None:
        return {}
    rc = best[1]
    return {
        "path": rc.checkpoint.path,
        "step": rc.metrics.get(KEY_STEP),
        "metric": settings.metric,
        "value": rc.metrics.get(settings.metric),
    }


def _write_final_dir(final_dir: Path, result, final: dict, best: dict, config_json: str | None,
                     step: int) -> None:
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
        source = samples if samples.is_dir() else samples.parent
        shutil.copytree(source, final_dir / schema.ARTIFACT_SAMPLES_DIR)
    if result.best_checkpoint_dir is not None:
        best = {**best, "local_path": str(result.best_checkpoint_dir)}
    (final_dir / schema.ARTIFACT_BEST_CHECKPOINT).write_text(json.dumps(best, indent=2, default=str))
    (final_dir / schema.ARTIFACT_FINAL_METRICS).write_text(json.dumps(final, indent=2))
    if config_json is not None:
        (final_dir / schema.ARTIFACT_CONFIG).write_text(config_json)
    marker = {"final_metrics": final, "stopped_early": bool(result.stopped_early), "step": step}
    (final_dir / FINAL_MARKER).write_text(json.dumps(marker))


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: one ``run_training`` call, resumed from the last checkpoint."""
    import ray
    import ray.train

    settings = TrialSettings.from_dict(config["settings"])
    run_name = config["run_name"]
    cfg = trial_config(settings, config["params"], run_name)
    device = "gpu" if settings.use_gpu else "cpu"
    if not settings.use_gpu:
        import torch

        torch.set_num_threads(max(1, int(round(settings.cpus_per_worker))))
    node_ip = ray.util.get_node_ip_address()
    node_id = ray.get_runtime_context().get_node_id()
    callback = RayReportCallback(settings, device, node_ip, node_id)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        out = Path(cfg.output_dir)
        local = out / "restored_checkpoint"
        if local.exists():
            shutil.rmtree(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.to_directory(str(local))
        callback.restore_reports(local)
        marker = local / FINAL_MARKER
        if marker.is_file():
            # The run had already finished: report its final result again, no training.
            data = json.loads(marker.read_text())
            report = {
                **data["final_metrics"],
                KEY_FINAL: 1.0,
                KEY_FINAL_KEYS: json.dumps(sorted(data["final_metrics"])),
                KEY_STEP: int(data.get("step", 0)),
                KEY_STOPPED_EARLY: float(bool(data.get("stopped_early"))),
                KEY_FINAL_DIR: checkpoint.path,
                KEY_SESSION: callback.session,
                KEY_SCORE: _score(None, settings.mode),
                KEY_REPLAY: json.dumps(callback.replay),
            }
            best = data["final_metrics"].get(schema.BEST_PREFIX + settings.metric)
            if best is not None:
                report[settings.metric] = best
            ray.train.report(report)
            return
        resume_from = local
        log.info("resuming %s from %s", run_name, checkpoint.path)

    register_placement_group(settings.sweep_name, run_name)
    run_training = resolve_training_fn(settings.training_fn)
    run_training(cfg, [callback], resume_from=resume_from)


# ------------------------------------------------------------------------- trainer


def build_trainer(params: Mapping[str, Any], settings: TrialSettings, run_name: str, *, in_tune: bool = True):
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
    checkpoint_config = ray.train.CheckpointConfig(
        num_to_keep=settings.keep_checkpoints,
        checkpoint_score_attribute=KEY_SCORE,
        checkpoint_score_order=settings.mode,
    )
    return TorchTrainer(
        train_worker,
        # One worker: the process group is never used for collectives. gloo also works
        # where NCCL does not (CPU-only torch on a node with a GPU, fake GPUs in tests).
        torch_config=TorchConfig(backend="gloo"),
        train_loop_config={
            "settings": settings.to_dict(),
            "params": dict(params),
            "run_name": run_name,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=settings.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=settings.train_storage_path,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=checkpoint_config,
            callbacks=callbacks,
        ),
    )


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train run named after the trial."""
    from ray import tune

    trial_settings = TrialSettings.from_dict(settings)
    trial_id = tune.get_context().get_trial_id()
    run_name = schema.trial_run_name(trial_settings.sweep_name, trial_id)
    trainer = build_trainer(config, trial_settings, run_name)
    trainer.fit()


# ---------------------------------------------------------- placement-group cleanup
#
# Ray Train V2 reserves the workers of a run in a placement group that belongs to the job,
# not to the Train controller. When Tune stops a trial (ASHA) or a trial's actor dies, the
# controller dies with it and the group would stay reserved until the sweep ends: the
# next trials wait for its CPU/GPU forever. Ray's own PlacementGroupCleaner needs the Ray
# State API, i.e. the dashboard, which this environment cannot start (ray[default] is not
# installed). So the workers register their placement group with a registry actor owned
# by the Tune driver, and the driver releases a trial's groups when the trial ends or is
# restarted (PlacementGroupReaper).


class PlacementGroupRegistry:
    """Actor (owned by the Tune driver): placement groups of each trial's Ray Train run."""

    def __init__(self):
        self._groups: dict[str, list] = {}

    def register(self, run_name: str, placement_group) -> None:
        self._groups.setdefault(run_name, []).append(placement_group)

    def release(self, run_name: str) -> int:
        from ray.util.placement_group import placement_group_table, remove_placement_group

        removed = 0
        for pg in self._groups.pop(run_name, []):
            try:
                if placement_group_table(pg).get("state") != "REMOVED":
                    remove_placement_group(pg)
                    removed += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("could not remove placement group %s: %s", pg.id.hex(), exc)
        return removed


def registry_name(sweep_name: str) -> str:
    return REGISTRY_PREFIX + sweep_name


def register_placement_group(sweep_name: str, run_name: str) -> None:
    """Called on the training worker: tell the driver's registry which group it runs in."""
    import ray
    from ray.util.placement_group import get_current_placement_group

    try:
        pg = get_current_placement_group()
        if pg is None:
            return
        registry = ray.get_actor(registry_name(sweep_name))
        ray.get(registry.register.remote(run_name, pg), timeout=60)
    except Exception as exc:  # noqa: BLE001 - no registry (e.g. not run by a sweep)
        log.info("placement group not registered: %s", exc)


class PlacementGroupReaper(Callback):
    """Tune callback (driver): releases a trial's Ray Train placement groups when the trial
    completes, fails, is stopped by the scheduler or is restarted."""

    def __init__(self, sweep_name: str):
        self.sweep_name = sweep_name
        self._registry = None

    def __getstate__(self):
        return {"sweep_name": self.sweep_name}

    def __setstate__(self, state):
        self.sweep_name = state["sweep_name"]
        self._registry = None

    def setup(self, **info):
        import ray

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: it lives and dies with the sweep, not with a worker node.
        self._registry = ray.remote(num_cpus=0)(PlacementGroupRegistry).options(
            name=registry_name(self.sweep_name),
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=True
            ),
        ).remote()

    def _release(self, trial) -> None:
        import ray

        if self._registry is None:
            return
        try:
            removed = ray.get(
                self._registry.release.remote(schema.trial_run_name(self.sweep_name, trial.trial_id)),
                timeout=60,
            )
            if removed:
                log.info("released %d placement group(s) of trial %s", removed, trial.trial_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not release the placement groups of %s: %s", trial.trial_id, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_experiment_end(self, trials, **info):
        import ray

        for trial in trials:
            self._release(trial)
        if self._registry is not None:
            ray.kill(self._registry)
            self._registry = None


def trial_resources(settings: TrialSettings) -> dict[str, float]:
    """Resources of the Tune trial function itself (the training worker asks for its own)."""
    return {"cpu": TRIAL_FN_CPUS}


def make_trainable(settings: TrialSettings):
    """``run_trial`` bound to the sweep settings, with a fractional CPU."""
    from ray import tune

    fn = tune.with_parameters(run_trial, settings=settings.to_dict())
    return tune.with_resources(fn, trial_resources(settings))

