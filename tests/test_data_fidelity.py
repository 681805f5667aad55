"""Fidelity to ArtEmis (issue 13): long utterances, v2 anchors and splits, the load report
that reaches the user, and the EA classifier's identity. Every input is a small file made
here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import apply_overrides, tiny
from sevlm.data import (
    REPORT_FILE,
    REST,
    V1_COLUMNS,
    ArtEmisFormatError,
    LoadReport,
    assign_splits,
    generate_synthetic_artemis,
    load_artemis,
    prepare_data,
    read_report,
    training_examples,
    write_synthetic_contrastive,
)
from sevlm.data.artemis import count_word_tokens
from sevlm.data.examples import TRUNCATION_NOTE
from sevlm.data.report import PARAM_PREFIX
from sevlm.emotions import EMOTIONS

CONTRASTIVE = [*V1_COLUMNS[:4], "anchor_art_style", "anchor_painting"]


def _rows(n_paintings: int = 6, per: int = 3, style: str = "Realism") -> list:
    return [
        [style, f"work-{i}", EMOTIONS[(i + k) % 9], f"the painting number {i} makes me feel thing {k}", per]
        for i in range(n_paintings)
        for k in range(per)
    ]


def _write(path: Path, rows: list, columns=V1_COLUMNS) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def encoder():
    from sevlm.model.image_encoder import build_image_encoder

    return build_image_encoder(tiny().model.image_encoder, seed=0)


@pytest.fixture()
def small_copy(tmp_path_factory, tmp_path):
    src = generate_synthetic_artemis(tmp_path_factory.getbasetemp() / "fidelity-synth", n_paintings=40, annotators=3, seed=5)
    dst = tmp_path / "copy"
    shutil.copytree(src.root, dst)
    return dst


def _cfg_v1(tmp_path: Path, root: Path, **overrides):
    return apply_overrides(tiny(), {
        "data.dataset": "artemis_v1",
        "data.artemis_csv": str(root / "artemis_dataset_release_v0.csv"),
        "data.image_dir": str(root / "images"),
        "data.feature_cache_dir": str(tmp_path / "features"),
        **overrides,
    })


# ------------------------------------------------------------------ long utterances


def test_word_tokens_are_counted_like_python_re_also_for_non_ascii():
    texts = pd.Series(["café au lait, très bien!", "naïve x2 — ok", "it's 3.5 stars", "日本語 テスト", "a_b c"])
    expected = [len(re.findall(r"\w+|[^\w\s]", t)) for t in texts]
    assert count_word_tokens(texts).tolist() == expected == [7, 4, 7, 2, 2]


def test_long_utterances_are_dropped_with_their_count_or_kept_behind_a_switch(tmp_path):
    rows = _rows()
    rows[4][3] = " ".join(["word"] * 30) + "!"  # 30 words, 31 tokens: tokens decide
    rows[10][3] = " ".join(["other"] * 30)  # exactly 30 tokens: kept
    path = _write(tmp_path / "long.csv", rows)

    frame, report = load_artemis(path)
    assert report.skips == {"too_long": 1} and len(frame) == 17
    assert report.examples["too_long"] == [f"{path} row 5: 31 token(s)"]
    assert "skipped too_long: 1" in report.summary()

    kept, report_kept = load_artemis(path, long_utterances="keep")
    assert len(kept) == 18 and report_kept.skips == {}
    # The limits are configuration: a higher limit keeps it.
    assert len(load_artemis(path, max_tokens=31)[0]) == 18
    with pytest.raises(ValueError, match="long_utterances"):
        load_artemis(path, long_utterances="cut")


def test_long_utterances_leave_every_split_and_truncations_are_counted_at_the_token_limit(
    tmp_path, small_copy, tokenizer, lexicon, encoder
):
    csv = small_copy / "artemis_dataset_release_v0.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    first = frame.drop_duplicates(["art_style", "painting"]).copy()  # one extra row per painting
    first["utterance"] = "it reminds me of " + " ".join(f"thing{i}" for i in range(40))
    pd.concat([frame, first]).to_csv(csv, index=False)

    dropped = prepare_data(_cfg_v1(tmp_path, small_copy), tokenizer, lexicon, encoder)
    assert dropped.report.skips["too_long"] == 40
    for split in dropped.splits.values():  # test references and votes too, as ArtEmis
        for refs in split.references.values():
            assert all(len(re.findall(r"\w+|[^\w\s]", r)) <= 30 for r in refs)

    kept = prepare_data(_cfg_v1(tmp_path, small_copy, **{"data.long_utterances": "keep"}), tokenizer, lexicon, encoder)
    assert "too_long" not in kept.report.skips
    assert all(any("thing39" in r for r in refs) for s in kept.splits.values() for refs in s.references.values())
    examples = training_examples(kept)
    n_train_paintings = len(kept.splits["train"].painting_ids)
    # counted where the cut happens: the full sentence exceeds L tokens
    assert kept.report.notes[TRUNCATION_NOTE] == examples.stats["truncated_sentences"] >= n_train_paintings
    assert not any(k.startswith("longer_than") for k in kept.report.notes)  # no more word counts


# --------------------------------------------------------------------- v2 anchors


def test_missing_v2_anchors_are_counted_and_all_missing_is_refused(tmp_path):
    v1 = _write(tmp_path / "v1.csv", _rows())
    contrastive = [
        ["Baroque", "new-0", "awe", "the light on the face is calm and warm", "Realism", "work-0"],
        ["Baroque", "new-1", "fear", "the dark water looks cold and deep", "Realism", "work-99"],
        ["Baroque", "new-1", "sadness", "the grey sky over the dark water", "Realism", "work-99"],
    ]
    path = _write(tmp_path / "Contrastive.csv", contrastive, CONTRASTIVE)
    frame, report = load_artemis(v1, path)
    assert report.notes["contrastive_anchor_missing_from_v1_paintings"] == 1
    assert report.notes["contrastive_rows_with_missing_anchor"] == 2
    assert report.note_examples["contrastive_anchor_missing_from_v1_paintings"] == [
        f"{path} row 2: anchor Realism/work-99 is not in {v1}"
    ]
    assert len(frame) == 21  # kept, and reported

    wrong = _write(tmp_path / "other_v1.csv", _rows(style="Cubism"))
    with pytest.raises(ArtEmisFormatError) as err:
        load_artemis(wrong, path)
    message = str(err.value)
    assert str(path) in message and str(wrong) in message and "none of its 2 anchor paintings" in message


# ------------------------------------------------------------------------- splits


def test_v2_keeps_every_v1_split_and_contrastive_paintings_follow_their_anchor(tmp_path):
    paths = generate_synthetic_artemis(tmp_path / "s", n_paintings=60, annotators=3, seed=1, high_repetition=3)
    v1_frame, _ = load_artemis(paths.csv)
    v1_split = assign_splits(v1_frame, seed=2021)
    paths = write_synthetic_contrastive(paths, n_paintings=40, annotators=3, seed=2)
    frame, report = load_artemis(paths.csv, paths.contrastive_csv)
    split = assign_splits(frame, seed=2021, report=report)

    assert split[v1_split.index].equals(v1_split)  # no v1 painting moved
    anchors = frame[frame["contrastive"]].drop_duplicates("painting_id").set_index("painting_id")["anchor_id"]
    followed = 0
    for pid, anchor in anchors.items():
        if v1_split[anchor] == REST:
            assert split[pid] == "train"
        else:
            assert split[pid] == v1_split[anchor]
            followed += 1
    assert {"val", "test"} & set(split[anchors.index])  # contrastive paintings are evaluated too
    assert report.notes["contrastive_paintings_following_their_anchor"] == followed
    # Deterministic whatever the row order.
    assert assign_splits(frame.iloc[::-1], seed=2021).equals(split)


# ------------------------------------------------------------------------- report


def test_load_report_round_trips_as_json_and_flat_params(tmp_path):
    from trainables import tracking_schema as schema

    report = LoadReport(rows_read={"a.csv": 10}, rows_kept=7)
    report.skip("too_long", 3, ["a.csv row 2: 40 token(s)"])
    report.note("names_normalised_to_nfc", 1)
    report.split_paintings.update(train=5, val=1, test=1)
    report.split_annotations.update(train=5, val=1, test=1)
    path = report.write_json(tmp_path)
    assert path == tmp_path / REPORT_FILE
    assert read_report(tmp_path) == report
    assert json.loads(path.read_text())["examples"] == {"too_long": ["a.csv row 2: 40 token(s)"]}
    params = report.params()
    assert params[f"{PARAM_PREFIX}skipped.too_long"] == 3
    assert params[f"{PARAM_PREFIX}note.names_normalised_to_nfc"] == 1
    assert params[f"{PARAM_PREFIX}split.train.paintings"] == 5 and params[f"{PARAM_PREFIX}rows_kept"] == 7
    # What the MLflow schema (and so the analysis) reads under: the names sevlm writes.
    assert params[f"{schema.PARAM_DATA_REPORT_PREFIX}rows_kept"] == 7
    assert (tmp_path / schema.ARTIFACT_DATA_REPORT).is_file()
    assert read_report(tmp_path / "nowhere") is None


# ------------------------------------------------------------- EA classifier identity


def test_ea_classifier_identity_depends_on_training_utterances_and_labels_only():
    from sevlm.metrics.emotion_classifier import ClassifierParams, classifier_identity

    texts, labels = ["a calm sea", "a dark storm"], ["contentment", "fear"]
    key = classifier_identity(texts, labels)
    assert key == classifier_identity(list(texts), list(labels))
    assert key != classifier_identity(texts, ["contentment", "sadness"])
    assert key != classifier_identity([*texts, "more"], [*labels, "awe"])
    assert key != classifier_identity(texts, labels, ClassifierParams(C=2.0))


def test_a_run_writes_its_report_and_logs_report_and_classifier_identity(tmp_path, data_root):
    from sevlm.metrics.emotion_classifier import classifier_identity
    from sevlm.names import EA_CLASSIFIER_PARAM
    from sevlm.training.loop import build_context, run_params
    from tests.conftest import small_config
    from trainables import tracking_schema as schema

    shared = tmp_path / "shared" / "ea"
    cfg = small_config(data_root, tmp_path / "run", **{"data.ea_classifier_dir": str(shared)})
    ctx = build_context(cfg)
    report = read_report(tmp_path / "run")
    assert report is not None and report.notes[TRUNCATION_NOTE] >= 0 and report.split_paintings["train"] > 0
    params = run_params(ctx)
    assert {k: v for k, v in params.items() if k.startswith(PARAM_PREFIX)} == report.params()
    train = ctx.data.splits["train"].annotations
    identity = classifier_identity(train["utterance"].tolist(), train["emotion"].tolist())
    assert params[schema.PARAM_EA_CLASSIFIER] == identity  # the name the analysis reads
    assert (shared / f"emotion-classifier-{identity}").is_dir()  # where every node can see it

    # Another sentence length (so another data fingerprint), same utterances: the same classifier.
    other = small_config(data_root, tmp_path / "run2", **{
        "data.ea_classifier_dir": str(shared), "model.max_length": 24,
    })
    ctx2 = build_context(other)
    assert ctx2.data.fingerprint != ctx.data.fingerprint
    assert run_params(ctx2)[EA_CLASSIFIER_PARAM] == identity
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == [f"emotion-classifier-{identity}"]
    assert np.allclose(
        ctx2.classifier.predict_proba(["a dark storm"]), ctx.classifier.predict_proba(["a dark storm"])
    )


# ------------------------------------------------------------- per-image feature cache


def test_feature_cache_encodes_each_distinct_image_content_once(tmp_path, small_copy, encoder):
    import os

    from PIL import Image

    from sevlm.data import FeatureCache

    images = sorted((small_copy / "images").rglob("*.jpg"))
    paths = {f"{p.parent.name}/{p.stem}": p for p in images}
    keys = sorted(paths)
    v1 = {k: paths[k] for k in keys[:30]}
    cache = FeatureCache.ensure(encoder, v1, tmp_path, batch_size=8)
    assert cache.images_encoded == 30

    # v2 shares v1's images: only its new ones are encoded.
    v2 = {k: paths[k] for k in keys[20:]}
    shared = FeatureCache.ensure(encoder, v2, tmp_path, batch_size=8)
    assert shared.images_encoded == 10 and len(shared) == 20
    torch.testing.assert_close(shared.get(keys[20:30]), cache.get(keys[20:30]))
    both = shared.get([keys[25], keys[35]])  # rows from two shards in one batch
    torch.testing.assert_close(both[1], shared.get_one(keys[35]))

    # The same content under another name is not encoded again.
    twin = tmp_path / "twin.jpg"
    twin.write_bytes(paths[keys[0]].read_bytes())
    assert FeatureCache.ensure(encoder, {**v1, "copy/twin": twin}, tmp_path, batch_size=8).images_encoded == 0

    # Touching a file changes nothing; fixing one image re-encodes that image only.
    os.utime(paths[keys[1]], ns=(1, 1))
    touched = FeatureCache.ensure(encoder, v1, tmp_path, batch_size=8)
    assert touched.images_encoded == 0 and touched.directory == cache.directory
    Image.new("RGB", (64, 64), (200, 30, 30)).save(paths[keys[1]], format="JPEG")
    fixed = FeatureCache.ensure(encoder, v1, tmp_path, batch_size=8)
    assert fixed.images_encoded == 1 and fixed.directory != cache.directory
    assert not torch.equal(fixed.get_one(keys[1]), cache.get_one(keys[1]))
    torch.testing.assert_close(fixed.get_one(keys[2]), cache.get_one(keys[2]))

    # A corrupt image is decoded once, then remembered as failed.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    first = FeatureCache.ensure(encoder, {**v1, "x/broken": broken}, tmp_path, batch_size=8)
    assert first.images_encoded == 0 and str(broken) in first.failed["x/broken"]
    before = FeatureCache.total_forward_calls
    again = FeatureCache.ensure(encoder, {**v2, "x/broken": broken}, tmp_path, batch_size=8)
    assert FeatureCache.total_forward_calls == before and "x/broken" in again.failed
