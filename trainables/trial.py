"""One SEVLM training run as a Ray Train (V2) run inside a Ray Tune trial.

Layers, from the inside out:

* :func:`train_worker` runs on the one Ray Train worker (``trainables.worker``). It calls the training loop
  (``sevlm.training.loop.run_training``) with a :class:`RayReportCallback`, which reports
  every evaluation with the checkpoint the loop has just written, and at the end one
  *final* report whose checkpoint holds the run's artifacts (test predictions, samples
  with their images, where the best checkpoint is). A restarted worker resumes from
  ``ray.train.get_checkpoint()``. The reports are built by ``trainables.report_protocol``.
* :func:`build_trainer` builds the Ray Train trainer: one worker, one GPU when the cluster
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

import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from trainables import report_protocol as rp
from trainables import tracking_schema as schema

log = logging.getLogger(__name__)

DEFAULT_TRAINING_FN = "sevlm.training.loop:run_training"
# CPU held by the Tune trial function itself (it only waits on the Ray Train controller).
TRIAL_FN_CPUS = 0.1
# Every validation metric sevlm reports is higher-is-better (the loop keeps the checkpoint
# with the highest monitored value): Tune, ASHA, Optuna and Ray Train all get this mode.
MODE = "max"
# Ray Train settings for every trial, set where the trainer is built (the Tune trial
# process) and propagated by Ray Train to the controller and workers:
# - the controller checks its workers every 2 s by default, and a finished run waits for
#   the next check: about 1.5 s of every trial. Every 0.5 s costs milliseconds of CPU;
# - no preemption watcher (an actor per trial, polling for cloud spot-instance notices a
#   lab cluster never sends) and no Prometheus metrics callbacks (nothing scrapes them).
# Measured with a trial that trains nothing: 10.6 s per Ray Train run with Ray's defaults,
# 8.6 s with these, 5.4 s with the leaner trainer below as well.
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}
REPORTS_FILE = "sevlm_reports.json"  # the last reports, saved in each checkpoint
REPLAY_LENGTH = 8
# Files of the final checkpoint directory.
FINAL_MARKER = "sevlm_final.json"
FINAL_DIR_NAME = "sevlm_final"
# Ray's key-value store namespace of this project (a trial's recorded node set-up failure).
KV_NAMESPACE = "sevlm"


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
    gpus_per_worker: float = 1.0  # on GPU trials: 0.5 packs two trials on one GPU
    max_failures: int = 2  # worker failures retried by Ray Train, per trial attempt
    keep_checkpoints: int | None = 2  # best N by `metric` (the latest is always kept)
    output_root: str | None = None  # trials write to <output_root>/<run name>; default <storage>/<sweep>/outputs
    # A multi-node sweep's trials work on the node's local disk (scratch_root() there) and
    # send only their checkpoints and final files to the shared storage; the folder is
    # removed when the trial has finished.
    local_scratch: bool = False
    # "<dataset>:<absolute dir>" (sweeps' --heldout, sevlm.heldout.parse_heldout): the tested
    # checkpoint is also scored there, under schema.heldout_metric(...) in the final metrics.
    heldout: str | None = None
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
        """Where the trials write; read on the node that runs the trial."""
        if self.output_root:
            return self.output_root
        if self.local_scratch:
            return f"{scratch_root()}/{self.sweep_name}"
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}/outputs"


def scratch_root() -> str:
    """A node's local folder for trials' working files: $SEVLM_SCRATCH_DIR, else
    ~/.cache/sevlm-sweeps/trials."""
    return os.environ.get("SEVLM_SCRATCH_DIR") or os.path.expanduser("~/.cache/sevlm-sweeps/trials")


# ------------------------------------------------------------------------- configs


def trial_config(settings: TrialSettings, overrides: Mapping[str, Any], run_name: str | None = None):
    """The ``ExperimentConfig`` of one trial: preset, the sweep's fixed overrides, the
    trial's own overrides. Raises ValueError if the model cannot be built from it, or
    its pretrained weights cannot be loaded (checked here so that the sweep's driver stops
    before the first trial, with one message)."""
    from sevlm.config import apply_overrides, preset, validate
    from sevlm.model.weights import ensure_pretrained_available

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
    ensure_pretrained_available(cfg.model)
    return cfg


# -------------------------------------------------------------------------- worker


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop (``trainables.worker.run_worker``). Ray pickles this function
    by reference into the Ray Train controller too: importing the worker module (torch,
    sevlm) only inside keeps a few seconds of imports out of every trial's controller and
    Tune trial process."""
    from trainables.worker import run_worker

    run_worker(config)


# ------------------------------------------------------------------------- trainer


def build_trainer(overrides: Mapping[str, Any], settings: TrialSettings, run_name: str, *, in_tune: bool = True):
    """The Ray Train trainer of one trial (one worker; one GPU when ``settings.use_gpu``).

    A ``DataParallelTrainer`` (less two unused callbacks, :func:`_trainer_class`), not a
    ``TorchTrainer``: one worker needs no torch process group, and ``ray.train.torch`` would
    import torch into every trial's controller (about 2.5 s per trial measured here, and the
    group's set-up on top). Ray still gives the worker its GPU (``CUDA_VISIBLE_DEVICES``);
    the loop picks the device itself."""
    import ray.train

    for key, value in TRAIN_ENV.items():  # read here (metrics) and by the controller
        os.environ.setdefault(key, value)
    if settings.use_gpu:
        resources = {"GPU": settings.gpus_per_worker}
        if settings.cpus_per_worker:
            resources["CPU"] = settings.cpus_per_worker
    else:
        resources = {"CPU": settings.cpus_per_worker}
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return _trainer_class()(
        train_worker,
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


@functools.cache
def _trainer_class():
    """``DataParallelTrainer`` without two of Ray Train's default callbacks, each an actor
    process per trial: the Ray Datasets manager (a trial passes no Ray Dataset) and Ray's
    PlacementGroupCleaner (it needs the Ray State API, i.e. the dashboard, which is not
    installed; ``trainables.placement`` releases a stopped trial's workers instead). Both
    are internal names of the Ray version in constraints.txt: with another version that
    lacks them, Ray's own trainer is used."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from trainables.node_checks import no_retry_failure_policy

    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    except ImportError:
        return DataParallelTrainer
    unused = (DatasetsCallback, PlacementGroupCleanerCallback)

    class OneRunTrainer(DataParallelTrainer):
        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks() if not isinstance(cb, unused)]

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            # A node that cannot run the trial (no CUDA, a missing path) fails the same way
            # on every retry: Ray Train raises it at once instead.
            controller_init_kwargs["failure_policy"] = no_retry_failure_policy(self.run_config.failure_config)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return OneRunTrainer


def run_trial(config: dict[str, Any], settings: dict[str, Any], to_overrides: Callable[[dict], dict]) -> None:
    """Tune function trainable: one Ray Train run named after the trial.

    A node set-up failure (``trainables.node_checks``) is final: Tune would restart the
    trial (``--trial-retries``), and that restart raises the recorded failure again at
    once instead of training on the node that cannot run it."""
    from ray import tune
    from ray.experimental import internal_kv

    from trainables.node_checks import NodeSetupError, is_node_setup_failure, setup_message

    trial_settings = TrialSettings.from_dict(settings)
    run_name = schema.trial_run_name(trial_settings.sweep_name, tune.get_context().get_trial_id())
    key = f"{run_name}/node-setup-failure".encode()
    recorded = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    if recorded:
        raise NodeSetupError(recorded.decode() + "\n(recorded by this trial's first attempt: not retried)")
    try:
        build_trainer(to_overrides(config), trial_settings, run_name).fit()
    except Exception as exc:
        if not is_node_setup_failure(exc):
            raise
        message = setup_message(exc)
        internal_kv._internal_kv_put(key, message.encode(), namespace=KV_NAMESPACE)
        raise NodeSetupError(message) from None


def make_trainable(settings: TrialSettings, to_overrides: Callable[[dict], dict]):
    """``run_trial`` bound to the sweep: its settings, the strategy's translation of a Tune
    config into configuration overrides, and a fractional CPU."""
    from ray import tune

    fn = tune.with_parameters(run_trial, settings=settings.to_dict(), to_overrides=to_overrides)
    return tune.with_resources(fn, {"cpu": TRIAL_FN_CPUS})
