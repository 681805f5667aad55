"""Emotion metrics: ACC (predicted emotion), EA (emotion alignment) and Unique.

ACC and EA are computed over paintings that have a dominant emotion (see
``sevlm.emotions.dominant_emotion``, the one definition used everywhere); a painting
without one carries no ground truth and is left out. Both return NaN when no painting
has a dominant emotion, because 0.0 would read as "all wrong".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class TextEmotionClassifier(Protocol):
    """Anything that maps texts to emotion labels (e.g. ``EmotionClassifier``)."""

    def predict(self, texts: Sequence[str]) -> list[str]:
        """One emotion label per text."""
        ...


def accuracy(predicted: Mapping[str, str | None], dominant: Mapping[str, str | None]) -> float:
    """ACC: fraction of paintings with a dominant emotion whose prediction equals it.

    A None prediction (e.g. the generated text had no parseable emotion) counts as
    wrong. Both dicts must cover the same painting ids.
    """
    _check_same_ids(predicted, dominant, "predicted")
    scored = _with_dominant(dominant)
    if not scored:
        return float("nan")
    return sum(predicted[pid] == dominant[pid] for pid in scored) / len(scored)


def unique_ratio(explanations: Iterable[str]) -> float:
    """Unique: distinct generated explanations / number of explanations (0.0 if none).

    Texts are compared after collapsing whitespace and lower-casing, so trivial
    variants of one template do not count as different explanations.
    """
    normalised = [" ".join(text.split()).lower() for text in explanations]
    if not normalised:
        return 0.0
    return len(set(normalised)) / len(normalised)


def emotion_alignment(
    classifier: TextEmotionClassifier,
    explanations: Mapping[str, str],
    dominant: Mapping[str, str | None],
) -> tuple[float, dict[str, bool]]:
    """EA: fraction of paintings whose explanation the classifier reads as the dominant emotion.

    Returns (EA, painting id -> correct) over the paintings with a dominant emotion; the
    per-painting dict feeds paired tests. Only those paintings are classified, in sorted
    id order, in one batch.
    """
    _check_same_ids(explanations, dominant, "explanations")
    scored = _with_dominant(dominant)
    if not scored:
        return float("nan"), {}
    labels = classifier.predict([explanations[pid] for pid in scored])
    if len(labels) != len(scored):
        raise RuntimeError(f"classifier returned {len(labels)} labels for {len(scored)} texts")
    correct = {pid: label == dominant[pid] for pid, label in zip(scored, labels)}
    return sum(correct.values()) / len(correct), correct


def _with_dominant(dominant: Mapping[str, str | None]) -> list[str]:
    """Sorted ids of the paintings that have a dominant emotion."""
    return sorted(pid for pid, emotion in dominant.items() if emotion is not None)


def _check_same_ids(values: Mapping[str, Any], dominant: Mapping[str, Any], name: str) -> None:
    """ValueError naming the ids present in only one of the two dicts (likely a bug upstream)."""
    only_values = sorted(set(values) - set(dominant), key=str)
    only_dominant = sorted(set(dominant) - set(values), key=str)
    if not only_values and not only_dominant:
        return
    parts = []
    if only_dominant:
        parts.append(f"ids missing from {name}: {_preview(only_dominant)}")
    if only_values:
        parts.append(f"ids missing from dominant: {_preview(only_values)}")
    raise ValueError(f"{name} and dominant have different painting ids; " + "; ".join(parts))


def _preview(ids: Sequence[Any], limit: int = 20) -> str:
    """The ids for an error message, cut after ``limit``."""
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")
