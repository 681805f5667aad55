"""Corpus scores recomputed from per-painting statistics equal pycocoevalcap's."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from sevlm.metrics.captioning import score_explanations
from sevlm.metrics.corpus_stats import (
    STAT_COLUMNS,
    bleu_columns,
    bleu_from_sums,
    corpus_bleu,
    corpus_scores,
    tokenized_statistics,
)

VOCABULARY = (
    "the a painting sky sea calm dark storm colours bright sad lonely figure woman man "
    "makes me feel happy peaceful angry red blue light shadow trees house warm cold"
).split()

# Edge cases the generated paintings may miss. The tie row has references one token
# shorter and one longer than its hypothesis: pycocoevalcap takes the shorter one.
EDGE_CASES: dict[str, tuple[str, list[str]]] = {
    "empty": ("", ["the sky is dark", "a storm at sea makes me feel sad"]),
    "one_word": ("sad", ["the woman looks sad and lonely", "sad colours"]),
    "two_words": ("calm sea", ["the calm sea makes me feel peaceful", "a calm sea", "calm"]),
    "copy": ("the red house in the trees", ["the red house in the trees", "a warm red house"]),
    "long": ("the sky the sea the trees the house the light the shadow the man", ["a house"]),
    "tie": ("the dark sea makes me", ["the dark sea feels", "the dark sea makes me sad"]),
    "repeated_ngrams": ("sad sad sad sad sad", ["sad sad and lonely", "very sad"]),
}


def make_captions(n_generated: int = 18, seed: int = 7) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Hypotheses and references: hypotheses are noisy, mostly shorter references."""
    rng = random.Random(seed)
    hypotheses = {pid: hyp for pid, (hyp, _) in EDGE_CASES.items()}
    references = {pid: refs for pid, (_, refs) in EDGE_CASES.items()}
    for i in range(n_generated):
        refs = [" ".join(rng.choices(VOCABULARY, k=rng.randint(4, 12))) for _ in range(rng.randint(2, 5))]
        words = [w if rng.random() < 0.6 else rng.choice(VOCABULARY) for w in rng.choice(refs).split()]
        hypotheses[f"p{i:02d}"] = " ".join(words[: rng.randint(1, len(words))])
        references[f"p{i:02d}"] = refs
    return hypotheses, references


@pytest.fixture(scope="module")
def tokenized() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(gts, res) as the scorers take them; lowercase words need no PTB tokenisation."""
    hypotheses, references = make_captions()
    ids = sorted(hypotheses)
    return {pid: references[pid] for pid in ids}, {pid: [hypotheses[pid]] for pid in ids}


@pytest.fixture(scope="module")
def stats(tokenized):
    return tokenized_statistics(*tokenized)


def test_layout(stats, tokenized) -> None:
    gts, _ = tokenized
    assert tuple(stats.columns) == STAT_COLUMNS
    assert list(stats.index) == list(gts)
    assert 15 <= len(stats) <= 30
    for n in range(1, 5):
        assert set(bleu_columns(n)) <= set(STAT_COLUMNS)
    # Clipped matches never exceed totals; totals follow from the hypothesis length.
    for k in range(1, 5):
        assert (stats[f"bleu_match_{k}"] <= stats[f"bleu_total_{k}"]).all()
        assert (stats[f"bleu_total_{k}"] == np.maximum(0, stats["hyp_len"] - k + 1)).all()


def test_closest_reference_length_prefers_the_shorter_on_a_tie(stats) -> None:
    assert stats.loc["tie", "hyp_len"] == 5
    assert stats.loc["tie", "ref_len"] == 4
    assert stats.loc["empty", "hyp_len"] == 0 and stats.loc["empty", "ref_len"] == 4


def test_full_set_reproduces_pycocoevalcap(stats, tokenized) -> None:
    gts, res = tokenized
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    scores = corpus_scores(stats)
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(bleu[n - 1], abs=1e-9, rel=0)
    assert scores["rouge_l"] == pytest.approx(rouge, abs=1e-12, rel=0)
    assert scores["cider"] == pytest.approx(cider, abs=1e-12, rel=0)
    np.testing.assert_array_equal(stats["rouge_l"].to_numpy(), rouge_per)
    np.testing.assert_array_equal(stats["cider"].to_numpy(), cider_per)


def test_brevity_penalty_is_active(stats) -> None:
    """Otherwise the tie-breaking and the closest reference length would go untested."""
    assert stats["hyp_len"].sum() < stats["ref_len"].sum()


@pytest.mark.parametrize("subset_seed", range(5))
def test_subset_with_repetitions_matches_bleu_on_that_subset(stats, tokenized, subset_seed) -> None:
    gts, res = tokenized
    rng = np.random.default_rng(subset_seed)
    index = rng.integers(0, len(stats), size=rng.integers(3, 2 * len(stats)))
    ids = list(stats.index)
    # A repeated painting becomes a distinct key, as it counts twice in a resample.
    sub_gts = {f"{ids[i]}#{j}": gts[ids[i]] for j, i in enumerate(index)}
    sub_res = {f"{ids[i]}#{j}": res[ids[i]] for j, i in enumerate(index)}
    bleu, _ = Bleu(4).compute_score(sub_gts, sub_res, verbose=0)
    for n in range(1, 5):
        assert corpus_bleu(stats, n, index) == pytest.approx(bleu[n - 1], abs=1e-9, rel=0)


def test_bleu_from_sums_is_vectorised(stats) -> None:
    columns = list(bleu_columns(4))
    rng = np.random.default_rng(0)
    indices = rng.integers(0, len(stats), size=(6, len(stats)))
    sums = stats[columns].to_numpy(dtype=float)[indices].sum(axis=1)
    expected = [corpus_bleu(stats, 4, index) for index in indices]
    np.testing.assert_allclose(bleu_from_sums(sums, 4), expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="BLEU order"):
        bleu_columns(5)
    with pytest.raises(ValueError, match="summed statistics"):
        bleu_from_sums(sums[:, :-1], 4)


def test_statistics_of_score_explanations_reproduce_its_scores() -> None:
    """Raw text through the PTB tokenizer (Java): punctuation, case and an empty hypothesis."""
    hypotheses, references = make_captions(n_generated=10, seed=3)
    hypotheses["p00"] = "The SKY, so dark... makes me feel sad!"
    hypotheses["p01"] = "  ?! "
    expected = score_explanations(hypotheses, references, use_meteor=False)
    frame = expected.statistics
    assert list(frame.index) == sorted(hypotheses)
    # An empty explanation is scored as captioning's one-token placeholder.
    assert frame.loc["empty", "hyp_len"] == 1 and frame.loc["p01", "hyp_len"] == 1
    recomputed = corpus_scores(frame)
    for name, value in expected.corpus().items():
        assert recomputed[name] == pytest.approx(value, abs=1e-9, rel=0), name
    np.testing.assert_allclose(frame["cider"], list(expected.per_painting_values("cider").values()), atol=1e-12, rtol=0)
