"""Every name the sweeps write to MLflow, in one place (read by ``analysis/``).

This module imports nothing (not even the standard library) so that any tool can read it.

Layout of one sweep in MLflow
-----------------------------
* One MLflow *experiment* per sweep family (default :data:`DEFAULT_EXPERIMENT`).
* One *parent run* per sweep (tag :data:`TAG_ROLE` = :data:`ROLE_PARENT`). A sweep that is
  resumed with ``--resume`` continues its parent run (:data:`TAG_RESUME_COUNT` counts the
  resumptions) instead of starting a second one.
* One nested *child run* per Tune trial (tag :data:`TAG_ROLE` = :data:`ROLE_TRIAL`, MLflow's
  own ``mlflow.parentRunId`` tag = the parent's run id). Its name is
  :func:`trial_run_name` (deterministic per trial), also stored in :data:`TAG_TRIAL_NAME`;
  a retried, restarted or resumed trial finds this run again and continues it.

Params of a trial run: the full flattened ``sevlm.config.ExperimentConfig`` with its dotted
keys (``model.alpha``, ``train.lr_decoder``, ``seed``, ``preset``, ...) plus
:data:`PARAM_DATA_FINGERPRINT` and :data:`PARAM_CODE_VERSION`. Params of the parent run:
the sweep settings under :data:`PARENT_PARAM_PREFIX`.

Metrics of a trial run, logged with ``step`` = the optimizer step of the evaluation:
:data:`TRAIN_LOSS_METRICS`, :data:`THROUGHPUT_METRIC`, :data:`PEAK_MEMORY_METRIC`,
:data:`EPOCH_METRIC` and the ``val/...`` metrics (:data:`VAL_METRICS`) once per
evaluation; the finer training curve every ``train.log_every_steps`` steps under
:data:`TRAIN_STEP_PREFIX`; the final ``test/...`` metrics (:data:`TEST_METRICS`) and
:data:`BEST_STEP_METRIC` once at the end, at the last step.

Artifacts of a trial run: :data:`ARTIFACT_PREDICTIONS_TEST`, :data:`ARTIFACT_SAMPLES_DIR`
(``samples.json`` and the images it names), :data:`ARTIFACT_BEST_CHECKPOINT` (a JSON file
saying where the best checkpoint is stored), :data:`ARTIFACT_FINAL_METRICS`.
"""

SCHEMA_VERSION = "1"

DEFAULT_EXPERIMENT = "sevlm-sweeps"

# ---------------------------------------------------------------------------- tags
TAG_PREFIX = "sevlm."
TAG_SCHEMA_VERSION = "sevlm.schema_version"
TAG_ROLE = "sevlm.role"
ROLE_PARENT = "parent"
ROLE_TRIAL = "trial"

TAG_SWEEP_NAME = "sevlm.sweep_name"  # Tune experiment name; on parent and trials
TAG_SWEEP_KIND = "sevlm.sweep_kind"  # "alpha_search", "ablation", ...
TAG_SWEEP_PATH = "sevlm.sweep_path"  # Tune experiment directory (for --resume)
TAG_METRIC = "sevlm.metric"  # the metric the sweep optimises (parent and trials)
TAG_MODE = "sevlm.mode"  # "max" or "min"
TAG_SEARCH_SPACE = "sevlm.search_space"  # JSON {param: spec}; parent
TAG_RESUME_COUNT = "sevlm.resume_count"  # parent: how often the sweep was resumed
TAG_TRIAL_ID = "sevlm.trial_id"  # Tune trial id
TAG_TRIAL_NAME = "sevlm.trial_name"  # deterministic run name = Ray Train run name
TAG_TRIAL_INDEX = "sevlm.trial_index"  # 0, 1, ... in order of creation
TAG_IS_PAPER_CONFIG = "sevlm.is_paper_config"  # "true" for the paper's configuration
TAG_TRIAL_STARTS = "sevlm.trial_starts"  # how often the Tune trial was (re)started
TAG_WORKER_STARTS = "sevlm.worker_starts"  # how often a training worker (re)started
TAG_RESUMED_FROM_STEP = "sevlm.resumed_from_step"  # last resume: checkpoint step
TAG_END_REASON = "sevlm.end_reason"  # see END_* below
TAG_ERROR = "sevlm.error"  # short error message of a failed trial
TAG_BEST_CHECKPOINT = "sevlm.best_checkpoint"  # storage path of the best checkpoint
TAG_BEST_STEP = "sevlm.best_step"
TAG_NODE_IP = "sevlm.node_ip"  # node of the latest training worker
TAG_NODE_ID = "sevlm.node_id"  # Ray node id of the latest training worker
TAG_NODE_IDS = "sevlm.node_ids"  # every Ray node a training worker of the trial ran on
TAG_DEVICE = "sevlm.device"  # "cpu" or "gpu"
TAG_TRIALS_TOTAL = "sevlm.trials_total"  # parent, at the end
TAG_TRIALS_FINISHED = "sevlm.trials_finished"
TAG_TRIALS_FAILED = "sevlm.trials_failed"
TAG_TRIALS_KILLED = "sevlm.trials_killed"
TAG_BEST_TRIAL_ID = "sevlm.best_trial_id"  # parent, at the end
TAG_BEST_RUN_ID = "sevlm.best_run_id"

# MLflow's own tags that the sweeps set.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"

# Values of TAG_END_REASON.
END_COMPLETED = "completed"  # trained and tested (MLflow status FINISHED)
END_EARLY_STOPPED = "early_stopped"  # the loop's own patience stopped it; tested; FINISHED
END_PRUNED = "pruned"  # the sweep's scheduler (ASHA) stopped it; KILLED
END_INTERRUPTED = "interrupted"  # the sweep was interrupted; KILLED (resumable)
END_FAILED = "failed"  # out of retries; FAILED

# Values of an MLflow run's status.
STATUS_RUNNING = "RUNNING"
STATUS_FINISHED = "FINISHED"
STATUS_FAILED = "FAILED"
STATUS_KILLED = "KILLED"

# -------------------------------------------------------------------------- params
# Trial runs: every key of sevlm.config.to_flat_dict(cfg), unchanged, plus these two.
PARAM_DATA_FINGERPRINT = "data.fingerprint"
PARAM_CODE_VERSION = "code_version"
PARAM_SEED = "seed"
PARAM_PRESET = "preset"
# Searched parameters (the alpha search); their values are the trial's params above.
SEARCH_PARAMS = (
    "model.alpha",
    "train.lr_decoder",
    "train.lr_vad",
    "model.emotion_encoder_layers",
    "model.neg_wrong_emotion",
    "model.neg_other_image",
)
# Parent runs: "sweep.<setting>" (num_trials, concurrency, metric, mode, scheduler, ...),
# "sweep.space.<param>" (the search-space spec of a parameter) and
# "sweep.set.<config key>" (a fixed override applied to every trial).
PARENT_PARAM_PREFIX = "sweep."
PARENT_SPACE_PREFIX = "sweep.space."
PARENT_OVERRIDE_PREFIX = "sweep.set."

# ------------------------------------------------------------------------- metrics
TRAIN_LOSS_METRICS = (
    "train/loss",
    "train/loss_language",
    "train/loss_emotion",
    "train/loss_contrastive",
)
THROUGHPUT_METRIC = "train/samples_per_s"
PEAK_MEMORY_METRIC = "train/peak_memory_mb"  # GPU memory on GPU, process RSS on CPU
EPOCH_METRIC = "epoch"
# Step a training worker started from, logged at that step each time one (re)starts:
# [0] for an uninterrupted run, [0, 40] for one resumed from its step-40 checkpoint.
WORKER_START_METRIC = "worker/start_step"
# The finer training curve (every train.log_every_steps steps): "train_step/loss", ...
TRAIN_STEP_PREFIX = "train_step/"
EVAL_METRIC_NAMES = (
    "acc",
    "ea",
    "bleu1",
    "bleu2",
    "bleu3",
    "bleu4",
    "meteor",
    "rouge_l",
    "cider",
    "unique",
    "paintings",
)
VAL_PREFIX = "val/"
TEST_PREFIX = "test/"
VAL_METRICS = tuple(VAL_PREFIX + m for m in EVAL_METRIC_NAMES)
TEST_METRICS = tuple(TEST_PREFIX + m for m in EVAL_METRIC_NAMES)
BEST_STEP_METRIC = "best_step"
BEST_PREFIX = "best_"  # "best_val/bleu4": best value of the loop's monitored metric
# Metrics a sweep may optimise ("val/paintings" is a count, not a score).
OPTIMIZABLE_METRICS = tuple(m for m in VAL_METRICS if m != "val/paintings")
# Parent run, at the end: the best trial's value of the optimised metric.
PARENT_BEST_METRIC_PREFIX = "best_trial/"

# ----------------------------------------------------------------------- artifacts
# Trial runs
ARTIFACT_PREDICTIONS_DIR = "predictions"
ARTIFACT_PREDICTIONS_TEST = "predictions/test.csv"
ARTIFACT_SAMPLES_DIR = "samples"  # samples.json + the images it names
ARTIFACT_SAMPLES_FILE = "samples/samples.json"
ARTIFACT_BEST_CHECKPOINT = "best_checkpoint.json"  # {"path", "step", "metric", "value"}
ARTIFACT_FINAL_METRICS = "final_metrics.json"
ARTIFACT_CONFIG = "config.json"  # the flattened configuration, as JSON
# Parent runs
ARTIFACT_SWEEP_SPEC = "sweep/spec.json"  # every setting of the sweep (for --resume too)
ARTIFACT_SWEEP_RESULTS = "sweep/results.csv"  # one row per trial: config + metrics
ARTIFACT_SWEEP_BEST = "sweep/best.json"  # the best trial: config, metrics, run id


def trial_run_name(sweep_name, trial_id):
    """The MLflow run name and Ray Train run name of a trial: deterministic per trial."""
    return str(sweep_name) + "_" + str(trial_id)


def search_filter_trial(sweep_name, trial_id):
    """MLflow ``filter_string`` that finds the run of one trial."""
    return (
        "tags.`" + TAG_SWEEP_NAME + "` = '" + str(sweep_name) + "' and tags.`"
        + TAG_TRIAL_ID + "` = '" + str(trial_id) + "'"
    )


def search_filter_parent(sweep_name):
    """MLflow ``filter_string`` that finds the parent run of a sweep."""
    return (
        "tags.`" + TAG_SWEEP_NAME + "` = '" + str(sweep_name) + "' and tags.`"
        + TAG_ROLE + "` = '" + ROLE_PARENT + "'"
    )


def search_filter_trials(sweep_name):
    """MLflow ``filter_string`` that finds every trial run of a sweep."""
    return (
        "tags.`" + TAG_SWEEP_NAME + "` = '" + str(sweep_name) + "' and tags.`"
        + TAG_ROLE + "` = '" + ROLE_TRIAL + "'"
    )
