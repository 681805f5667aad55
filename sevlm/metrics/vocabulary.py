"""Non-words: generated words that no training utterance contains.

A cheap alarm for broken generation (a byte-level BPE model that strings pieces together
into "sererene" or "afraidous"), which none of the caption metrics raises: BLEU and CIDEr
just score such words as misses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sevlm.text import normalize_whitespace, word_key


def word_keys(text: str) -> list[str]:
    """The lexicon keys of a text's words (punctuation-only tokens dropped)."""
    return [k for k in (word_key(w) for w in normalize_whitespace(text).split(" ")) if k]


def vocabulary(utterances: Iterable[str]) -> frozenset[str]:
    """Every word key of the given utterances (the training split's)."""
    return frozenset(k for text in utterances for k in word_keys(text))


def count_nonwords(texts: Mapping[str, str], known: frozenset[str]) -> dict[str, tuple[int, int]]:
    """painting id -> (words not in ``known``, words) of its generated explanation."""
    out = {}
    for pid, text in texts.items():
        keys = word_keys(text)
        out[pid] = (sum(k not in known for k in keys), len(keys))
    return out


def nonword_rate(counts: Mapping[str, tuple[int, int]]) -> float:
    """Share of all generated words that are non-words (0.0 when nothing was generated)."""
    bad = sum(b for b, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return bad / total if total else 0.0
