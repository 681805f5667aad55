"""Held-out classification of a trained SEVLM on an EmoSet split (never trained on).

Per image: the closed-set emotion over EmoSet's eight classes
(:func:`sevlm.heldout.scoring.closed_set_predictions`) and one free generation (decoded as
in the run's own evaluation: ``eval.decoding``, ``top_p``, ``temperature``,
``max_new_tokens``, seeded), whose emotion counts as wrong when it is none of the eight.
Image features come from the frozen encoder through the per-image feature cache that
training uses (:class:`sevlm.data.feature_cache.FeatureCache`): EmoSet gets its own cache
folder under the same root, keyed by the encoder and the image set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sevlm.config import EvalConfig
from sevlm.data import EvalPaintings, FeatureCache
from sevlm.data.emoset import EMOSET_EMOTIONS, EmoSetSplit
from sevlm.heldout import scoring
from sevlm.names import HELDOUT_CLOSED_ACC, HELDOUT_GENERATION_ACC, HELDOUT_IMAGES
from sevlm.training.evaluation import generate_explanations
from sevlm.text import parse_generation

PREDICTION_COLUMNS = ["image", "emotion", "closed_set_emotion", "generated_emotion", "explanation", "generation"]


@dataclass
class HeldoutEvaluation:
    split: str
    metrics: dict[str, float]  # sevlm.names.HELDOUT_METRIC_NAMES
    predictions: pd.DataFrame  # PREDICTION_COLUMNS, one row per scored image
    per_class: pd.DataFrame  # emotion, images, closed_acc, acc (percent)
    confusion_closed: pd.DataFrame  # rows true, columns predicted (counts)
    confusion_generation: pd.DataFrame  # the same for the free generation (+ "none of them")
    image_paths: dict[str, str]  # image key -> file, for the samples


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


@torch.no_grad()
def evaluate_on_emoset(
    model,
    split: EmoSetSplit,
    encoder,
    feature_cache_dir: str | os.PathLike,
    eval_cfg: EvalConfig,
    device: torch.device,
    *,
    seed: int = 0,
    batch_size: int = 64,
    max_images: int = 0,
) -> HeldoutEvaluation:
    """Score ``model`` on ``split``. ``max_images`` > 0 scores a fixed random subset of that
    many images (the same for every model; EmoSet's split files are grouped by emotion, so
    the first N would be one class): a quick look, not EmoVIT's protocol. Corrupt images are
    counted in ``split.report`` (``corrupt_image``) and left out."""
    images = split.images
    if 0 < max_images < len(images):
        picks = np.random.default_rng(0).permutation(len(images))[:max_images]
        images = [images[i] for i in sorted(picks.tolist())]
    paths = {image.key: image.path for image in images}
    features = FeatureCache.ensure(encoder, paths, feature_cache_dir, batch_size=batch_size)
    split.report.note("images_encoded_now", features.images_encoded)
    split.report.skip("corrupt_image", len(features.failed), list(features.failed.values()))
    truth = {image.key: image.emotion for image in images if image.key in features}
    if not truth:
        raise ValueError(f"no readable image in the EmoSet {split.name} split:\n{split.report.summary()}")

    generations = generate_explanations(
        model, EvalPaintings(features, list(truth), batch_size), eval_cfg, device, seed,
        closed_set=lambda feats: scoring.closed_set_predictions(model, feats, EMOSET_EMOTIONS),
    )
    closed, texts = generations.closed_set, generations.texts

    from_text = {k: scoring.generated_class(t, EMOSET_EMOTIONS) for k, t in texts.items()}
    metrics = {
        HELDOUT_CLOSED_ACC: 100.0 * scoring.accuracy(closed, truth),
        HELDOUT_GENERATION_ACC: 100.0 * scoring.accuracy(from_text, truth),
        HELDOUT_IMAGES: float(len(truth)),
    }
    closed_per_class = scoring.per_class_accuracy(closed, truth, EMOSET_EMOTIONS)
    generation_per_class = scoring.per_class_accuracy(from_text, truth, EMOSET_EMOTIONS)
    per_class = pd.DataFrame({
        "emotion": list(EMOSET_EMOTIONS),
        "images": [sum(v == e for v in truth.values()) for e in EMOSET_EMOTIONS],
        HELDOUT_CLOSED_ACC: [_percent(closed_per_class[e]) for e in EMOSET_EMOTIONS],
        HELDOUT_GENERATION_ACC: [_percent(generation_per_class[e]) for e in EMOSET_EMOTIONS],
    })
    rows = [
        {"image": k, "emotion": truth[k], "closed_set_emotion": closed[k], "generated_emotion": from_text[k],
         "explanation": parse_generation(texts[k])[1], "generation": texts[k]}
        for k in truth
    ]
    return HeldoutEvaluation(
        split=split.name,
        metrics=metrics,
        predictions=pd.DataFrame(rows, columns=PREDICTION_COLUMNS),
        per_class=per_class,
        confusion_closed=scoring.confusion_matrix(closed, truth, EMOSET_EMOTIONS),
        confusion_generation=scoring.confusion_matrix(from_text, truth, EMOSET_EMOTIONS),
        image_paths={k: str(p) for k, p in paths.items() if k in truth},
    )
