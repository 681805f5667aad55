"""Pre-training the decoder on text (sevlm/pretrain.py): a corpus disjoint from the
benchmark, a folder that --decoder reads back, keyed by its settings and built once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import DecoderConfig, PretrainConfig, apply_overrides, tiny
from sevlm.data.synthetic import generate_synthetic_artemis, object_words, possible_explanations
from sevlm.data.text_corpus import corpus_words, generate_corpus
from sevlm.pretrain import (
    MANIFEST,
    ensure_pretrained_decoder,
    pretrained_decoder_dir,
    pretrained_decoder_key,
    resolve_decoder_init,
)
from sevlm.text import SEVLMTokenizer

ROOT = Path(__file__).resolve().parents[1]
# A few seconds of pre-training: enough to exercise every path.
SMALL = {"pretrain.sentences": 300, "pretrain.batch_size": 32, "pretrain.warmup_steps": 2}


def small_cfg(cache: Path, **overrides):
    return apply_overrides(tiny(), {"data.feature_cache_dir": str(cache / "features"), **SMALL, **overrides})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small pre-trained decoder, shared by the module's tests."""
    cache = tmp_path_factory.mktemp("pretrain-cache")
    cfg = small_cfg(cache)
    lines: list[str] = []
    folder = ensure_pretrained_decoder(cfg, report=lines.append)
    return cfg, folder, lines


# ------------------------------------------------------------------------ corpus


def test_the_corpus_shares_no_sentence_with_any_benchmark_explanation(tmp_path):
    # By construction: every benchmark explanation names its painting's object, and the
    # corpus uses none of those words.
    assert object_words() and not corpus_words() & object_words()
    default = PretrainConfig()
    corpus = generate_corpus(default.sentences, default.corpus_seed, default.val_fraction)
    texts = {x for _, x in corpus.train + corpus.val}
    assert len(corpus.train) + len(corpus.val) == default.sentences
    # Against everything the benchmark generator can write (any seed, any size)...
    everything = possible_explanations()
    assert not texts & everything
    # ...and against the generated benchmarks at the default seeds and sizes (tiny preset
    # and DataConfig defaults), which also checks that the enumeration misses nothing.
    for paintings in sorted({tiny().data.synthetic_paintings, 240}):
        data = tiny().data
        paths = generate_synthetic_artemis(tmp_path / f"n{paintings}", paintings, data.synthetic_annotators,
                                           data.synthetic_seed)
        utterances = set(pd.read_csv(paths.csv, dtype=str, keep_default_na=False)["utterance"])
        assert utterances <= everything
        assert not texts & {" ".join(u.lower().split()) for u in utterances}


def test_the_corpus_is_a_function_of_its_seed_and_holds_out_distinct_sentences():
    a, b = generate_corpus(500, 7), generate_corpus(500, 7)
    assert a == b
    assert generate_corpus(500, 8) != a
    assert len(a.val) == 50 and len(a.train) == 450
    assert not set(a.train) & set(a.val)
    assert len(set(a.train)) == len(a.train)
    emotions = {e for e, _ in a.train}
    assert len(emotions) == 9
    with pytest.raises(ValueError, match="val_fraction"):
        generate_corpus(10, 0, val_fraction=1.0)


# ------------------------------------------------------------------------ folder


def test_the_folder_is_keyed_by_what_made_it(tmp_path):
    cfg = small_cfg(tmp_path)
    key = pretrained_decoder_key(cfg)
    assert key.startswith("textlm-2x64-") and pretrained_decoder_dir(cfg).name == key
    assert pretrained_decoder_dir(cfg).parent == tmp_path / "pretrained_decoders"
    # What made the weights changes the key...
    for change in ({"pretrain.epochs": 2}, {"pretrain.corpus_seed": 1}, {"pretrain.lr": 1e-3},
                   {"model.decoder.n_embd": 32}, {"model.max_length": 24}, {"model.decoder.bpe_merges": 4000}):
        assert pretrained_decoder_key(apply_overrides(cfg, change)) != key, change
    # ...what only fine-tuning uses does not: every trial of a sweep shares one decoder.
    for same in ({"seed": 3}, {"model.alpha": 1.0}, {"train.lr_decoder": 1e-4}, {"model.use_contrastive": False},
                 {"model.decoder_init": "pretrained"}):
        assert pretrained_decoder_key(apply_overrides(cfg, same)) == key, same


def test_the_saved_folder_is_read_back_by_decoder_with_its_tokenizer(built):
    from sevlm.model.decoder import build_decoder

    cfg, folder, lines = built
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["key"] == folder.name and manifest["val_perplexity"] < manifest["initial_val_perplexity"]
    assert any("validation perplexity" in line for line in lines)
    # The tokenizer: the preset's own (offline 8000-merge BPE and the three special tokens),
    # none added twice when SEVLMTokenizer wraps it again.
    offline = SEVLMTokenizer.offline(cfg.model.decoder.bpe_merges)
    loaded = SEVLMTokenizer.for_decoder(str(folder))
    assert len(loaded) == len(offline) == manifest["vocabulary"]
    for name in ("bos_id", "eos_id", "pad_id", "prompt_segment_id", "explanation_segment_id", "connective_id"):
        assert getattr(loaded, name) == getattr(offline, name), name
    assert loaded.emotion_ids == offline.emotion_ids
    text = "the emotion is fear because the white skull looks terrifying"
    assert loaded.encode_text(text) == offline.encode_text(text)
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(folder)) == len(loaded)  # wrapping added nothing
    # The weights: the saved GPT-2, no resized embeddings, new cross-attention layers.
    saved = load_file(str(folder / "model.safetensors"))
    dec = build_decoder(DecoderConfig(name_or_path=str(folder), dropout=0.0), loaded, image_feature_dim=64, seed=5)
    assert dec.wte.num_embeddings == len(loaded)
    state = dec.gpt.state_dict()
    assert any("crossattention" in k for k in state) and not any("crossattention" in k for k in saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    again = build_decoder(DecoderConfig(name_or_path=str(folder), dropout=0.0), loaded, image_feature_dim=64, seed=5)
    other = build_decoder(DecoderConfig(name_or_path=str(folder), dropout=0.0), loaded, image_feature_dim=64, seed=6)
    cross = [k for k in state if "crossattention.c_attn.weight" in k]
    assert all(torch.equal(state[k], again.gpt.state_dict()[k]) for k in cross)  # seeded by the trial
    assert not all(torch.equal(state[k], other.gpt.state_dict()[k]) for k in cross)


def test_train_reads_the_folder_with_decoder_and_with_decoder_init(built):
    from sevlm.model.weights import ensure_pretrained_available
    from sevlm.train import build_parser, resolve_config

    cfg, folder, _ = built
    by_path = resolve_config(build_parser().parse_args(["--decoder", str(folder)]))
    assert by_path.model.decoder.name_or_path == str(folder) and by_path.model.decoder.bpe_merges is None
    ensure_pretrained_available(by_path.model)
    flagged = resolve_config(build_parser().parse_args(
        ["--decoder-init", "pretrained", "--feature-cache-dir", cfg.data.feature_cache_dir]
        + [f"--set={k}={v}" for k, v in SMALL.items()]))
    assert flagged.model.decoder_init == "pretrained" and flagged.model.decoder.name_or_path is None
    resolved = resolve_decoder_init(flagged, report=pytest.fail)  # reuses the folder: builds nothing
    assert resolved.model.decoder.name_or_path == str(folder) and resolved.model.decoder.bpe_merges is None
    assert resolved.model.decoder_init == "pretrained"
    assert resolve_decoder_init(resolved, report=pytest.fail) == resolved
    scratch = apply_overrides(flagged, {"model.decoder_init": "scratch"})
    assert resolve_decoder_init(scratch, report=pytest.fail) is scratch


def test_a_relative_cache_resolves_to_an_absolute_folder(tmp_path, monkeypatch):
    """A run's config.json must find its decoder from any working directory (restore, held-out
    evaluation)."""
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(tiny(), {"data.feature_cache_dir": "cache/features", "model.decoder_init": "pretrained",
                                   **SMALL, "pretrain.sentences": 120})
    resolved = resolve_decoder_init(cfg, report=lambda _line: None)
    path = Path(resolved.model.decoder.name_or_path)
    assert path.is_absolute() and path == (tmp_path / "cache" / "pretrained_decoders" / path.name)
    assert (path / MANIFEST).is_file()


@pytest.mark.slow
def test_a_run_starts_from_the_pretrained_weights_and_records_the_folder(built, data_root, tmp_path):
    from conftest import small_config

    from sevlm.training.loop import build_context, run_params

    cfg, folder, _ = built
    run_cfg = small_config(data_root, tmp_path / "run", **{"model.decoder_init": "pretrained",
                                                           "data.feature_cache_dir": cfg.data.feature_cache_dir,
                                                           **SMALL})
    ctx = build_context(run_cfg)
    assert ctx.cfg.model.decoder.name_or_path == str(folder)
    assert run_params(ctx)["model.decoder.name_or_path"] == str(folder)
    saved = load_file(str(folder / "model.safetensors"))
    state = ctx.model.decoder.gpt.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


@pytest.mark.slow
def test_concurrent_builds_train_once(tmp_path):
    """Two processes asking for the same decoder at once: one trains, the other waits and reuses."""
    script = (
        "import sys; from sevlm.config import apply_overrides, tiny; "
        "from sevlm.pretrain import ensure_pretrained_decoder; "
        f"cfg = apply_overrides(tiny(), {{'data.feature_cache_dir': sys.argv[1], 'pretrain.sentences': 120, "
        "'pretrain.batch_size': 32, 'pretrain.warmup_steps': 1}); "
        "print('FOLDER', ensure_pretrained_decoder(cfg))"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "features")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(o.count("pre-training the decoder on text") for o in outputs) == 1, outputs
    folders = {line.split(" ", 1)[1] for o in outputs for line in o.splitlines() if line.startswith("FOLDER ")}
    assert len(folders) == 1
    assert [p.name for p in (tmp_path / "pretrained_decoders").iterdir() if not p.name.endswith(".lock")] == \
        [Path(folders.pop()).name]  # no temporary folder left behind


def test_the_cli_builds_then_reuses_and_refuses_a_named_decoder(tmp_path, capsys):
    from sevlm.pretrain import main

    args = ["--feature-cache-dir", str(tmp_path / "features"), "--set", "pretrain.sentences=120",
            "--set", "pretrain.batch_size=32", "--set", "pretrain.warmup_steps=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation perplexity" in out and "decoder folder:" in out
    assert main(args) == 0
    assert "already built" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--preset", "paper"])
    assert exc.value.code == 2
    assert "name_or_path must be none" in capsys.readouterr().err
