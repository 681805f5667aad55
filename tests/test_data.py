"""Data: ArtEmis loading and validation, the split, the synthetic generator, training
examples and negatives, the collate contract and the frozen feature cache."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import apply_overrides, tiny
from sevlm.data import (
    REST,
    V1_COLUMNS,
    ArtEmisFormatError,
    FeatureCache,
    LoadReport,
    TrainingExamples,
    collate,
    dominant_emotions,
    eval_batches,
    generate_synthetic_artemis,
    load_artemis,
    make_train_loader,
    prepare_data,
    resolve_image_paths,
    split_paintings,
    write_synthetic_contrastive,
)
from sevlm.data.examples import _SentenceBuilder
from sevlm.emotions import EMOTIONS, dominant_emotion

ENCODER_SEED = 0


# ------------------------------------------------------------------------ fixtures


def _tiny_encoder(seed: int = ENCODER_SEED):
    from sevlm.model.image_encoder import build_image_encoder

    return build_image_encoder(tiny().model.image_encoder, seed=seed)


@pytest.fixture(scope="module")
def encoder():
    return _tiny_encoder()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def synth(work):
    """The default synthetic dataset (240 paintings x 5 annotators)."""
    return generate_synthetic_artemis(work / "synth-default", seed=0)


def _cfg(work: Path, **overrides):
    base = {
        "data.synthetic_dir": str(work / "synthetic"),
        "data.feature_cache_dir": str(work / "features"),
    }
    base.update(overrides)
    return apply_overrides(tiny(), base)


@pytest.fixture(scope="module")
def prepared(work, tokenizer, lexicon, encoder):
    return prepare_data(_cfg(work), tokenizer, lexicon, encoder)


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    }


def _write_csv(path: Path, rows: list, columns=V1_COLUMNS) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def _rows(n_paintings: int = 30, per: int = 3, style: str = "Realism") -> list:
    emotions = list(EMOTIONS)
    return [
        [style, f"artist_work-{i}", emotions[(i + k) % 9], f"the painting number {i} makes me feel thing {k}", per]
        for i in range(n_paintings)
        for k in range(per)
    ]


# ----------------------------------------------------------------- synthetic data


def test_synthetic_is_deterministic_and_idempotent(tmp_path):
    a = generate_synthetic_artemis(tmp_path / "a", n_paintings=30, annotators=3, seed=7)
    b = generate_synthetic_artemis(tmp_path / "b", n_paintings=30, annotators=3, seed=7)
    c = generate_synthetic_artemis(tmp_path / "c", n_paintings=30, annotators=3, seed=8)
    assert _digest_tree(a.root) == _digest_tree(b.root)  # CSV bytes and every image
    assert a.csv.read_bytes() != c.csv.read_bytes()
    assert _digest_tree(a.root) != _digest_tree(c.root)

    stamp = a.csv.stat().st_mtime_ns
    again = generate_synthetic_artemis(tmp_path / "a", n_paintings=30, annotators=3, seed=7)
    assert again.csv.stat().st_mtime_ns == stamp  # same manifest: nothing rewritten
    # Other arguments in the same folder regenerate it completely (no stale images).
    generate_synthetic_artemis(tmp_path / "a", n_paintings=20, annotators=3, seed=7)
    assert len(list((tmp_path / "a" / "images").rglob("*.jpg"))) == 20


def test_synthetic_properties(synth, lexicon, tokenizer):
    frame, report = load_artemis(synth.csv)
    assert report.total_skipped == 0
    assert set(frame["emotion"]) == set(EMOTIONS)
    per_painting = frame.groupby("painting_id").size()
    assert len(per_painting) == 240 and per_painting.min() >= 5
    dominant = dominant_emotions(frame)
    n_none = sum(v is None for v in dominant.values())
    n_unanimous = int((frame.groupby("painting_id")["emotion"].nunique() == 1).sum())
    assert 0.1 * 240 < n_none < 0.5 * 240  # realistic disagreement
    assert n_unanimous > 10
    assert any(not pid.isascii() for pid in per_painting.index)

    # Explanations use lexicon words: a good share of BPE tokens get a non-zero VAD.
    tokens = known = 0
    for text in frame["utterance"].head(300):
        _, words = tokenizer.encode_words(text)
        tokens += len(words)
        known += sum(lexicon(w) != (0.0, 0.0, 0.0) for w in words)
    assert known / tokens > 0.4

    # Images carry the emotion: nearest centroid on the mean colour, far above chance (1/9).
    from PIL import Image

    found, _ = resolve_image_paths(frame, synth.image_dir)
    labelled = sorted((pid, e) for pid, e in dominant.items() if e is not None)
    x = np.stack([np.asarray(Image.open(found[pid]).convert("RGB"), dtype=np.float32).mean((0, 1)) for pid, _ in labelled])
    y = np.array([EMOTIONS.index(e) for _, e in labelled])
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    centroids = np.stack([x[train & (y == k)].mean(0) for k in range(9)])
    pred = np.argmin(((x[test, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == y[test]).mean())
    assert accuracy > 0.5, accuracy


# --------------------------------------------------------------- split / dominant


def test_split_by_painting_deterministic(synth):
    frame, _ = load_artemis(synth.csv)
    split = split_paintings(frame, seed=2021)
    counts = split.value_counts()
    n = len(split)
    assert abs(counts["train"] / n - 0.85) < 0.02
    assert abs(counts["val"] / n - 0.05) < 0.02
    assert abs(counts["test"] / n - 0.10) < 0.02
    # A painting has exactly one split: the split is a function of painting_id.
    assert split.index.is_unique
    # Same seed -> same split, whatever the row order; another seed -> another split.
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert split_paintings(shuffled, seed=2021).equals(split)
    assert not split_paintings(frame, seed=1).equals(split)


def test_high_repetition_goes_to_rest(tmp_path):
    paths = generate_synthetic_artemis(tmp_path / "s", n_paintings=80, annotators=3, seed=1, high_repetition=2)
    frame, report = load_artemis(paths.csv)
    split = split_paintings(frame, seed=2021)
    high = set(frame.loc[frame["repetition"] > 40, "painting_id"])
    assert len(high) == 2
    # Paintings annotated more than 40 times are set aside.
    assert set(split.index[split == REST]) == high
    assert 0 < (split == "val").sum() and 0 < (split == "test").sum()
    # Deterministic (the public v2 code iterates over Python sets).
    assert split_paintings(frame.iloc[::-1], seed=2021).equals(split)
    # v2 rules (v1 split kept, contrastive paintings follow their anchor): test_data_fidelity.py


def test_dominant_emotion_is_the_shared_definition():
    frame = pd.DataFrame(
        {
            "painting_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 5 + ["d"] * 3,
            "emotion": ["awe", "awe", "fear", "sadness"]  # 2/4: at least half, no tie -> awe
            + ["awe", "awe", "fear", "fear"]  # tie -> None
            + ["awe", "awe", "fear", "sadness", "anger"]  # 2/5 < half -> None
            + ["anger"] * 3,
        }
    )
    result = dominant_emotions(frame)
    assert result == {"a": "awe", "b": None, "c": None, "d": "anger"}
    for pid, group in frame.groupby("painting_id"):
        assert result[pid] == dominant_emotion(group["emotion"])


def test_prepared_splits(prepared):
    ids = {name: set(s.painting_ids) for name, s in prepared.splits.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    for split in prepared.splits.values():
        assert list(split.painting_ids) == sorted(split.painting_ids) == sorted(split.references)
        assert set(split.annotations["painting_id"]) == set(split.painting_ids)
        assert split.image_keys == split.painting_ids
        for pid in split.painting_ids[:20]:
            votes = split.annotations.loc[split.annotations["painting_id"] == pid, "emotion"]
            assert split.dominant[pid] == dominant_emotion(votes)
    assert prepared.report.split_paintings["train"] == len(ids["train"])


# ---------------------------------------------------------- examples / negatives


def test_sentences_match_encode_full_sentence(tokenizer, lexicon, prepared):
    for max_length in (30, 14):  # 14 forces truncation
        builder = _SentenceBuilder(tokenizer, lexicon, max_length)
        for text in prepared.splits["train"].annotations["utterance"].head(25):
            for e in range(len(EMOTIONS)):
                builder.check_against_tokenizer(e, text)


def test_negatives(prepared, tokenizer, lexicon):
    ex = TrainingExamples(prepared.splits["train"], prepared.features, tokenizer, lexicon, seed=3)
    ann = prepared.splits["train"].annotations
    unanimous = ann.groupby("painting_id")["emotion"].nunique() == 1
    n_fallback_expected = int(ann["painting_id"].map(unanimous).sum())
    assert ex.stats["unanimous_paintings"] == int(unanimous.sum()) > 0
    assert ex.stats["wrong_emotion_fallback_items"] == n_fallback_expected > 0
    assert prepared.report.notes["train_items_wrong_emotion_negative_from_other_painting"] == n_fallback_expected
    assert len(ex) == len(ann)  # unanimous paintings are not dropped

    fallbacks = 0
    for i in range(len(ex)):
        item = ex[(i, 0)]
        pid, emotion, text = ann.at[i, "painting_id"], ann.at[i, "emotion"], ann.at[i, "utterance"]
        j, k = item["neg_wrong_emotion_index"], item["neg_other_image_index"]
        assert item["neg_wrong_emotion_valid"]
        assert ann.at[j, "emotion"] != emotion and ann.at[j, "utterance"] != text
        if unanimous[pid]:
            assert item["neg_wrong_emotion_fallback"] and ann.at[j, "painting_id"] != pid
            fallbacks += 1
        else:
            assert not item["neg_wrong_emotion_fallback"] and ann.at[j, "painting_id"] == pid
        assert ann.at[k, "painting_id"] != pid and ann.at[k, "utterance"] != text
        # A negative is that annotation's own sentence, with its own painting's features.
        for neg, idx in (("neg_wrong_emotion", j), ("neg_other_image", k)):
            own = ex[(idx, 0)]["positive"]
            for key in ("input_ids", "prompt_mask", "explanation_mask", "vad"):
                assert np.array_equal(item[neg][key], own[key]), key
            assert not np.array_equal(item[neg]["input_ids"], item["positive"]["input_ids"])
            assert torch.equal(item[neg]["image_features"], prepared.features.get_one(ann.at[idx, "painting_id"]))
    assert fallbacks == n_fallback_expected

    # Deterministic per (seed, epoch); another epoch draws other negatives.
    again = TrainingExamples(prepared.splits["train"], prepared.features, tokenizer, lexicon, seed=3)
    draws = [ex.negatives(i, 0) for i in range(len(ex))]
    assert draws == [again.negatives(i, 0) for i in range(len(ex))]
    assert draws != [ex.negatives(i, 1) for i in range(len(ex))]


def test_collate_contract(prepared):
    loader = make_train_loader(prepared, batch_size=6, seed=0)
    batch = next(iter(loader))
    B, L = 6, prepared.max_length
    K, D = prepared.features.num_patches, prepared.features.feature_dim
    seq = {"input_ids", "segment_ids", "attention_mask", "vad", "prompt_mask", "explanation_mask"}
    assert set(batch) == seq | {
        "image_features", "labels", "emotion", "painting_id", "neg_wrong_emotion", "neg_other_image",
        "neg_wrong_emotion_valid",
    }  # fmt: skip
    assert batch["image_features"].dtype == torch.float32 and batch["image_features"].shape == (B, K, D)
    for key in ("input_ids", "segment_ids", "attention_mask", "labels"):
        assert batch[key].dtype == torch.long and batch[key].shape == (B, L)
    assert batch["vad"].dtype == torch.float32 and batch["vad"].shape == (B, L, 3)
    for key in ("prompt_mask", "explanation_mask"):
        assert batch[key].dtype == torch.bool and batch[key].shape == (B, L)
    assert batch["emotion"].dtype == torch.long and batch["emotion"].shape == (B,)
    assert isinstance(batch["painting_id"], list) and len(batch["painting_id"]) == B
    assert batch["neg_wrong_emotion_valid"].dtype == torch.bool and batch["neg_wrong_emotion_valid"].shape == (B,)
    for neg in ("neg_wrong_emotion", "neg_other_image"):
        assert set(batch[neg]) == seq | {"image_features"}
        for key in seq | {"image_features"}:
            assert batch[neg][key].dtype == batch[key].dtype and batch[neg][key].shape == batch[key].shape
    # Features are the cached ones of each painting.
    assert torch.equal(batch["image_features"], prepared.features.get(batch["painting_id"]))
    # collate() on items picked by hand gives the same structure.
    direct = collate([loader.dataset[(i, 0)] for i in range(3)])
    assert set(direct) == set(batch) and direct["input_ids"].shape == (3, L)


def test_loader_is_seeded_and_examples_are_tokenised_once(prepared):
    first = lambda seed, epoch=0: next(iter(make_train_loader(prepared, 8, seed, epoch=epoch)))  # noqa: E731
    a, b, c = first(0), first(0), first(1)
    assert a["painting_id"] == b["painting_id"] and torch.equal(a["input_ids"], b["input_ids"])
    assert a["painting_id"] != c["painting_id"]
    assert first(0, epoch=1)["painting_id"] != a["painting_id"]
    assert make_train_loader(prepared, 8, 0).dataset is make_train_loader(prepared, 8, 0).dataset
    loader = make_train_loader(prepared, 8, 0)
    epoch0 = [pid for batch in loader for pid in batch["painting_id"]]
    epoch1 = [pid for batch in loader for pid in batch["painting_id"]]  # the epoch advances
    assert sorted(epoch0) == sorted(epoch1) == sorted(prepared.splits["train"].annotations["painting_id"])
    assert epoch0 != epoch1


def test_eval_batches(prepared):
    ids = prepared.splits["test"].painting_ids
    seen = []
    for batch_ids, feats in eval_batches(prepared, "test", batch_size=7):
        assert feats.shape[0] == len(batch_ids) <= 7 and feats.dtype == torch.float32
        seen.extend(batch_ids)
    assert seen == ids  # one entry per painting
    sub = [p for b, _ in eval_batches(prepared, "test", 7, max_paintings=5) for p in b]
    assert len(sub) == 5 and sub == [p for b, _ in eval_batches(prepared, "test", 3, max_paintings=5) for p in b]


def test_prepare_data_is_reproducible(work, prepared, tokenizer, lexicon, encoder):
    before = FeatureCache.total_images_encoded
    again = prepare_data(_cfg(work), tokenizer, lexicon, encoder)
    assert FeatureCache.total_images_encoded == before and again.features.images_encoded == 0
    assert again.fingerprint == prepared.fingerprint
    other = prepare_data(_cfg(work, **{"model.max_length": 24}), tokenizer, lexicon, encoder)
    assert other.fingerprint != prepared.fingerprint


# ------------------------------------------------------------------ feature cache


def test_feature_cache(tmp_path, synth, encoder):
    frame, _ = load_artemis(synth.csv)
    found, _ = resolve_image_paths(frame, synth.image_dir)
    paths = dict(sorted(found.items())[:20])
    cache = FeatureCache.ensure(encoder, paths, tmp_path, batch_size=8)
    assert cache.images_encoded == 20 and len(cache) == 20
    (shard,) = {name for name, _ in cache.index.values()}
    assert isinstance(cache.shard(shard), np.memmap) and cache.shard(shard).dtype == np.float16
    assert cache.shard(shard).shape == (20, encoder.num_patches, encoder.feature_dim)

    # Values: the encoder's output for the image, stored in fp16.
    from PIL import Image

    key = sorted(paths)[3]
    direct = encoder(encoder.preprocess(Image.open(paths[key])).unsqueeze(0))[0]
    torch.testing.assert_close(cache.get([key])[0], direct, atol=2e-2, rtol=1e-2)
    assert cache.get([key, key]).shape == (2, encoder.num_patches, encoder.feature_dim)

    # Computed once: another ensure() on the same (encoder, images) does no forward pass.
    before = FeatureCache.total_images_encoded
    again = FeatureCache.ensure(encoder, paths, tmp_path, batch_size=8)
    assert again.images_encoded == 0 and FeatureCache.total_images_encoded == before
    assert again.directory == cache.directory

    # Other weights never reuse it.
    other = FeatureCache.ensure(_tiny_encoder(seed=1), paths, tmp_path, batch_size=8)
    assert other.images_encoded == 20 and other.directory.parent != cache.directory.parent
    # Another preprocessing (image size) neither.
    enc2 = _tiny_encoder()
    enc2.image_size = 48
    assert enc2.cache_key() != encoder.cache_key()
    # Another image set is another view of the same per-image features: nothing to encode.
    fewer = FeatureCache.ensure(encoder, dict(sorted(paths.items())[:10]), tmp_path, batch_size=8)
    assert fewer.images_encoded == 0 and fewer.directory != cache.directory
    torch.testing.assert_close(fewer.get([key]), cache.get([key]))


def _ensure_in_process(paths, cache_dir, barrier, queue):
    import sevlm  # noqa: F401

    from sevlm.data import FeatureCache

    encoder = _tiny_encoder()
    barrier.wait()
    cache = FeatureCache.ensure(encoder, paths, cache_dir, batch_size=4)
    queue.put((cache.images_encoded, str(cache.directory), cache.get(sorted(paths)).sum().item()))


def test_feature_cache_two_processes_at_once(tmp_path, synth):
    frame, _ = load_artemis(synth.csv)
    found, _ = resolve_image_paths(frame, synth.image_dir)
    paths = {k: str(v) for k, v in sorted(found.items())[:24]}
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_process, args=(paths, str(tmp_path), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [0, 24]  # exactly one process encoded
    assert results[0][1] == results[1][1] and results[0][2] == results[1][2]
    directory = Path(results[0][1])
    assert sorted(f.name for f in directory.iterdir()) == ["index.json"]
    shards = sorted(f.suffix for f in (directory.parent / "shards").iterdir())
    assert shards == [".json", ".npy"]  # one shard, complete, no temporary file left
    assert len(FeatureCache(directory)) == 24


# ------------------------------------------------------------------- bad input


def test_missing_column(tmp_path):
    path = tmp_path / "no_utterance.csv"
    pd.DataFrame([["Realism", "a", "awe", 5]], columns=["art_style", "painting", "emotion", "repetition"]).to_csv(path, index=False)
    with pytest.raises(ArtEmisFormatError) as err:
        load_artemis(path)
    assert str(path) in str(err.value) and "'utterance'" in str(err.value)


def test_unknown_emotion(tmp_path):
    rows = _rows(4)
    rows[5][2] = "happiness"
    path = _write_csv(tmp_path / "bad_emotion.csv", rows)
    with pytest.raises(ArtEmisFormatError) as err:
        load_artemis(path)
    assert str(path) in str(err.value) and "row 6" in str(err.value) and "'happiness'" in str(err.value)
    frame, report = load_artemis(path, on_unknown_emotion="skip")
    assert report.skips == {"unknown_emotion": 1} and len(frame) == 11
    assert report.examples["unknown_emotion"] == [f"{path} row 6: 'happiness'"]


def test_empty_or_nan_utterance(tmp_path):
    rows = _rows(4)
    rows[2][3] = ""
    rows[7][3] = "   "
    path = _write_csv(tmp_path / "empty.csv", rows)
    frame, report = load_artemis(path)
    assert report.skips == {"empty_utterance": 2} and len(frame) == 10
    assert report.examples["empty_utterance"] == [f"{path} row 3", f"{path} row 8"]
    assert "empty_utterance: 2" in report.summary()


def test_duplicate_rows(tmp_path):
    rows = _rows(4)
    rows.append(list(rows[4]))
    rows.append([*rows[0][:3], "  " + rows[0][3].replace(" ", "   ") + " ", rows[0][4]])  # same after whitespace
    path = _write_csv(tmp_path / "dups.csv", rows)
    frame, report = load_artemis(path)
    assert report.skips == {"duplicate_row": 2} and len(frame) == 12
    assert report.examples["duplicate_row"] == [
        f"{path} row 13: duplicate of {path} row 5",
        f"{path} row 14: duplicate of {path} row 1",
    ]


def test_too_short_and_bad_repetition(tmp_path):
    rows = _rows(4)
    rows[1][3] = "so sad"
    path = _write_csv(tmp_path / "short.csv", rows)
    frame, report = load_artemis(path, min_tokens=5)
    assert report.skips == {"too_short": 1} and report.examples["too_short"] == [f"{path} row 2: 2 token(s)"]
    rows[3][4] = "many"
    path = _write_csv(tmp_path / "rep.csv", rows)
    with pytest.raises(ArtEmisFormatError, match=r"rep\.csv.*row 4"):
        load_artemis(path)


def test_nfc_nfd_names(tmp_path):
    nfc_name = unicodedata.normalize("NFC", "józef-mehoffer_élégie-1")
    nfd_name = unicodedata.normalize("NFD", nfc_name)
    assert nfc_name != nfd_name
    images = tmp_path / "images" / "Realism"
    images.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / f"{nfc_name}.jpg")  # file on disk in NFC
    Image.new("RGB", (8, 8)).save(images / f"{unicodedata.normalize('NFD', 'émile_nuit-2')}.jpg")  # in NFD
    rows = [
        ["Realism", nfd_name, "awe", "the dark sea is grand and majestic", 2],  # CSV in NFD
        ["Realism", nfc_name, "fear", "the dark sea is scary and creepy today", 2],  # CSV in NFC
        ["Realism", unicodedata.normalize("NFC", "émile_nuit-2"), "sadness", "the night looks sad and lonely", 1],
    ]
    path = _write_csv(tmp_path / "names.csv", rows)
    frame, report = load_artemis(path)
    assert frame["painting_id"].nunique() == 2  # both spellings are one painting
    assert report.notes["names_normalised_to_nfc"] == 1
    found, missing = resolve_image_paths(frame, tmp_path / "images")
    assert not missing and len(found) == 2
    assert found[f"Realism/{nfc_name}"].exists() and found["Realism/" + unicodedata.normalize("NFC", "émile_nuit-2")].exists()


@pytest.fixture()
def small_copy(tmp_path, work):
    """A private copy of a small synthetic dataset to damage."""
    src = generate_synthetic_artemis(work / "synth-small", n_paintings=40, annotators=3, seed=5)
    dst = tmp_path / "copy"
    shutil.copytree(src.root, dst)
    return dst


def _cfg_v1(tmp_path, root):
    return apply_overrides(
        tiny(),
        {
            "data.dataset": "artemis_v1",
            "data.artemis_csv": str(root / "artemis_dataset_release_v0.csv"),
            "data.image_dir": str(root / "images"),
            "data.feature_cache_dir": str(tmp_path / "features"),
        },
    )


def test_missing_and_corrupt_images(tmp_path, small_copy, tokenizer, lexicon, encoder):
    images = sorted((small_copy / "images").rglob("*.jpg"))
    missing, corrupt = images[0], images[1]
    missing.unlink()
    corrupt.write_bytes(b"this is not a jpeg")
    data = prepare_data(_cfg_v1(tmp_path, small_copy), tokenizer, lexicon, encoder)
    report = data.report
    assert report.skips["missing_image"] == 1 and str(missing) in report.examples["missing_image"][0]
    assert report.skips["corrupt_image"] == 1 and str(corrupt) in report.examples["corrupt_image"][0]
    bad = {f"{p.parent.name}/{p.stem}" for p in (missing, corrupt)}
    kept = {pid for s in data.splits.values() for pid in s.painting_ids}
    assert len(kept) == 38 and not (bad & kept)
    assert "missing_image: 1" in report.summary() and "corrupt_image: 1" in report.summary()

    # A wrong image folder (nothing found) is an error, not 40 skips.
    cfg = _cfg_v1(tmp_path, small_copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg.data.image_dir = str(empty)
    with pytest.raises(FileNotFoundError, match="none of the"):
        prepare_data(cfg, tokenizer, lexicon, encoder)


def test_v2_combined_through_prepare_data(tmp_path, small_copy, tokenizer, lexicon, encoder):
    from sevlm.data.synthetic import synthetic_paths

    paths = write_synthetic_contrastive(synthetic_paths(small_copy), n_paintings=10, annotators=3, seed=4)
    cfg = _cfg_v1(tmp_path, small_copy)
    cfg.data.dataset = "artemis_v2"
    cfg.data.contrastive_csv = str(paths.contrastive_csv)
    data = prepare_data(cfg, tokenizer, lexicon, encoder)
    frame, _ = load_artemis(paths.csv, paths.contrastive_csv)
    where = {pid: name for name, s in data.splits.items() for pid in s.painting_ids}
    pairs = frame[["painting_id", "anchor_id"]].dropna().drop_duplicates()
    assert len(pairs) == 10 and all(where[p] == where[a] for p, a in zip(pairs["painting_id"], pairs["anchor_id"]))
    assert sum(len(s.painting_ids) for s in data.splits.values()) == 50
    cfg.data.contrastive_csv = None
    with pytest.raises(ValueError, match="contrastive_csv"):
        prepare_data(cfg, tokenizer, lexicon, encoder)


def test_load_report_counts_every_reason(tmp_path):
    rows = _rows(5)
    rows[0][3] = ""
    rows[1][3] = "too short"
    rows.append(list(rows[6]))
    path = _write_csv(tmp_path / "mixed.csv", rows)
    frame, report = load_artemis(path)
    assert isinstance(report, LoadReport)
    assert report.skips == {"empty_utterance": 1, "too_short": 1, "duplicate_row": 1}
    assert report.rows_read == {str(path): 16} and report.rows_kept == len(frame) == 13
    assert Counter(frame["source"]) == {path.name: 13}
