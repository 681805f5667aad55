"""The names sevlm reports under: metrics, run params, the data report's file.

Plain strings and tuples, no imports, so that ``trainables.tracking_schema`` (every name the
sweeps write to MLflow) and the analysis read them without importing torch. Each name is
defined here only; the modules that report under it import it from here.
"""

# ------------------------------------------------------------------ evaluation metrics
# What every evaluation (sevlm.training.evaluation) reports, as "<split>/<name>" (percent;
# CIDEr x100; "paintings" is a count). The one list of them: the MLflow schema and the
# reports read it from here.
# - acc: the emotion read off the nucleus-sampled generation (the paper's protocol);
# - closed_acc: the most likely of the nine emotion prompts given the image, with none of
#   the sampling noise (SEVLM.emotion_log_likelihoods);
# - nonword_rate: generated explanation words found in no training utterance;
# - no_emotion_rate: paintings whose generation names none of the nine emotions (their
#   ACC counts as wrong; only the part after "because" is scored as the explanation).
EVAL_METRIC_NAMES = (
    "acc",
    "closed_acc",
    "ea",
    "bleu1",
    "bleu2",
    "bleu3",
    "bleu4",
    "meteor",
    "rouge_l",
    "cider",
    "unique",
    "nonword_rate",
    "no_emotion_rate",
    "paintings",
)

# Per evaluation, "<split>/seconds_per_painting": wall time of generation (and closed-set
# scoring) per painting, the inference cost of the paper's Table 3.
INFERENCE_SECONDS = "seconds_per_painting"
# Final metric of a run: trainable parameters (the frozen image encoder not counted).
TRAINABLE_PARAMETERS = "model/trainable_parameters"

# ------------------------------------------------------------------- held-out metrics
# What a held-out evaluation (sevlm.heldout.classification) reports (percent, except the
# count): the closed-set accuracy (EmoVIT's number), the accuracy of the emotion read off
# the free generation, and how many images were scored. The trial hook logs them as
# "heldout/<dataset>/<name>" (trainables.tracking_schema.heldout_metric).
HELDOUT_CLOSED_ACC = "closed_acc"
HELDOUT_GENERATION_ACC = "acc"
HELDOUT_IMAGES = "images"
HELDOUT_METRIC_NAMES = (HELDOUT_CLOSED_ACC, HELDOUT_GENERATION_ACC, HELDOUT_IMAGES)

# ------------------------------------------------------------------------ run params
# Param of every run: the EA classifier's identity (classifier_identity), so that analysis
# can check that compared runs share one classifier (sevlm.training.loop.run_params).
EA_CLASSIFIER_PARAM = "ea_classifier.id"
# Params of a run: every count of the data load report (sevlm.data.report.LoadReport.params)
# under this prefix: "data.report.rows_kept", "data.report.skipped.too_long",
# "data.report.note.<name>", "data.report.split.<split>.paintings" / ".annotations".
DATA_REPORT_PARAM_PREFIX = "data.report."

# --------------------------------------------------------------------------- files
# The data load report in a run folder (sevlm.data.report.LoadReport.write_json).
DATA_REPORT_FILE = "data_report.json"
