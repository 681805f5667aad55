"""Per-painting statistics of a sweep's runs, from their test predictions artifacts.

Every usable run's ``predictions/test.csv`` is read into a numeric frame indexed by
painting id: the corpus statistics of ``sevlm.metrics.corpus_stats`` plus 0/1 columns for
ACC, closed-set ACC and EA correctness. ``Metric`` says how a corpus score is recomputed
from those columns on any resample (the ``CorpusMetric`` of ``analysis.stats``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import MlflowSweep
from analysis.stats import CorpusMetric, bleu_metric, mean_metric
from sevlm.metrics.corpus_stats import CIDER, INDEX_NAME, ROUGE_L
from sevlm.names import EVAL_METRIC_NAMES
from sevlm.training.evaluation import PREDICTION_COLUMNS
from trainables import mlflow_store
from trainables import tracking_schema as schema


def _column(name: str) -> str:
    """A predictions column by name; fails at import if sevlm renames it.

    sevlm names these columns only inside its PREDICTION_COLUMNS list, not as constants.
    """
    if name not in PREDICTION_COLUMNS:
        raise ImportError(f"sevlm's predictions no longer have a {name!r} column: {PREDICTION_COLUMNS}")
    return name


def _metric_name(name: str) -> str:
    if name not in EVAL_METRIC_NAMES:
        raise ImportError(f"sevlm's evaluation no longer reports {name!r}: {EVAL_METRIC_NAMES}")
    return name


DOMINANT = _column("dominant_emotion")
PREDICTED = _column("predicted_emotion")
CLOSED_SET = _column("closed_set_emotion")
EA_CORRECT = _column("ea_correct")
METEOR = _column("meteor")
NONWORDS = _column("nonwords")
WORDS = _column("words")
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # MLflow's switch for its download bars
# Derived 0/1 columns (ACC and EA count only paintings with a dominant emotion).
HAS_DOMINANT = "has_dominant"
ACC_HIT = "acc_hit"
CLOSED_ACC_HIT = "closed_acc_hit"
EA_HIT = "ea_hit"

ACC, CLOSED_ACC, EA = _metric_name("acc"), _metric_name("closed_acc"), _metric_name("ea")
BLEU = tuple(_metric_name(f"bleu{n}") for n in range(1, 5))
METEOR_METRIC, ROUGE_METRIC, CIDER_METRIC = _metric_name("meteor"), _metric_name("rouge_l"), _metric_name("cider")
UNIQUE, NONWORD_RATE, PAINTINGS = _metric_name("unique"), _metric_name("nonword_rate"), _metric_name("paintings")


def _ratio_score(sums: np.ndarray, n_paintings: int) -> np.ndarray:
    # A resample without any counted painting has no score; 0 keeps the quantiles finite.
    denominator = sums[..., 1]
    return np.divide(sums[..., 0], denominator, out=np.zeros_like(denominator), where=denominator > 0)


def ratio_metric(name: str, numerator: str, denominator: str) -> CorpusMetric:
    """sum(numerator) / sum(denominator) over the paintings: ACC over paintings with a dominant
    emotion, the non-word rate over all generated words."""
    return CorpusMetric(name, (numerator, denominator), _ratio_score)


@dataclass(frozen=True)
class Metric:
    """An evaluation metric (sevlm's name) and how to recompute it per resample."""

    name: str  # as in EVAL_METRIC_NAMES and the logged "test/<name>"
    label: str  # table and figure label
    corpus: CorpusMetric
    note: str = ""

    @property
    def logged(self) -> str:
        return schema.TEST_PREFIX + self.name


# Logged metrics are percent (CIDEr x100); recomputed ones are multiplied by this.
SCALE = 100.0
METEOR_NOTE = "METEOR here is the mean of segment scores, not the jar's corpus aggregate"
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(ACC, "ACC", ratio_metric(ACC, ACC_HIT, HAS_DOMINANT)),
        Metric(CLOSED_ACC, "closed ACC", ratio_metric(CLOSED_ACC, CLOSED_ACC_HIT, HAS_DOMINANT)),
        Metric(EA, "EA", ratio_metric(EA, EA_HIT, HAS_DOMINANT)),
        *(Metric(name, f"B{n}", bleu_metric(n)) for n, name in enumerate(BLEU, start=1)),
        Metric(METEOR_METRIC, "METEOR", mean_metric(METEOR, METEOR_METRIC), METEOR_NOTE),
        Metric(ROUGE_METRIC, "ROUGE-L", mean_metric(ROUGE_L, ROUGE_METRIC)),
        Metric(CIDER_METRIC, "CIDEr", mean_metric(CIDER, CIDER_METRIC)),
        Metric(NONWORD_RATE, "non-words", ratio_metric(NONWORD_RATE, NONWORDS, WORDS)),
    )
}
# The paper's starred metrics (its Fig. 5-7 p-values).
STARRED = (BLEU[3], METEOR_METRIC)
LABELS = {**{m.name: m.label for m in METRICS.values()}, UNIQUE: "Unique"}


def per_painting_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """Numeric per-painting statistics of one run, indexed by painting id (as strings)."""
    frame = predictions.copy()
    frame[INDEX_NAME] = frame[INDEX_NAME].astype(str)
    frame = frame.set_index(INDEX_NAME)
    dominant = frame[DOMINANT].notna()
    out = frame.drop(columns=[DOMINANT, PREDICTED, CLOSED_SET, EA_CORRECT], errors="ignore")
    out = out.apply(pd.to_numeric, errors="coerce")
    out[HAS_DOMINANT] = dominant.astype(float)
    out[ACC_HIT] = (dominant & (frame[PREDICTED] == frame[DOMINANT])).astype(float)
    out[CLOSED_ACC_HIT] = (dominant & (frame[CLOSED_SET] == frame[DOMINANT])).astype(float)
    out[EA_HIT] = (dominant & _truthy(frame[EA_CORRECT])).astype(float)
    return out


def _truthy(values: pd.Series) -> pd.Series:
    """ea_correct as written to CSV: True/False (or 1/0), empty where not scored."""
    return values.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def load_predictions(sweep: MlflowSweep, client, run_ids: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per-painting frames of the usable runs; a run without its artifact is excluded (named)."""
    frames = {}
    # One progress bar per artifact would flood the sweep's console.
    with _no_progress_bars(), tempfile.TemporaryDirectory() as tmp:
        for run_id in list(run_ids if run_ids is not None else sweep.usable):
            try:
                path = mlflow_store.with_retry(
                    client.download_artifacts, run_id, schema.ARTIFACT_PREDICTIONS_TEST, tmp
                )
                frames[run_id] = per_painting_frame(pd.read_csv(path))
            except Exception as exc:  # noqa: BLE001 - any unreadable artifact is reported, not fatal
                sweep.exclude(run_id, f"no readable {schema.ARTIFACT_PREDICTIONS_TEST} ({type(exc).__name__})")
            for leftover in Path(tmp).iterdir():  # one run's file at a time on disk
                if leftover.is_file():
                    leftover.unlink()
    return frames


@contextlib.contextmanager
def _no_progress_bars():
    saved = os.environ.get(_PROGRESS_BAR_ENV)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = saved


@dataclass
class Aligned:
    """Per-painting statistics of many runs on the paintings they all scored."""

    frames: dict[str, pd.DataFrame]
    paintings: list[str]
    dropped: int  # paintings scored by some runs but not all
    _available: dict[str, bool] = field(default_factory=dict)

    def stack(self, run_ids: list[str], metric: CorpusMetric) -> np.ndarray:
        """(runs, paintings, columns) array of ``metric``'s columns, paintings aligned."""
        return np.stack([metric.select(self.frames[r].loc[self.paintings]) for r in run_ids])

    def available(self, metric: Metric) -> bool:
        """Whether every run has finite statistics for ``metric`` (METEOR may be switched off)."""
        if metric.name not in self._available:
            columns = list(metric.corpus.columns)
            self._available[metric.name] = bool(self.frames) and all(
                set(columns) <= set(f.columns) and np.isfinite(f.loc[self.paintings, columns].to_numpy(float)).all()
                for f in self.frames.values()
            )
        return self._available[metric.name]


def align(frames: dict[str, pd.DataFrame]) -> Aligned:
    if not frames:
        return Aligned({}, [], 0)
    ids = [set(f.index) for f in frames.values()]
    common = sorted(set.intersection(*ids))
    return Aligned(frames, common, len(set.union(*ids)) - len(common))
