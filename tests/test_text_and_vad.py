"""Tokenizer, full-sentence layout, output parsing and VAD lexicon loading."""

import subprocess
import sys

import pytest

from sevlm.emotions import EMOTIONS, dominant_emotion
from sevlm.text import IGNORE_INDEX, SEVLMTokenizer, parse_generation
from sevlm.vad import LexiconFormatError, VADLexicon, load_lexicon, load_nrc


@pytest.fixture(scope="module")
def tok():
    return SEVLMTokenizer.offline()


def test_offline_bpe_known_ids(tok):
    assert tok.encode_text("Hello world") == [15496, 995]
    assert tok.encode_text(" because") == [780]
    assert tok.bos_id == tok.eos_id == 50256
    assert len({tok.pad_id, tok.prompt_segment_id, tok.explanation_segment_id}) == 3
    assert min(tok.pad_id, tok.prompt_segment_id, tok.explanation_segment_id) >= 50257


def test_word_by_word_encoding_matches_whole_text(tok):
    text = "The woman's face looks sad, because the sky is dark-grey and gloomy!"
    ids, words = tok.encode_words(text)
    assert ids == tok.encode_text(" " + text)
    assert len(words) == len(ids)
    assert "gloomy" in words and "woman's" in words


def test_full_sentence_spans_are_computed_per_sample(tok):
    vad = {"calm": (0.5, -0.8, 0.6)}
    short = tok.encode_full_sentence("awe", "a calm sea", vad=lambda w: vad.get(w, (0, 0, 0)))
    long = tok.encode_full_sentence("something else", "a calm sea")
    # "something else" takes one more BPE token than "awe": the boundary moves with it.
    assert sum(long.prompt_mask) == sum(short.prompt_mask) + 1
    for enc in (short, long):
        n = sum(enc.attention_mask)
        assert len(enc.input_ids) == 30
        assert enc.input_ids[0] == tok.bos_id and enc.input_ids[n - 1] == tok.eos_id
        first_expl = enc.explanation_mask.index(1)
        assert enc.input_ids[first_expl] == tok.connective_id
        assert all(s == tok.prompt_segment_id for s in enc.segment_ids[:first_expl])
        assert all(s == tok.explanation_segment_id for s in enc.segment_ids[first_expl:n])
        # bos and "the emotion is" are never predicted; the emotion words are.
        assert enc.labels[: 1 + len(tok.prompt_ids)] == [IGNORE_INDEX] * (1 + len(tok.prompt_ids))
        assert enc.labels[1 + len(tok.prompt_ids)] == enc.input_ids[1 + len(tok.prompt_ids)]
        assert enc.labels[n:] == [IGNORE_INDEX] * (30 - n)
    calm_pos = [i for i, v in enumerate(short.vad) if v != (0.0, 0.0, 0.0)]
    assert calm_pos and all(short.explanation_mask[i] for i in calm_pos)


def test_long_explanation_is_cut_but_keeps_eos(tok):
    enc = tok.encode_full_sentence("fear", "dark " * 100, max_length=30)
    assert enc.truncated and sum(enc.attention_mask) == 30 and enc.input_ids[-1] == tok.eos_id


def test_unknown_emotion_is_rejected(tok):
    with pytest.raises(ValueError, match="unknown emotion"):
        tok.encode_full_sentence("joy", "x")


def test_decode_round_trip(tok):
    enc = tok.encode_full_sentence("sadness", "the old man is alone")
    assert tok.decode(enc.input_ids) == "the emotion is sadness because the old man is alone"


@pytest.mark.parametrize(
    "text, expected",
    [
        (" awe because the mountain is huge", ("awe", "the mountain is huge")),
        ("something else because it is odd because of the colors",
         ("something else", "it is odd because of the colors")),
        ("contentment the sky is calm", ("contentment", "the sky is calm")),
        ("the woman is smiling", (None, "the woman is smiling")),
        ("the emotion is fear because", ("fear", "")),
        ("", (None, "")),
        ("awesome colors", (None, "awesome colors")),
        ("awe because the sky\ufffd is \x18big\tand\nblue", ("awe", "the sky is big and blue")),
    ],
)
def test_parse_generation(text, expected):
    assert parse_generation(text) == expected


def test_dominant_emotion_definition():
    assert dominant_emotion(["awe", "awe", "fear", "anger"]) == "awe"  # exactly half
    assert dominant_emotion(["awe", "awe", "fear", "fear"]) is None  # tie
    assert dominant_emotion(["awe", "fear", "anger"]) is None  # no half
    assert dominant_emotion([]) is None
    assert len(EMOTIONS) == 9 and EMOTIONS[-1] == "something else"


def test_warriner_and_anew_are_bipolar_with_lemma_fallback():
    lex = load_lexicon("warriner")
    assert len(lex) > 13000
    happy = lex("happy")
    assert happy[0] > 0.5 and all(-1 <= v <= 1 for v in happy)
    assert lex("happier") == happy  # inflected form finds its lemma
    assert lex("funeral")[0] < -0.5
    assert lex("qwertyuiop") == (0.0, 0.0, 0.0)
    anew = load_lexicon("anew")
    assert anew("happy")[0] > 0.5 and anew("lonely")[0] < 0


@pytest.mark.parametrize("header", [True, False])
def test_nrc_unipolar_and_bipolar(tmp_path, header):
    uni = tmp_path / "uni.txt"
    bi = tmp_path / "bi.txt"
    head = "word\tvalence\tarousal\tdominance\n" if header else ""
    uni.write_text(head + "banquet\t0.765\t0.571\t0.6\nfuneral\t0.073\t0.38\t0.393\n")
    bi.write_text(head + "banquet\t0.53\t0.142\t0.2\nfuneral\t-0.854\t-0.24\t-0.214\n")
    u = load_nrc(uni)
    assert u["banquet"] == pytest.approx((0.53, 0.142, 0.2))
    assert load_nrc(bi)["funeral"] == pytest.approx((-0.854, -0.24, -0.214))
    lex = load_lexicon("nrc", str(bi))
    assert lex("funerals") == pytest.approx((-0.854, -0.24, -0.214))


def test_malformed_nrc_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("banquet\t0.5\t0.1\t0.2\nfuneral\t-0.8\toops\t0.1\n")
    with pytest.raises(LexiconFormatError, match=r"bad\.txt: line 2: non-numeric"):
        load_nrc(bad)
    bad.write_text("banquet\t0.5\t0.1\n")
    with pytest.raises(LexiconFormatError, match=r"bad\.txt: line 1: expected 4"):
        load_nrc(bad)
    bad.write_text("banquet\t0.5\t0.1\t7\n")
    with pytest.raises(LexiconFormatError, match=r"line 1: VAD values must lie in -1..1"):
        load_nrc(bad)


def test_malformed_warriner_csv_names_file_and_line(tmp_path):
    from sevlm.vad import load_warriner

    bad = tmp_path / "w.csv"
    bad.write_text("Word,V.Mean.Sum,A.Mean.Sum,D.Mean.Sum\nhappy,8,6,7\nsad,x,2,3\n")
    with pytest.raises(LexiconFormatError, match=r"w\.csv: line 3"):
        load_warriner(bad)
    bad.write_text("Word,V.Mean.Sum\nhappy,8\n")
    with pytest.raises(LexiconFormatError, match=r"missing column"):
        load_warriner(bad)


def test_nrc_without_path_explains_licence():
    with pytest.raises(ValueError, match="not redistributable"):
        load_lexicon("nrc")


def test_lexicon_fingerprint_changes_with_content():
    a = VADLexicon({"x": (0.1, 0.2, 0.3)}, name="t")
    b = VADLexicon({"x": (0.1, 0.2, 0.4)}, name="t")
    assert a.fingerprint() != b.fingerprint()


def _fresh_interpreter(code: str, timeout: int) -> None:
    """Run ``code`` in a new Python process; it must end by printing "ok"."""
    out = subprocess.run([sys.executable, "-c", code + "print('ok')\n"], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_the_names_and_the_config_import_without_torch_or_ray():
    """The MLflow schema, sevlm's names and config, what every trial shares and the worker's
    report protocol, and the analysis package are plain: a fresh interpreter that imports
    them has imported neither torch nor Ray."""
    _fresh_interpreter(
        "import sys\n"
        "import sevlm, sevlm.config, sevlm.names, trainables.tracking_schema, analysis\n"
        "import trainables.settings, trainables.report_protocol\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'ray') if m in sys.modules)\n"
        "assert not heavy, heavy\n",
        timeout=120,
    )


def test_open_clip_and_transformers_import_on_cpu_torch():
    """A fresh interpreter that imports the project can import both: the torchvision shim
    runs on torchvision's first import (torch is not imported before that)."""
    _fresh_interpreter(
        "import sys, sevlm\n"
        "assert 'torch' not in sys.modules\n"
        "import open_clip, torchvision\n"
        "from transformers import GPT2LMHeadModel\n",
        timeout=300,
    )


def test_training_and_generation_give_the_same_vad_to_word_pieces():
    """Training (both sentence builders) and generation (GeneratedTokenFeatures, what
    SEVLM.generate feeds back) give every token the VAD of its word prefix so far: the same
    vectors for the same tokens, and no piece reveals the pieces that follow it."""
    import numpy as np

    from sevlm.data.examples import _SentenceBuilder
    from sevlm.text import GeneratedTokenFeatures

    tok = SEVLMTokenizer.offline(8000)  # the tiny preset's vocabulary: many split words
    lexicon = load_lexicon("warriner")
    text = "this serene landscape looks curious, afraid and melancholic to me."
    ids, keys = tok.encode_words(text)
    assert len(ids) > len(text.split())  # several words are split into pieces
    serene = tok.encode_text(" serene")
    assert len(serene) > 1 and lexicon("serene") != (0.0, 0.0, 0.0)
    start = ids.index(serene[0])
    assert keys[start] != "serene" and keys[start + len(serene) - 1] == "serene"

    builder = _SentenceBuilder(tok, lexicon, max_length=40)
    for emotion in ("awe", "something else"):
        sentence = tok.encode_full_sentence(emotion, text, vad=lexicon, max_length=40)
        built = builder.build(EMOTIONS.index(emotion), *builder.explanation(text))
        assert np.allclose(built["vad"], np.asarray(sentence.vad, dtype=np.float32))

        # Generation: after "<bos> the emotion is", feed the sentence's own tokens.
        prompt, segments = tok.inference_prompt()
        n = sum(sentence.attention_mask)
        fed = sentence.input_ids[len(prompt): n - 1]  # emotion words ... last explanation token
        features = GeneratedTokenFeatures(tok, lexicon, 1, segments[-1])
        generated = [features.step([t]) for t in fed]
        gen_vad = [v[0] for _, _, v in generated]
        gen_segments = [s[0] for s, _, _ in generated]
        assert np.allclose(gen_vad, np.asarray(sentence.vad[len(prompt): n - 1]))
        assert gen_segments == sentence.segment_ids[len(prompt): n - 1]
