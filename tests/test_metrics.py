"""Tests of sevlm.metrics: caption scores equal pycocoevalcap's, ACC/EA/Unique equal
hand-computed values, and the EA classifier learns, round-trips and is cached safely.

Java (PTB tokenizer, METEOR) is slow to start, so the caption scores are computed once
per module; the METEOR runs happen concurrently in threads, so the equality with the
direct pycocoevalcap scores also shows that concurrent calls do not interfere.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sevlm  # noqa: F401  (installs the torchvision shim before anything else)
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from sevlm.emotions import EMOTIONS
from sevlm.metrics import (
    CaptionScores,
    ClassifierCacheError,
    EmotionClassifier,
    accuracy,
    emotion_alignment,
    fingerprint_texts,
    load_or_train_classifier,
    score_explanations,
    unique_ratio,
)
from sevlm.metrics import captioning

# ----------------------------------------------------------------------------- captions
# Insertion order is deliberately not sorted: per-image values must still land on the
# right painting.
PREDICTIONS = {
    "painting_perfect": "The dark clouds over the stormy sea make me feel lonely and afraid.",
    "painting_bad": "Bright yellow bananas on a kitchen table.",
    "painting_partial": "The woman looks calm and the colors are soft.",
    "painting_case": "THE HORSES RUN, wild and FREE!",
    "painting_unicode": "The café at night feels cozy and warm.",
}
REFERENCES = {
    "painting_bad": ["The soldiers marching through the snow look exhausted and sad.",
                     "A grim winter march that makes me think of war."],
    "painting_case": ["the horses run wild and free across the plain",
                      "Horses galloping freely give a sense of energy."],
    "painting_perfect": ["The dark clouds over the stormy sea make me feel lonely and afraid.",
                         "The waves crash violently, it is scary."],
    "painting_partial": ["The woman looks calm and peaceful in the garden.",
                         "Soft colors and a calm face make me feel content."],
    "painting_unicode": ["The café at night feels cozy and inviting.",
                         "Warm lights and people chatting, a pleasant evening."],
}
EMPTY_CASE_PREDICTIONS = {"a": "", "b": " ... ", "c": "the bridge over the river at sunset is beautiful"}
EMPTY_CASE_REFERENCES = {
    # U+2028 is a line break for Java: without cleaning, every later caption would shift.
    "a": ["a quiet street\u2028in the rain feels melancholic", "grey houses under grey skies"],
    "b": ["a vase of flowers on a table", "bright flowers make me happy"],
    "c": ["the bridge over the river at sunset is beautiful", "golden light on the water"],
}


def _direct_pycocoevalcap(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, Any]:
    """Scores computed the textbook way, straight from pycocoevalcap (ids sorted)."""
    tokenizer = PTBTokenizer()
    ids = sorted(predictions)
    gts_tok = tokenizer.tokenize({pid: [{"caption": r} for r in references[pid]] for pid in ids})
    res_tok = tokenizer.tokenize({pid: [{"caption": predictions[pid]}] for pid in ids})
    gts = {pid: gts_tok[pid] for pid in ids}
    res = {pid: res_tok[pid] for pid in ids}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    meteor_scorer = Meteor()
    try:
        meteor, meteor_per = meteor_scorer.compute_score(gts, res)
    finally:
        meteor_scorer.__del__()
    return {
        "ids": ids,
        "bleu": bleu, "bleu4_per": bleu_per[3],
        "meteor": meteor, "meteor_per": meteor_per,
        "rouge": rouge, "rouge_per": rouge_per,
        "cider": cider, "cider_per": cider_per,
    }


@pytest.fixture(scope="module")
def caption_runs() -> dict[str, Any]:
    """Our scores of the main and the empty case and the direct scores, computed
    concurrently (each METEOR JVM costs ~10 s of CPU), and the METEOR processes our code
    started (to check that none is left running)."""
    started: list[Meteor] = []
    lock = threading.Lock()

    class RecordingMeteor(Meteor):
        def __init__(self) -> None:
            super().__init__()
            with lock:
                started.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(captioning, "Meteor", RecordingMeteor)
        with ThreadPoolExecutor(max_workers=4) as pool:
            first = pool.submit(score_explanations, PREDICTIONS, REFERENCES)
            empty = pool.submit(score_explanations, EMPTY_CASE_PREDICTIONS, EMPTY_CASE_REFERENCES)
            direct = pool.submit(_direct_pycocoevalcap, PREDICTIONS, REFERENCES)
            return {
                "ours": first.result(), "empty": empty.result(),
                "direct": direct.result(), "meteor_processes": [m.meteor_p for m in started],
            }


def test_corpus_scores_equal_pycocoevalcap(caption_runs: dict[str, Any]) -> None:
    ours: CaptionScores = caption_runs["ours"]
    direct = caption_runs["direct"]
    got = [ours.bleu1, ours.bleu2, ours.bleu3, ours.bleu4, ours.meteor, ours.rouge_l, ours.cider]
    want = [*direct["bleu"], direct["meteor"], direct["rouge"], direct["cider"]]
    assert got == pytest.approx(want, abs=1e-9)
    assert 0 < ours.bleu4 < 1 and 0 < ours.meteor < 1 and ours.cider > 0
    assert set(ours.corpus()) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}


def test_per_painting_scores_equal_pycocoevalcap(caption_runs: dict[str, Any]) -> None:
    ours: CaptionScores = caption_runs["ours"]
    direct = caption_runs["direct"]
    assert sorted(ours.per_painting) == direct["ids"]
    for i, pid in enumerate(direct["ids"]):
        scores = ours.per_painting[pid]
        assert scores["bleu4"] == pytest.approx(direct["bleu4_per"][i], abs=1e-9)
        assert scores["meteor"] == pytest.approx(direct["meteor_per"][i], abs=1e-9)
        assert scores["rouge_l"] == pytest.approx(direct["rouge_per"][i], abs=1e-9)
        assert scores["cider"] == pytest.approx(direct["cider_per"][i], abs=1e-9)


def test_per_painting_scores_map_to_the_right_painting(caption_runs: dict[str, Any]) -> None:
    ours: CaptionScores = caption_runs["ours"]
    for metric in ("bleu4", "meteor", "rouge_l", "cider"):
        values = ours.per_painting_values(metric)
        assert max(values, key=values.__getitem__) == "painting_perfect", metric
        assert min(values, key=values.__getitem__) == "painting_bad", metric
    assert ours.per_painting["painting_perfect"]["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert ours.per_painting["painting_perfect"]["rouge_l"] == pytest.approx(1.0)


def test_no_meteor_jvm_is_left_running(caption_runs: dict[str, Any]) -> None:
    processes = caption_runs["meteor_processes"]
    assert len(processes) == 2
    assert all(p.poll() is not None for p in processes)


def test_empty_predictions_score_zero_without_crashing(caption_runs: dict[str, Any]) -> None:
    scores: CaptionScores = caption_runs["empty"]
    for pid in ("a", "b"):  # empty, and punctuation only (empty after tokenization)
        for metric, value in scores.per_painting[pid].items():
            assert value == pytest.approx(0.0, abs=1e-6), (pid, metric)
    # The multi-line reference of "a" did not shift the captions of later paintings.
    assert scores.per_painting["c"]["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores.per_painting["c"]["rouge_l"] == pytest.approx(1.0)
    assert isinstance(scores.meteor, float)


def test_without_meteor_matches_and_reports_none() -> None:
    scores = score_explanations(PREDICTIONS, REFERENCES, use_meteor=False)
    assert scores.meteor is None
    assert all(s["meteor"] is None for s in scores.per_painting.values())
    assert "meteor" not in scores.corpus()
    assert scores.per_painting_values("bleu4")["painting_perfect"] == pytest.approx(1.0, abs=1e-6)


def test_mismatched_ids_raise_value_error_naming_them() -> None:
    predictions = {"x": "a cat", "only_pred": "a dog"}
    references = {"x": ["a cat"], "only_ref": ["a bird"]}
    with pytest.raises(ValueError, match="only_pred") as info:
        score_explanations(predictions, references, use_meteor=False)
    assert "only_ref" in str(info.value)


def test_painting_without_references_is_rejected() -> None:
    with pytest.raises(ValueError, match="'x'"):
        score_explanations({"x": "a cat"}, {"x": ["", "  "]}, use_meteor=False)


# ------------------------------------------------------------------ ACC, EA and Unique
def test_accuracy_excludes_no_dominant_and_counts_none_prediction_wrong() -> None:
    dominant = {"a": "awe", "b": "fear", "c": None, "d": "sadness", "e": "anger"}
    predicted = {"a": "awe", "b": None, "c": "awe", "d": "anger", "e": "anger"}
    assert accuracy(predicted, dominant) == pytest.approx(2 / 4)


def test_accuracy_checks_ids_and_handles_no_dominant() -> None:
    with pytest.raises(ValueError, match="'b'"):
        accuracy({"a": "awe"}, {"a": "awe", "b": "fear"})
    assert np.isnan(accuracy({"a": "awe"}, {"a": None}))


def test_unique_ratio_normalises_whitespace_and_case() -> None:
    explanations = ["A cat", "a  cat", "a dog", " A Dog\n", "a bird", "a cat sleeping"]
    assert unique_ratio(explanations) == pytest.approx(4 / 6)
    assert unique_ratio(["same", "same"]) == pytest.approx(0.5)
    assert unique_ratio([]) == 0.0


class LookupClassifier:
    """A fake classifier with fixed answers, recording what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.seen: list[str] = []

    def predict(self, texts: list[str]) -> list[str]:
        self.seen.extend(texts)
        return [self.answers[t] for t in texts]


def test_emotion_alignment_hand_computed() -> None:
    classifier = LookupClassifier({"x": "awe", "y": "sadness", "z": "fear", "w": "anger"})
    explanations = {"p1": "x", "p2": "y", "p3": "z", "p4": "w"}
    dominant = {"p1": "awe", "p2": "fear", "p3": None, "p4": "anger"}
    ea, correct = emotion_alignment(classifier, explanations, dominant)
    assert ea == pytest.approx(2 / 3)
    assert correct == {"p1": True, "p2": False, "p4": True}
    assert "z" not in classifier.seen  # paintings without a dominant emotion are skipped
    with pytest.raises(ValueError, match="p9"):
        emotion_alignment(classifier, {**explanations, "p9": "x"}, dominant)


# ----------------------------------------------------------------------- the classifier
DISTINCTIVE = {
    "amusement": ["funny", "silly", "laugh", "joke", "giggle"],
    "awe": ["majestic", "vast", "sublime", "grand", "towering"],
    "contentment": ["calm", "peaceful", "cozy", "serene", "relaxing"],
    "excitement": ["thrilling", "energetic", "vibrant", "dynamic", "lively"],
    "anger": ["furious", "rage", "hostile", "outrage", "unfair"],
    "disgust": ["gross", "rotten", "vile", "filthy", "repulsive"],
    "fear": ["scary", "creepy", "dread", "haunting", "terrifying"],
    "sadness": ["lonely", "grief", "tears", "mourning", "gloomy"],
    "something else": ["strange", "odd", "confusing", "unclear", "puzzling"],
}
FILLER = ["the", "painting", "makes", "me", "feel", "because", "of", "colors", "shapes", "this", "scene", "figure"]


def _synthetic_utterances(per_class: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """Utterances with two words of their emotion, one random emotion word and filler."""
    rng = random.Random(seed)
    all_words = [w for words in DISTINCTIVE.values() for w in words]
    texts, labels = [], []
    for emotion in EMOTIONS:
        for _ in range(per_class):
            words = rng.sample(DISTINCTIVE[emotion], 2) + [rng.choice(all_words)] + rng.sample(FILLER, 4)
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(emotion)
    return texts, labels


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[str], list[str]]:
    return _synthetic_utterances()


@pytest.fixture(scope="module")
def trained(synthetic: tuple[list[str], list[str]]) -> EmotionClassifier:
    return EmotionClassifier().fit(*synthetic, seed=0)


PROBE_TEXTS = [
    "a funny silly painting",
    "the sea is vast and majestic",
    "scary creepy shadows",
    "I feel lonely, tears",
    "",
    "words the classifier never saw",
]


def test_classifier_is_well_above_chance(trained: EmotionClassifier) -> None:
    assert trained.classes == tuple(sorted(EMOTIONS))
    assert trained.held_out_accuracy is not None and trained.held_out_accuracy > 0.6  # chance: 1/9
    assert trained.predict(PROBE_TEXTS[:4]) == ["amusement", "awe", "fear", "sadness"]
    proba = trained.predict_proba(PROBE_TEXTS)
    assert proba.shape == (len(PROBE_TEXTS), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_classifier_matches_sklearn_and_is_deterministic(
    trained: EmotionClassifier, synthetic: tuple[list[str], list[str]]
) -> None:
    texts, labels = synthetic
    vectorizer = trained.params.vectorizer()
    model = trained.params.logistic_regression(0).fit(vectorizer.fit_transform(texts), labels)
    expected = model.predict_proba(vectorizer.transform(PROBE_TEXTS))
    assert tuple(model.classes_) == trained.classes
    np.testing.assert_allclose(trained.predict_proba(PROBE_TEXTS), expected, rtol=0, atol=1e-12)
    again = EmotionClassifier().fit(texts, labels, seed=0)
    np.testing.assert_array_equal(again.predict_proba(PROBE_TEXTS), trained.predict_proba(PROBE_TEXTS))
    assert again.held_out_accuracy == trained.held_out_accuracy


def test_save_load_roundtrip_is_identical(trained: EmotionClassifier, tmp_path: Path) -> None:
    trained.save(tmp_path / "clf")
    loaded = EmotionClassifier.load(tmp_path / "clf")
    np.testing.assert_array_equal(loaded.predict_proba(PROBE_TEXTS), trained.predict_proba(PROBE_TEXTS))
    assert loaded.classes == trained.classes
    assert loaded.held_out_accuracy == trained.held_out_accuracy
    assert loaded.params == trained.params
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["arrays.npz", "classifier.json"]


def test_emotion_alignment_with_the_real_classifier(trained: EmotionClassifier) -> None:
    explanations = {"p1": "so funny and silly", "p2": "terrifying dread", "p3": "calm"}
    dominant = {"p1": "amusement", "p2": "sadness", "p3": None}
    ea, correct = emotion_alignment(trained, explanations, dominant)
    assert (ea, correct) == (0.5, {"p1": True, "p2": False})


@pytest.fixture
def fit_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts EmotionClassifier.fit calls (i.e. trainings) made through the cache."""
    calls: list[int] = []
    original = EmotionClassifier.fit

    def counting_fit(self: EmotionClassifier, *args: Any, **kwargs: Any) -> EmotionClassifier:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EmotionClassifier, "fit", counting_fit)
    return calls


def test_load_or_train_caches_by_fingerprint(
    synthetic: tuple[list[str], list[str]], tmp_path: Path, fit_counter: list[int]
) -> None:
    texts, labels = synthetic
    first = load_or_train_classifier(tmp_path, "dataset-a", texts, labels, seed=0)
    meta = tmp_path / "emotion-classifier-dataset-a" / "classifier.json"
    mtime = meta.stat().st_mtime_ns
    second = load_or_train_classifier(tmp_path, "dataset-a", texts, labels, seed=0)
    assert len(fit_counter) == 1 and meta.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.predict_proba(PROBE_TEXTS), first.predict_proba(PROBE_TEXTS))
    assert second.dataset_fingerprint == "dataset-a"
    assert second.held_out_accuracy == first.held_out_accuracy

    other = load_or_train_classifier(tmp_path, "dataset-b", texts[::2], labels[::2], seed=0)
    assert len(fit_counter) == 2
    assert other.dataset_fingerprint == "dataset-b" and other.n_train == len(texts) // 2
    assert (tmp_path / "emotion-classifier-dataset-b" / "classifier.json").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp dirs left


def test_concurrent_load_or_train_trains_once(
    synthetic: tuple[list[str], list[str]], tmp_path: Path, fit_counter: list[int]
) -> None:
    texts, labels = synthetic
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: load_or_train_classifier(tmp_path, "shared", texts, labels), range(4)))
    assert len(fit_counter) == 1
    for result in results[1:]:
        np.testing.assert_array_equal(result.predict_proba(PROBE_TEXTS), results[0].predict_proba(PROBE_TEXTS))


def test_corrupt_cache_raises_an_error_naming_the_file(
    trained: EmotionClassifier, synthetic: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    entry = tmp_path / "emotion-classifier-ds"
    trained.dataset_fingerprint = "ds"
    try:
        trained.save(entry)
    finally:
        trained.dataset_fingerprint = None
    meta = entry / "classifier.json"
    good_meta = meta.read_text(encoding="utf-8")
    meta.write_text("{not json", encoding="utf-8")
    with pytest.raises(ClassifierCacheError, match=str(meta)):
        load_or_train_classifier(tmp_path, "ds", *synthetic)

    meta.write_text(good_meta, encoding="utf-8")
    arrays = entry / "arrays.npz"
    arrays.write_bytes(b"garbage")
    with pytest.raises(ClassifierCacheError, match=str(arrays)):
        load_or_train_classifier(tmp_path, "ds", *synthetic)


def test_pickled_arrays_are_refused(trained: EmotionClassifier, tmp_path: Path) -> None:
    trained.save(tmp_path / "clf")
    np.savez(tmp_path / "clf" / "arrays.npz", idf=np.array([object()], dtype=object),
             coef=np.zeros(1), intercept=np.zeros(1))
    with pytest.raises(ClassifierCacheError, match="arrays.npz"):
        EmotionClassifier.load(tmp_path / "clf")


def test_wrong_fingerprint_in_entry_and_bad_fingerprint_are_errors(
    trained: EmotionClassifier, synthetic: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    trained.save(tmp_path / "emotion-classifier-ds")  # its dataset_fingerprint is None
    with pytest.raises(ClassifierCacheError, match="classifier.json"):
        load_or_train_classifier(tmp_path, "ds", *synthetic)
    with pytest.raises(ValueError, match="fingerprint"):
        load_or_train_classifier(tmp_path, "../escape", *synthetic)


def test_fingerprint_texts_is_content_sensitive_and_stable() -> None:
    base = fingerprint_texts(["a b", "c"], ["awe", "fear"])
    assert base == fingerprint_texts(["a b", "c"], ["awe", "fear"])
    assert base != fingerprint_texts(["a", "b c"], ["awe", "fear"])
    assert base != fingerprint_texts(["a b", "c"], ["awe", "anger"])
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)  # usable as a fingerprint


def test_nonwords_are_generated_words_outside_the_training_vocabulary():
    from sevlm.metrics.vocabulary import count_nonwords, nonword_rate, vocabulary

    known = vocabulary(["The sky is dark, and gloomy!", "a serene lake"])
    assert known == {"the", "sky", "is", "dark", "and", "gloomy", "a", "serene", "lake"}
    counts = count_nonwords({"p1": "the sererene lake .", "p2": "Gloomy, DARK sky", "p3": ""}, known)
    assert counts == {"p1": (1, 3), "p2": (0, 3), "p3": (0, 0)}
    assert nonword_rate(counts) == pytest.approx(1 / 6)
    assert nonword_rate({}) == 0.0
