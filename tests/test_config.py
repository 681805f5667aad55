"""Configuration dataclasses: paper defaults, presets, flattening and overrides."""

import pytest

from sevlm.config import (
    apply_overrides,
    from_flat_dict,
    from_json,
    paper,
    preset,
    tiny,
    to_flat_dict,
    to_json,
)


def test_paper_defaults():
    cfg = paper()
    assert cfg.model.alpha == 2.0
    assert cfg.model.emotion_encoder_layers == 3 and cfg.model.emotion_encoder_heads == 1
    assert cfg.train.lr_decoder == 2e-5 and cfg.train.lr_vad == 4e-5
    assert cfg.train.batch_size == 32 and cfg.model.max_length == 30
    assert cfg.eval.top_p == 0.9 and cfg.eval.decoding == "nucleus"
    assert cfg.model.image_encoder.arch == "ViT-B-16"
    assert cfg.model.decoder.name_or_path == "distilgpt2"
    d = cfg.model.decoder
    assert (d.n_layer, d.n_head, d.n_embd) == (6, 12, 768)


def test_tiny_is_offline():
    cfg = tiny()
    assert cfg.model.image_encoder.pretrained is None
    assert cfg.model.decoder.name_or_path is None
    assert cfg.data.dataset == "synthetic"


def test_flat_round_trip_and_json():
    cfg = tiny()
    assert from_flat_dict(to_flat_dict(cfg)) == cfg
    assert from_json(to_json(cfg)) == cfg


def test_overrides_coerce_strings_and_reject_unknown_keys():
    cfg = apply_overrides(
        tiny(),
        {"model.alpha": "0.5", "model.use_vad_head": "false", "model.decoder.name_or_path": "none",
         "train.epochs": "3", "data.split_fractions": "[0.8, 0.1, 0.1]"},
    )
    assert cfg.model.alpha == 0.5 and cfg.model.use_vad_head is False
    assert cfg.train.epochs == 3 and cfg.data.split_fractions == (0.8, 0.1, 0.1)
    with pytest.raises(ValueError, match="unknown configuration key"):
        apply_overrides(tiny(), {"model.alhpa": 1})
    with pytest.raises(ValueError, match="expected a boolean"):
        apply_overrides(tiny(), {"model.use_vad_head": "maybe"})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_every_value_error_names_its_key_and_what_it_expects():
    from sevlm.config import apply_overrides, tiny

    cases = [
        ({"model.alpha": "abc"}, "model.alpha: expected a number, got 'abc'"),
        ({"train.epochs": "2.5"}, "train.epochs: expected an integer, got 2.5"),
        ({"train.epochs": "-1"}, r"train.epochs must be at least 1 \(got -1\)"),
        ({"model.alpha": -0.5}, "model.alpha must be at least 0"),
        ({"train.lr_decoder": "0"}, "train.lr_decoder must be greater than 0"),
        ({"eval.top_p": "1.5"}, r"eval.top_p must be in \(0, 1\]"),
        ({"model.alpah": 2}, r"unknown configuration key 'model.alpah' \(did you mean model.alpha"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            apply_overrides(tiny(), overrides)
    # a search algorithm's numpy numbers are numbers, of the field's type
    import numpy as np

    cfg = apply_overrides(tiny(), {"model.emotion_encoder_layers": np.int64(4), "model.alpha": np.float64(1.5)})
    assert (cfg.model.emotion_encoder_layers, cfg.model.alpha) == (4, 1.5)
    assert type(cfg.model.emotion_encoder_layers) is int and type(cfg.model.alpha) is float


# ------------------------------------------------------------------------- compose


def test_compose_parses_each_layer_once_and_the_later_layer_wins():
    import json

    from sevlm.config import compose

    cfg = compose("tiny", {"model.alpha": "0.5", "train.epochs": "3"}, {"model.alpha": 4})
    assert (cfg.model.alpha, cfg.train.epochs) == (4.0, 3)
    assert type(cfg.train.epochs) is int
    # A composed base, flattened and sent through JSON (a sweep's spec), composes again to
    # the same configuration: a trial is that base plus its point.
    base = json.loads(json.dumps(to_flat_dict(cfg)))
    assert compose(base) == cfg
    assert compose(base, {"seed": 3}).seed == 3 and compose(base, {"seed": 3}).model.alpha == 4.0
    with pytest.raises(ValueError, match="train.epochs must be at least 1"):
        compose(base, {"train.epochs": 0})


def test_compose_derives_what_follows_from_a_layer_and_never_what_a_layer_sets():
    from sevlm.config import compose

    off = {"model.neg_wrong_emotion": "false", "model.neg_other_image": False}
    assert compose("tiny", off).model.use_contrastive is False  # nothing to contrast
    assert compose("tiny", off, {"model.neg_other_image": True}).model.use_contrastive is True
    # ... once composed, a point that leaves the negatives alone keeps the base's choice
    assert compose(compose("tiny", off), {"model.alpha": 1}).model.use_contrastive is False
    with pytest.raises(ValueError, match="at least one negative type"):
        compose("tiny", off, {"model.use_contrastive": True})
    # a decoder with a checkpoint brings its own tokenizer, unless bpe_merges is given too
    assert tiny().model.decoder.bpe_merges == 8000
    assert compose("tiny", {"model.decoder.name_or_path": "distilgpt2"}).model.decoder.bpe_merges is None
    given = {"model.decoder.name_or_path": "distilgpt2", "model.decoder.bpe_merges": 500}
    assert compose("tiny", given).model.decoder.bpe_merges == 500
    assert compose("tiny", {"model.decoder.name_or_path": "none"}).model.decoder.bpe_merges == 8000


def test_compose_makes_paths_absolute_against_the_folder_it_is_given(tmp_path):
    from sevlm.config import compose

    (tmp_path / "weights.pt").write_text("")
    cfg = compose("tiny", {"data.synthetic_dir": "data/syn", "vad.path": "s3://bucket/nrc.txt",
                           "model.image_encoder.pretrained": "weights.pt"}, cwd=tmp_path)
    assert cfg.data.synthetic_dir == str(tmp_path / "data" / "syn")
    assert cfg.data.feature_cache_dir == str(tmp_path / ".cache" / "features")  # the preset's, too
    assert cfg.vad.path == "s3://bucket/nrc.txt"  # a URI stays
    assert cfg.model.image_encoder.pretrained == str(tmp_path / "weights.pt")  # a file that exists
    assert compose("paper", cwd=tmp_path).model.decoder.name_or_path == "distilgpt2"  # a hub name stays
    assert compose("tiny").data.synthetic_dir == "data/synthetic"  # without cwd nothing moves


def test_the_one_parser_says_the_same_to_sevlm_train_and_to_a_sweep(capsys, sweep_in_tmp):
    """`--set` errors are the configuration's, word for word, whichever command is given them."""
    from sevlm.train import main as train_main
    from sweeps import ablations, alpha_search

    for item, message in [
        ("model.alpha=abc", "model.alpha: expected a number, got 'abc'"),
        ("model.alpah=2", "unknown configuration key 'model.alpah' (did you mean model.alpha"),
        ("train.epochs=-1", "train.epochs must be at least 1 (got -1)"),
        ("model.alpha", "--set expects KEY=VALUE, got 'model.alpha'"),
    ]:
        with pytest.raises(SystemExit) as exited:
            train_main(["--set", item, "--print-config"])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err, item
        for sweep in (alpha_search, ablations):
            assert sweep.main(["--set", item]) == 2
            assert message in capsys.readouterr().err, (sweep.__name__, item)
    # a searched range is checked by the same rules, at the points tried before the sweep
    assert alpha_search.main(["--space", "model.alpha=float:-1:2"]) == 2
    assert "model.alpha must be at least 0 (got -1.0)" in capsys.readouterr().err
