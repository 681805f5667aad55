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
  sweep's settings (``trainables.settings``: the composed base configuration, and how a
  trial's point becomes overrides) with a fractional CPU (a trial function holding a whole
  CPU deadlocks the worker group on a 2-CPU machine). Metrics reach Tune through
  ``ray.tune.integration.ray_train.TuneReportCallback``; only the Tune driver writes to
  MLflow (``trainables.mlflow_writer``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from trainables import report_protocol as rp
from trainables import tracking_schema as schema
from trainables.settings import TrialSettings

log = logging.getLogger(__name__)

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
# Ray's key-value store namespace of this project (a trial's recorded node set-up failure).
KV_NAMESPACE = "sevlm"


# -------------------------------------------------------------------------- worker


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop (``trainables.worker.run_worker``). Ray pickles this function
    by reference into the Ray Train controller too: importing the worker module (torch,
    sevlm) only inside keeps a few seconds of imports out of every trial's controller and
    Tune trial process."""
    from trainables.worker import run_worker

    run_worker(config)


# ------------------------------------------------------------------------- trainer


def build_trainer(point: Mapping[str, Any], settings: TrialSettings, run_name: str, *, in_tune: bool = True):
    """The Ray Train trainer of one trial (one worker; one GPU when ``settings.use_gpu``);
    ``point``: the trial's Tune config, which the worker composes onto the sweep's base.

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
        train_loop_config={"settings": settings.to_dict(), "point": dict(point), "run_name": run_name},
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


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train run named after the trial, at the point
    ``config``.

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
        build_trainer(config, trial_settings, run_name).fit()
    except Exception as exc:
        if not is_node_setup_failure(exc):
            raise
        message = setup_message(exc)
        internal_kv._internal_kv_put(key, message.encode(), namespace=KV_NAMESPACE)
        raise NodeSetupError(message) from None


def make_trainable(settings: TrialSettings):
    """``run_trial`` bound to the sweep's settings, with a fractional CPU."""
    from ray import tune

    fn = tune.with_parameters(run_trial, settings=settings.to_dict())
    return tune.with_resources(fn, {"cpu": TRIAL_FN_CPUS})
