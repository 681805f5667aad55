"""Per-painting sufficient statistics from which corpus caption scores are recomputed.

Paired significance tests resample paintings and recompute the corpus score on every
resample, which the scores of ``captioning.score_explanations`` do not allow:

- coco-caption's corpus BLEU sums clipped n-gram matches, n-gram totals, hypothesis
  lengths and "closest" reference lengths over all paintings and applies one brevity
  penalty to the sums; its per-image list is not a per-image BLEU. So we keep the counts.
- CIDEr's IDF comes from the references of the whole test set. Per-painting CIDEr is
  taken from a run of the scorer on the full set, so its IDF stays fixed on any subset,
  and the corpus CIDEr of a subset is the mean of those values.
- ROUGE-L (and ACC / EA correctness, kept elsewhere as 0/1) are plain means.

Everything here is numpy / pandas on top of pycocoevalcap, on captions the PTB tokenizer
has already split: ``captioning.score_explanations`` computes the frame from its own
tokenisation (``CaptionScores.statistics``), so the stored statistics and the reported
scores come from the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge


BLEU_MAX_N = 4
BLEU_MATCH_COLUMNS: tuple[str, ...] = tuple(f"bleu_match_{k}" for k in range(1, BLEU_MAX_N + 1))
BLEU_TOTAL_COLUMNS: tuple[str, ...] = tuple(f"bleu_total_{k}" for k in range(1, BLEU_MAX_N + 1))
HYP_LEN = "hyp_len"
REF_LEN = "ref_len"
CIDER = "cider"
ROUGE_L = "rouge_l"
# The columns of ``tokenized_statistics``, in this order.
STAT_COLUMNS: tuple[str, ...] = (*BLEU_MATCH_COLUMNS, *BLEU_TOTAL_COLUMNS, HYP_LEN, REF_LEN, CIDER, ROUGE_L)
INDEX_NAME = "painting_id"

# pycocoevalcap's bleu_scorer adds these to numerator and denominator of every precision
# and of the length ratio; we add them too, so that the scores agree to rounding.
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9


def bleu_columns(n: int) -> tuple[str, ...]:
    """The statistics corpus BLEU-n needs, in the layout ``bleu_from_sums`` expects."""
    _check_order(n)
    return (*BLEU_MATCH_COLUMNS[:n], *BLEU_TOTAL_COLUMNS[:n], HYP_LEN, REF_LEN)


def bleu_from_sums(sums: np.ndarray, n: int) -> np.ndarray:
    """Corpus BLEU-n from summed statistics laid out as ``bleu_columns(n)`` on the last axis.

    Vectorised over the leading axes (resamples, seeds). The arithmetic follows
    pycocoevalcap's ``BleuScorer.compute_score`` step by step, including its running
    product of smoothed precisions and its brevity penalty.
    """
    _check_order(n)
    sums = np.asarray(sums, dtype=np.float64)
    if sums.shape[-1] != 2 * n + 2:
        raise ValueError(f"BLEU-{n} needs {2 * n + 2} summed statistics on the last axis, got {sums.shape[-1]}")
    matches, totals = sums[..., :n], sums[..., n : 2 * n]
    hyp_len, ref_len = sums[..., 2 * n], sums[..., 2 * n + 1]
    product = np.prod((matches + _BLEU_TINY) / (totals + _BLEU_SMALL), axis=-1)
    score = product ** (1.0 / n)
    ratio = (hyp_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
    # ratio > 0 always (tiny), so 1/ratio is finite; exp underflows to 0 harmlessly.
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return score * penalty


def corpus_bleu(stats: pd.DataFrame, n: int, index: Sequence[int] | np.ndarray | None = None) -> float:
    """Corpus BLEU-n of the paintings at positions ``index`` (repetitions count), or of all."""
    selected = stats.loc[:, list(bleu_columns(n))].to_numpy(dtype=np.float64)
    if index is not None:
        selected = selected[np.asarray(index, dtype=np.intp)]
    return float(bleu_from_sums(selected.sum(axis=0), n))


def corpus_scores(stats: pd.DataFrame, index: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr (fixed IDF) of the paintings at ``index``, or of all.

    Names as in ``CaptionScores.corpus()``, so the two can be compared key by key.
    """
    scores = {f"bleu{n}": corpus_bleu(stats, n, index) for n in range(1, BLEU_MAX_N + 1)}
    for column in (ROUGE_L, CIDER):
        values = stats[column].to_numpy(dtype=np.float64)
        scores[column] = float((values if index is None else values[np.asarray(index, dtype=np.intp)]).mean())
    return scores


def tokenized_statistics(gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Sufficient statistics of PTB-tokenised captions, as pycocoevalcap's scorers take them.

    ``gts`` maps painting id -> tokenised references, ``res`` painting id -> a one-element
    list with the tokenised hypothesis. Rows follow the key order of ``gts`` (the order of
    the scorers' per-image lists). CIDEr's IDF is that of all paintings given here.
    """
    if gts.keys() != res.keys():
        raise ValueError("gts and res must have the same painting ids")
    ids = list(gts)
    rows = [_bleu_counts(res[pid], gts[pid]) for pid in ids]
    frame = pd.DataFrame(rows, index=pd.Index(ids, name=INDEX_NAME), columns=list(STAT_COLUMNS[:-2]))
    # Plain dicts in the order of ``ids``: the scorers iterate over gts.keys().
    gts_dict = {pid: list(gts[pid]) for pid in ids}
    res_dict = {pid: list(res[pid]) for pid in ids}
    frame[CIDER] = np.asarray(Cider().compute_score(gts_dict, res_dict)[1], dtype=np.float64)
    frame[ROUGE_L] = np.asarray(Rouge().compute_score(gts_dict, res_dict)[1], dtype=np.float64)
    return frame


def _bleu_counts(hypothesis: Sequence[str], references: Sequence[str]) -> list[int]:
    """Clipped matches, totals, hypothesis length and closest reference length of one painting."""
    if len(hypothesis) != 1:
        raise ValueError(f"expected one hypothesis per painting, got {len(hypothesis)}")
    if not references:
        raise ValueError("every painting needs at least one reference")
    cooked = cook_test(hypothesis[0], cook_refs(list(references), n=BLEU_MAX_N), n=BLEU_MAX_N)
    hyp_len = cooked["testlen"]
    # BleuScorer._single_reflen(option="closest"): on a tie the shorter reference wins.
    ref_len = min((abs(length - hyp_len), length) for length in cooked["reflen"])[1]
    return [*cooked["correct"], *cooked["guess"], hyp_len, ref_len]


def _check_order(n: int) -> None:
    if not 1 <= n <= BLEU_MAX_N:
        raise ValueError(f"BLEU order must be in 1..{BLEU_MAX_N}, got {n}")
