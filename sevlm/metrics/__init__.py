"""Evaluation metrics of SEVLM (plain Python: no Ray, no MLflow, no torch).

- ``score_explanations``: BLEU-1..4, METEOR, ROUGE-L, CIDEr of the explanations
  (pycocoevalcap), corpus and per painting.
- ``accuracy`` (ACC), ``emotion_alignment`` (EA) and ``unique_ratio`` (Unique).
- ``EmotionClassifier`` / ``load_or_train_classifier``: the text -> emotion classifier
  behind EA, cached per dataset so that every run of a dataset uses the same one.
"""

from sevlm.metrics.captioning import (
    EMPTY_HYPOTHESIS_PLACEHOLDER,
    PER_PAINTING_METRICS,
    CaptionScores,
    score_explanations,
)
from sevlm.metrics.emotion_classifier import (
    ClassifierCacheError,
    ClassifierParams,
    EmotionClassifier,
    fingerprint_texts,
    load_or_train_classifier,
)
from sevlm.metrics.emotion_metrics import (
    TextEmotionClassifier,
    accuracy,
    emotion_alignment,
    unique_ratio,
)

__all__ = [
    "EMPTY_HYPOTHESIS_PLACEHOLDER",
    "PER_PAINTING_METRICS",
    "CaptionScores",
    "ClassifierCacheError",
    "ClassifierParams",
    "EmotionClassifier",
    "TextEmotionClassifier",
    "accuracy",
    "emotion_alignment",
    "fingerprint_texts",
    "load_or_train_classifier",
    "score_explanations",
    "unique_ratio",
]
