"""Held-out evaluation on EmoSet: the reader's bad-input rules, closed-set scoring against a
direct computation, the synthetic EmoSet-format set, the sweep flag and the report column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sevlm  # noqa: F401  (torchvision shim first)
import torch
from PIL import Image

from sevlm.config import tiny
from sevlm.data.emoset import EMOSET_EMOTIONS, EmoSetFormatError, load_emoset
from sevlm.data.synthetic_emoset import generate_synthetic_emoset
from sevlm.emotions import EMOTIONS
from sevlm.heldout import parse_heldout
from sevlm.heldout import scoring
from sevlm.model import SEVLM
from sevlm.text import SEVLMTokenizer
from sevlm.vad import VADLexicon

D_V, K = 32, 8
LEXICON = VADLexicon({"because": (0.0, 0.1, 0.0), "sad": (-0.8, -0.3, -0.4)}, name="t", lemmatize=False)


def test_the_eight_emoset_emotions_are_artemis_without_something_else():
    assert EMOSET_EMOTIONS == EMOTIONS[:8] and "something else" not in EMOSET_EMOTIONS


# ------------------------------------------------------------------------- reader


def _image(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 30)).save(path)


def _emoset(root: Path, entries, images=None, split: str = "test") -> Path:
    """An EmoSet-format folder: ``entries`` as the split file, every listed image written
    except the ones ``images`` leaves out."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if isinstance(entry, list) and len(entry) in (3, 4) and (images is None or entry[-2] in images):
            _image(root, entry[-2])
    (root / f"{split}.json").write_text(json.dumps(entries), encoding="utf-8")
    return root


def test_reader_reads_both_entry_forms_and_counts_missing_and_repeated_images(tmp_path):
    entries = [
        ["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"],
        ["fear", "fear_00002", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"],  # EmoSet's README form
        ["Sadness ", "image/sadness/sadness_00003.jpg", "annotation/sadness/sadness_00003.json"],
        ["anger", "image/anger/anger_00004.jpg", "annotation/anger/anger_00004.json"],  # image missing
        ["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"],  # listed twice
    ]
    present = {e[-2] for e in entries} - {"image/anger/anger_00004.jpg"}
    root = _emoset(tmp_path / "emoset", entries, present)
    split = load_emoset(root, "test")
    assert [(i.key, i.emotion, i.entry) for i in split.images] == [
        ("image/awe/awe_00001.jpg", "awe", 0), ("image/fear/fear_00002.jpg", "fear", 1),
        ("image/sadness/sadness_00003.jpg", "sadness", 2),
    ]
    assert all(i.path.is_file() for i in split.images)
    assert split.report.skips == {"missing_image": 1, "duplicate_image": 1}
    assert "test.json entry 3" in split.report.examples["missing_image"][0]
    assert "first listed at entry 0" in split.report.examples["duplicate_image"][0]
    assert "EmoSet load report" in split.report.summary() and "missing_image: 1" in split.report.summary()


def test_unknown_emotion_is_an_error_naming_file_and_entry_or_a_counted_skip(tmp_path):
    entries = [["awe", "image/awe/a.jpg", "annotation/awe/a.json"],
               ["something else", "image/x/b.jpg", "annotation/x/b.json"],  # ArtEmis-only
               ["joy", "image/joy/c.jpg", "annotation/joy/c.json"]]
    root = _emoset(tmp_path / "emoset", entries)
    with pytest.raises(EmoSetFormatError) as err:
        load_emoset(root, "test")
    message = str(err.value)
    assert str(root / "test.json") in message
    assert "entry 1: unknown emotion 'something else'" in message and "entry 2: unknown emotion 'joy'" in message
    split = load_emoset(root, "test", on_unknown_emotion="skip")
    assert [i.emotion for i in split.images] == ["awe"]
    assert split.report.skips == {"unknown_emotion": 2}


@pytest.mark.parametrize(
    "content, message",
    [
        ('[["awe", "image/awe/a.jpg", ', "not valid JSON (line 1"),
        ('{"awe": ["image/awe/a.jpg"]}', "expected a JSON list"),
        ('[["awe", "image/awe/a.jpg"]]', "entry 0: expected a list [emotion, image path, annotation path]"),
        ('[["awe", "image/awe/a.jpg", "x.json"], ["awe", 3, "x.json"]]', "entry 1: every field must be a string"),
        ('[["awe", "../outside.jpg", "x.json"]]', "entry 0: image path '../outside.jpg' must stay inside"),
        ('[["awe", "  ", "x.json"]]', "entry 0: empty image path"),
    ],
)
def test_malformed_split_file_is_an_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "test.json").write_text(content, encoding="utf-8")
    with pytest.raises(EmoSetFormatError) as err:
        load_emoset(tmp_path, "test")
    assert str(tmp_path / "test.json") in str(err.value) and message in str(err.value)


def test_missing_split_file_and_no_image_at_all_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="val.json"):
        load_emoset(tmp_path, "val")
    _emoset(tmp_path, [["awe", "image/awe/a.jpg", "annotation/awe/a.json"]], images=set())
    with pytest.raises(EmoSetFormatError, match="no usable image"):
        load_emoset(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown EmoSet split"):
        load_emoset(tmp_path, "dev")


# ----------------------------------------------------------------- synthetic set


def test_synthetic_emoset_is_balanced_readable_and_generated_once(tmp_path):
    root = generate_synthetic_emoset(tmp_path / "synthetic-emoset", images_per_emotion=2, seed=3)
    for name in ("train", "val", "test"):
        split = load_emoset(root, name)
        assert len(split) == 16 and not split.report.skips
        assert sorted(split.labels().values()) == sorted(EMOSET_EMOTIONS * 2)
    first = json.loads((root / "test.json").read_text())[0]
    assert len(first) == 4 and (root / first[3]).is_file()  # EmoSet's README form, annotations included
    assert json.loads((root / "info.json").read_text())["label2idx"]["emotion"]["sadness"] == 7
    stamp = (root / "test.json").stat().st_mtime_ns
    generate_synthetic_emoset(root, images_per_emotion=2, seed=3)
    assert (root / "test.json").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------- closed set


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset's model and vocabulary, on one thread (a 64-wide model gains nothing
    from more and loses much when other processes compete for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny().model
    tok = SEVLMTokenizer.for_decoder(cfg.decoder.name_or_path, cfg.decoder.bpe_merges)
    yield SEVLM.from_config(cfg, tok, D_V, seed=0, vad_lexicon=LEXICON).eval()
    torch.set_num_threads(threads)


def _direct_prompt_log_likelihood(model, features: torch.Tensor, emotion: str) -> float:
    """log p("<emotion> because" | image, "<bos> the emotion is"), one sentence at a time
    through the training path (encode_full_sentence + teacher-forced forward)."""
    tok = model.tokenizer
    n_prompt = len(tok.inference_prompt()[0])
    s = tok.encode_full_sentence(emotion, "x", vad=LEXICON, max_length=24)
    end = n_prompt + len(tok.emotion_ids[emotion]) + 1
    ids = torch.tensor([s.input_ids[:end]])
    seq = {"input_ids": ids, "segment_ids": torch.tensor([s.segment_ids[:end]]),
           "attention_mask": torch.ones_like(ids), "vad": torch.tensor([s.vad[:end]]),
           "explanation_mask": torch.tensor([s.explanation_mask[:end]], dtype=torch.bool)}
    with torch.no_grad():
        hidden = model.sequence_hidden_states(seq, model.decoder.project_image(features[None]))
        logits = model.decoder.lm_head(hidden)[0].float()
    logits[:, model.never_generated_ids()] = float("-inf")  # never generated, as in generation
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[t - 1, ids[0, t]] for t in range(n_prompt, end)))


def test_closed_set_picks_the_class_whose_prompt_scores_highest(tiny_model):
    features = torch.randn(4, K, D_V, generator=torch.Generator().manual_seed(1)) * 3
    direct = torch.tensor([[_direct_prompt_log_likelihood(tiny_model, f, e) for e in EMOSET_EMOTIONS]
                           for f in features])
    scores = scoring.closed_set_scores(tiny_model, features, EMOSET_EMOTIONS)
    assert torch.allclose(scores, direct, atol=1e-4)
    predicted = scoring.closed_set_predictions(tiny_model, features, EMOSET_EMOTIONS)
    assert predicted == [EMOSET_EMOTIONS[i] for i in direct.argmax(dim=1).tolist()]
    # The order in which the classes are given changes nothing.
    for order in (list(reversed(EMOSET_EMOTIONS)), [EMOSET_EMOTIONS[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]):
        assert scoring.closed_set_predictions(tiny_model, features, order) == predicted
        assert torch.equal(scoring.closed_set_scores(tiny_model, features, order),
                           scores[:, [EMOSET_EMOTIONS.index(c) for c in order]])


class _PlantedScores(torch.nn.Module):
    """A stand-in model whose nine emotion scores are given (row per image)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def emotion_log_likelihoods(self, image_features):
        return self.scores[: len(image_features)]


def test_closed_set_never_predicts_an_emotion_outside_the_classes_and_breaks_ties_by_artemis_order():
    # Image 0: "something else" scores highest, then fear; image 1: awe and anger tie.
    model = _PlantedScores([[-9, -8, -7, -6, -5, -4, -1, -3, 0], [-5, -1, -7, -6, -1, -4, -3, -3, -2]])
    features = torch.zeros(2, K, D_V)
    for order in (list(EMOSET_EMOTIONS), list(reversed(EMOSET_EMOTIONS))):
        assert scoring.closed_set_predictions(model, features, order) == ["fear", "awe"]
    assert scoring.closed_set_predictions(model, features, ["sadness", "amusement"]) == ["sadness", "sadness"]
    with pytest.raises(ValueError, match="distinct ArtEmis emotions"):
        scoring.closed_set_predictions(model, features, ["awe", "joy"])


def test_free_generation_naming_no_emoset_emotion_counts_as_wrong():
    texts = {"a": "awe because the sky is huge", "b": "something else because it is odd",
             "c": "because nothing", "d": "fear because the skull", "e": "sadness"}
    truth = {"a": "awe", "b": "fear", "c": "anger", "d": "disgust", "e": "sadness"}
    from_text = {k: scoring.generated_class(t, EMOSET_EMOTIONS) for k, t in texts.items()}
    assert from_text == {"a": "awe", "b": None, "c": None, "d": "fear", "e": "sadness"}
    assert scoring.accuracy(from_text, truth) == pytest.approx(2 / 5)
    per_class = scoring.per_class_accuracy(from_text, truth, EMOSET_EMOTIONS)
    assert per_class["awe"] == 1.0 and per_class["fear"] == 0.0 and per_class["amusement"] is None
    matrix = scoring.confusion_matrix(from_text, truth, EMOSET_EMOTIONS)
    assert list(matrix.columns) == [*EMOSET_EMOTIONS, scoring.NO_CLASS]
    assert matrix.to_numpy().sum() == 5 and matrix.at["fear", scoring.NO_CLASS] == 1
    assert matrix.at["disgust", "fear"] == 1 and matrix.at["awe", "awe"] == 1


# ------------------------------------------------------------- sweep and report


def test_heldout_flag_is_a_common_sweep_flag_checked_before_the_sweep_starts(tmp_path):
    import argparse

    from sweeps import SweepError
    from sweeps.cli import DEFINING, _heldout, add_common_flags

    generate_synthetic_emoset(tmp_path / "emoset", images_per_emotion=1)
    spec = parse_heldout("emoset:emoset", cwd=tmp_path)
    assert (spec.dataset, spec.directory, spec.split) == ("emoset", str((tmp_path / "emoset").resolve()), "test")
    assert str(spec) == f"emoset:{tmp_path.resolve() / 'emoset'}"

    parser = argparse.ArgumentParser()
    add_common_flags(parser, kind="alpha_search", default_metric={"tiny": "val/bleu4"})
    assert _heldout(parser.parse_args(["--heldout", "emoset:emoset"]).heldout, tmp_path) == str(spec)
    assert _heldout(parser.parse_args([]).heldout, tmp_path) is None
    assert "heldout" in DEFINING  # --resume keeps the sweep's own held-out set
    for bad, message in (("emoset:nowhere", "test.json not found"), ("imagenet:emoset", "expected <dataset>:<dir>")):
        with pytest.raises(SweepError, match=message):
            _heldout(bad, tmp_path)


def test_report_tables_show_the_heldout_accuracy_when_logged():
    from analysis import tables
    from analysis.runs import INFO_COLUMNS, MlflowSweep
    from trainables import tracking_schema as schema

    heldout = schema.heldout_metric("emoset", "closed_acc")
    trials = pd.DataFrame([["r1", "trial-1", schema.STATUS_FINISHED, "completed", None, None, None, 0, "cpu"],
                           ["r2", "trial-2", schema.STATUS_FINISHED, "completed", None, None, None, 1, "cpu"]],
                          columns=list(INFO_COLUMNS))
    metrics = pd.DataFrame({"test/acc": [50.0, 60.0], heldout: [31.3, None]}, index=["r1", "r2"])
    sweep = MlflowSweep("s", "alpha_search", "0", None, trials, pd.DataFrame(index=["r1", "r2"]), metrics)
    table = tables.per_seed_table(sweep)
    label = tables.HELDOUT_LABELS[heldout]
    assert list(table.display[label]) == ["31.3", "–"]
    without = MlflowSweep("s", "alpha_search", "0", None, trials, pd.DataFrame(index=["r1", "r2"]),
                          metrics[["test/acc"]])
    assert label not in tables.per_seed_table(without).display.columns


def test_heldout_metric_names_agree_between_sevlm_and_the_schema():
    from sevlm.names import HELDOUT_METRIC_NAMES
    from trainables import tracking_schema as schema

    assert schema.heldout_metric("emoset", HELDOUT_METRIC_NAMES[0]) == "heldout/emoset/closed_acc"
