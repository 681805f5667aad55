"""Files of a held-out evaluation: metrics, per-class accuracy, confusion matrices (CSV and
a figure), per-image predictions, and a sample of generated explanations with their images.

Layout of ``out_dir``::

    metrics.json                  the sevlm.names.HELDOUT_METRIC_NAMES values + the load report
    per_class.csv                 emotion, images, closed_acc, acc (percent)
    confusion_closed_set.csv      rows: true emotion, columns: closed-set prediction
    confusion_generation.csv      the same for the free generation (+ "none of them")
    confusion_closed_set.png      the closed-set matrix, row-normalised, counts printed
    predictions.csv               one row per image (sevlm.heldout.classification.PREDICTION_COLUMNS)
    samples/samples.json          the first n images of each emotion with what was generated
    samples/NN_<emotion>.jpg      their images
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from sevlm.heldout.classification import HeldoutEvaluation
from sevlm.names import HELDOUT_CLOSED_ACC

SAMPLES_DIR = "samples"
CONFUSION_FIGURE = "confusion_closed_set.png"


def confusion_figure(matrix: pd.DataFrame, title: str, path: Path) -> Path:
    """Row-normalised heat map (each true class sums to 1) with the counts printed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    counts = matrix.to_numpy(dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * counts.shape[1], 1.0 + 0.7 * counts.shape[0]))
    try:
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(counts.shape[1]), [str(c) for c in matrix.columns], rotation=45, ha="right")
        ax.set_yticks(range(counts.shape[0]), [str(r) for r in matrix.index])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                        color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _or_none(value):
    """A frame cell for JSON: pandas holds a missing string as NaN, which JSON cannot."""
    return None if pd.isna(value) else value


def write_samples(evaluation: HeldoutEvaluation, directory: Path, per_emotion: int = 2) -> Path:
    """The first ``per_emotion`` images of each emotion, copied next to what the model said."""
    directory.mkdir(parents=True, exist_ok=True)
    chosen = evaluation.predictions.groupby("emotion", sort=False).head(per_emotion)
    rows = []
    for n, row in enumerate(chosen.itertuples(index=False)):
        source = Path(evaluation.image_paths[row.image])
        copy = directory / f"{n:02d}_{row.emotion}{source.suffix}"
        shutil.copyfile(source, copy)
        rows.append({"image": copy.name, "source": row.image, "emotion": row.emotion,
                     "closed_set_emotion": row.closed_set_emotion,
                     "generated_emotion": _or_none(row.generated_emotion),
                     "explanation": _or_none(row.explanation), "generation": _or_none(row.generation)})
    path = directory / "samples.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_outputs(evaluation: HeldoutEvaluation, out_dir: str | Path, *, report: dict | None = None,
                  checkpoint: str | None = None, samples_per_emotion: int = 2) -> Path:
    """Write every file of the layout above into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"split": evaluation.split, "metrics": evaluation.metrics, "checkpoint": checkpoint,
               "load_report": report or {}}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    evaluation.per_class.to_csv(out / "per_class.csv", index=False)
    evaluation.confusion_closed.to_csv(out / "confusion_closed_set.csv")
    evaluation.confusion_generation.to_csv(out / "confusion_generation.csv")
    evaluation.predictions.to_csv(out / "predictions.csv", index=False)
    accuracy = evaluation.metrics[HELDOUT_CLOSED_ACC]
    confusion_figure(evaluation.confusion_closed,
                     f"EmoSet {evaluation.split}: closed-set, accuracy {accuracy:.1f}%", out / CONFUSION_FIGURE)
    write_samples(evaluation, out / SAMPLES_DIR, samples_per_emotion)
    return out
