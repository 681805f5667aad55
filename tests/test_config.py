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
