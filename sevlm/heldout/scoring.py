"""Closed-set emotion prediction over any subset of the ArtEmis emotions, and the scores
of a classification: accuracy, per-class accuracy, confusion matrix.

Closed-set prediction scores every candidate's full prompt "the emotion is <e> because"
by the model's log-likelihood given the image (:meth:`SEVLM.emotion_log_likelihoods`,
which scores each emotion's prompt on its own, unnormalised over the emotions) and keeps
the best candidate. Restricting the nine ArtEmis scores to the candidates is therefore the
same as scoring only the candidates' prompts, and neither "something else" (when not a
candidate) nor a malformed generation can come out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from sevlm.emotions import EMOTION_TO_INDEX
from sevlm.text import parse_generation

# The column of the confusion matrix of free generations that names none of the classes.
NO_CLASS = "(none of them)"


def canonical_order(classes: Sequence[str]) -> list[str]:
    """The classes in ArtEmis order; unknown or repeated classes raise ValueError."""
    unknown = [c for c in classes if c not in EMOTION_TO_INDEX]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be distinct ArtEmis emotions, got {list(classes)}")
    return sorted(classes, key=EMOTION_TO_INDEX.__getitem__)


def closed_set_scores(model, image_features: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """(B, len(classes)) log-likelihood of each class's prompt, columns in ``classes`` order."""
    all_scores = model.emotion_log_likelihoods(image_features)
    columns = torch.tensor([EMOTION_TO_INDEX[c] for c in classes], device=all_scores.device)
    return all_scores.index_select(1, columns)


def closed_set_predictions(model, image_features: torch.Tensor, classes: Sequence[str]) -> list[str]:
    """The class with the highest prompt log-likelihood, per image.

    The result does not depend on the order of ``classes``: they are scored in ArtEmis
    order, which also breaks exact ties (the earlier emotion wins).
    """
    ordered = canonical_order(classes)
    best = closed_set_scores(model, image_features, ordered).argmax(dim=1).tolist()
    return [ordered[i] for i in best]


def generated_class(text: str, classes: Sequence[str]) -> str | None:
    """The class a free generation names, or None when it names none of ``classes``
    (another emotion, such as "something else", or no emotion at all)."""
    emotion, _ = parse_generation(text)
    return emotion if emotion in classes else None


def accuracy(predicted: Mapping[str, str | None], truth: Mapping[str, str]) -> float:
    """Fraction of items whose prediction equals the truth (None is always wrong)."""
    if not truth:
        raise ValueError("no item to score")
    return sum(predicted.get(k) == v for k, v in truth.items()) / len(truth)


def per_class_accuracy(
    predicted: Mapping[str, str | None], truth: Mapping[str, str], classes: Sequence[str]
) -> dict[str, float | None]:
    """Accuracy among the items of each true class (None for a class without items)."""
    out: dict[str, float | None] = {}
    for c in classes:
        keys = [k for k, v in truth.items() if v == c]
        out[c] = sum(predicted.get(k) == c for k in keys) / len(keys) if keys else None
    return out


def confusion_matrix(
    predicted: Mapping[str, str | None], truth: Mapping[str, str], classes: Sequence[str]
) -> pd.DataFrame:
    """Counts, rows = true class, columns = predicted class (in ``classes`` order), plus a
    :data:`NO_CLASS` column when some prediction is None or outside ``classes``."""
    columns = list(classes)
    predictions = [predicted.get(k) for k in truth]
    if any(p not in classes for p in predictions):
        columns.append(NO_CLASS)
    matrix = pd.DataFrame(0, index=pd.Index(list(classes), name="true"), columns=pd.Index(columns, name="predicted"))
    for (key, true), guess in zip(truth.items(), predictions):
        matrix.at[true, guess if guess in classes else NO_CLASS] += 1
    return matrix
