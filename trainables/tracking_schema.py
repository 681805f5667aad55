"""Every name the sweeps write to MLflow, in one place (read by ``analysis/``).

This module imports only :mod:`sevlm.names` (plain strings, no torch): the names that sevlm
itself reports under (its metric lists, the EA classifier's param, the data report's params
and file) are sevlm's, used here as they are. Any tool can read it without torch or Ray.

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
* What the UI shows first (:data:`MLFLOW_NOTE`): the experiment's description says how its
  runs are organised, a parent run's holds the sweep's results table; links to the UI carry
  :data:`UI_WORKFLOW_QUERY`.

Params of a trial run: the full flattened ``sevlm.config.ExperimentConfig`` with its dotted
keys (``model.alpha``, ``train.lr_decoder``, ``seed``, ``preset``, ...) plus
:data:`PARAM_DATA_FINGERPRINT`, :data:`PARAM_CODE_VERSION`, :data:`PARAM_EA_CLASSIFIER` and the
load report's counts under :data:`PARAM_DATA_REPORT_PREFIX`. Params of the parent run:
the sweep settings under :data:`PARENT_PARAM_PREFIX`.

Metrics of a trial run, logged with ``step`` = the optimizer step of the evaluation:
the ``train/...`` losses, :data:`THROUGHPUT_METRIC`, :data:`PEAK_MEMORY_METRIC`,
:data:`EPOCH_METRIC` and the ``val/...`` metrics (:data:`VAL_METRICS`) once per
evaluation; the finer training curve every ``train.log_every_steps`` steps under
:data:`TRAIN_STEP_PREFIX`; the final ``test/...`` metrics (:data:`TEST_METRICS`) and
:data:`BEST_STEP_METRIC` once at the end, at the last step.

Artifacts of a trial run: :data:`ARTIFACT_PREDICTIONS_TEST`, :data:`ARTIFACT_DATA_REPORT`,
:data:`ARTIFACT_SAMPLES_DIR`
(``samples.json`` and the images it names), :data:`ARTIFACT_BEST_CHECKPOINT` (a JSON file
saying where the best checkpoint is stored), :data:`ARTIFACT_FINAL_METRICS`.
"""

from sevlm.names import (
    DATA_REPORT_FILE,
    DATA_REPORT_PARAM_PREFIX,
    EA_CLASSIFIER_PARAM,
    EVAL_METRIC_NAMES,
)

SCHEMA_VERSION = "1"

DEFAULT_EXPERIMENT = "sevlm-sweeps"

# ---------------------------------------------------------------------------- tags
TAG_SCHEMA_VERSION = "sevlm.schema_version"
TAG_ROLE = "sevlm.role"
ROLE_PARENT = "parent"
ROLE_TRIAL = "trial"

TAG_SWEEP_NAME = "sevlm.sweep_name"  # Tune experiment name; on parent and trials
TAG_SWEEP_KIND = "sevlm.sweep_kind"  # "alpha_search", "ablations" (the script's name)
TAG_SWEEP_PATH = "sevlm.sweep_path"  # Tune experiment directory (for --resume)
TAG_METRIC = "sevlm.metric"  # the metric the sweep optimises, higher is better (parent and trials)
TAG_SEARCH_SPACE = "sevlm.search_space"  # JSON {param: spec}; parent of an alpha search
TAG_GRID = "sevlm.grid"  # JSON {"variants": {name: overrides}, "seeds": [...]}; parent of an ablation sweep
TAG_RESUME_COUNT = "sevlm.resume_count"  # parent: how often the sweep was resumed
TAG_TRIAL_ID = "sevlm.trial_id"  # Tune trial id
TAG_TRIAL_NAME = "sevlm.trial_name"  # deterministic run name = Ray Train run name
TAG_TRIAL_INDEX = "sevlm.trial_index"  # 0, 1, ... in order of creation
TAG_IS_PAPER_CONFIG = "sevlm.is_paper_config"  # alpha search: "true" for the paper's configuration
TAG_VARIANT = "sevlm.variant"  # ablation sweep: the variant's name (sevlm.variants.VARIANTS)
TAG_SEED = "sevlm.seed"  # ablation sweep: the trial's seed (also the param "seed")
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
TAG_DEVICE = "sevlm.device"  # "cpu" or "cuda": the device torch of the latest training worker used
TAG_GPU_NAME = "sevlm.gpu_name"  # its GPU (torch.cuda.get_device_name), on GPU trials
TAG_TRIALS_TOTAL = "sevlm.trials_total"  # parent, at the end
TAG_TRIALS_FINISHED = "sevlm.trials_finished"
TAG_TRIALS_FAILED = "sevlm.trials_failed"
TAG_TRIALS_KILLED = "sevlm.trials_killed"
TAG_BEST_TRIAL_ID = "sevlm.best_trial_id"  # parent, at the end
TAG_BEST_RUN_ID = "sevlm.best_run_id"

# MLflow's own tag that nests a trial run under its parent.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
# MLflow's own tag that the UI shows as the description of an experiment or a run
# (markdown): the experiment's says how its runs are organised, a parent run's holds the
# sweep's results table (trainables/mlflow_notes.py writes both).
MLFLOW_NOTE = "mlflow.note.content"
# The query of a UI link that opens MLflow 3's "Model training" view (runs, not traces).
UI_WORKFLOW_QUERY = "workflowType=machine_learning"

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
# Trial runs: every key of sevlm.config.to_flat_dict(cfg), unchanged ("seed", "preset",
# "model.alpha", ...), plus these.
PARAM_DATA_FINGERPRINT = "data.fingerprint"
PARAM_CODE_VERSION = "code_version"
# Also on trial runs: the EA classifier's identity (runs compared on EA must share it) and
# every count of the data load report under this prefix ("data.report.rows_kept",
# "data.report.skipped.too_long", "data.report.note.<name>", ...): sevlm's own names.
PARAM_EA_CLASSIFIER = EA_CLASSIFIER_PARAM
PARAM_DATA_REPORT_PREFIX = DATA_REPORT_PARAM_PREFIX
# Parent runs: "sweep.<setting>" (kind, strategy, num_trials, concurrency, metric, ...; an
# alpha search adds its searcher and scheduler settings, an ablation sweep "sweep.variants"
# and "sweep.seeds"), "sweep.space.<param>" (alpha search: the search-space spec of a
# parameter) and
# "sweep.set.<config key>" (a fixed override applied to every trial).
PARENT_PARAM_PREFIX = "sweep."
PARENT_SPACE_PREFIX = "sweep.space."
PARENT_OVERRIDE_PREFIX = "sweep.set."

# ------------------------------------------------------------------------- metrics
# Training losses: every "train/..." value the loop reports (train/loss, train/loss_language,
# ...), once per evaluation.
THROUGHPUT_METRIC = "train/samples_per_s"
PEAK_MEMORY_METRIC = "train/peak_memory_mb"  # GPU memory on GPU, process RSS on CPU
EPOCH_METRIC = "epoch"
# Step a training worker started from, logged at that step each time one (re)starts:
# [0] for an uninterrupted run, [0, 40] for one resumed from its step-40 checkpoint.
WORKER_START_METRIC = "worker/start_step"
# The finer training curve (every train.log_every_steps steps): "train_step/loss", ...
TRAIN_STEP_PREFIX = "train_step/"
# Every evaluation reports "<split>/<name>" for each name of sevlm's own list
# (sevlm.names.EVAL_METRIC_NAMES, imported above).
VAL_PREFIX = "val/"
TEST_PREFIX = "test/"
COUNT_METRIC = "paintings"  # a count, not a score
# Never optimised: the count, the non-word and no-emotion rates (lower is better, but the
# training loop and the sweeps keep the highest value of the metric they monitor).
NOT_OPTIMIZABLE = (COUNT_METRIC, "nonword_rate", "no_emotion_rate")
VAL_METRICS = tuple(VAL_PREFIX + m for m in EVAL_METRIC_NAMES)
TEST_METRICS = tuple(TEST_PREFIX + m for m in EVAL_METRIC_NAMES)
# Metrics a sweep may optimise.
OPTIMIZABLE_METRICS = tuple(VAL_PREFIX + m for m in EVAL_METRIC_NAMES if m not in NOT_OPTIMIZABLE)
BEST_STEP_METRIC = "best_step"
BEST_PREFIX = "best_"  # "best_val/bleu4": best value of the loop's monitored metric
# Parent run, at the end: the best trial's value of the optimised metric.
PARENT_BEST_METRIC_PREFIX = "best_trial/"
# A sweep's --heldout <dataset>:<dir>: the tested checkpoint's held-out scores, once at the
# end, as heldout_metric(dataset, name) for each name of sevlm's own list
# (sevlm.names.HELDOUT_METRIC_NAMES), e.g. "heldout/emoset/closed_acc".
HELDOUT_PREFIX = "heldout/"

# ----------------------------------------------------------------------- artifacts
# Trial runs
ARTIFACT_PREDICTIONS_DIR = "predictions"
ARTIFACT_PREDICTIONS_TEST = "predictions/test.csv"
ARTIFACT_SAMPLES_DIR = "samples"  # samples.json + the images it names
ARTIFACT_HELDOUT_DIR = "heldout"  # heldout/<dataset>_<split>/: sevlm.heldout.outputs' files
ARTIFACT_BEST_CHECKPOINT = "best_checkpoint.json"  # {"path", "step", "metric", "value"}
ARTIFACT_FINAL_METRICS = "final_metrics.json"
ARTIFACT_CONFIG = "config.json"  # the flattened configuration, as JSON
ARTIFACT_DATA_REPORT = DATA_REPORT_FILE  # the load report sevlm writes into the run folder
# Parent runs
ARTIFACT_SWEEP_SPEC = "sweep/spec.json"  # every setting of the sweep (for --resume too)
ARTIFACT_SWEEP_RESULTS = "sweep/results.csv"  # one row per trial: config + metrics
ARTIFACT_SWEEP_BEST = "sweep/best.json"  # the best trial: config, metrics, run id


def heldout_metric(dataset, name):
    """The final metric of a held-out score: ``heldout_metric("emoset", "closed_acc")``."""
    return HELDOUT_PREFIX + str(dataset) + "/" + str(name)


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


def search_filter_sweep(sweep_name):
    """MLflow ``filter_string`` that finds every run of a sweep (parent and trials)."""
    return "tags.`" + TAG_SWEEP_NAME + "` = '" + str(sweep_name) + "'"
