"""The nine ArtEmis emotions and the one definition of a painting's dominant emotion."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# ArtEmis order (index 0..8).
EMOTIONS: tuple[str, ...] = (
    "amusement",
    "awe",
    "contentment",
    "excitement",
    "anger",
    "disgust",
    "fear",
    "sadness",
    "something else",
)
EMOTION_TO_INDEX = {e: i for i, e in enumerate(EMOTIONS)}
POSITIVE = EMOTIONS[:4]
NEGATIVE = EMOTIONS[4:8]


def emotion_index(label: str) -> int:
    """Index of an emotion label (case and surrounding space ignored); KeyError if unknown."""
    return EMOTION_TO_INDEX[label.strip().lower()]


def dominant_emotion(votes: Iterable[str]) -> str | None:
    """The emotion that has at least half of the votes and no tie, else None.

    This is the single definition used for ACC, EA and the predictions files (ArtEmis'
    reference code mixed "more than half" and "at least half"; we use "at least half"
    everywhere, with a tie - two emotions with exactly half each - giving None).
    """
    counts = Counter(votes)
    total = sum(counts.values())
    if total == 0:
        return None
    ranked = counts.most_common()
    top, top_n = ranked[0]
    if 2 * top_n < total:
        return None
    if len(ranked) > 1 and ranked[1][1] == top_n:
        return None
    return top
