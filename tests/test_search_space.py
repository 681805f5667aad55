"""Search-space specs (`--space KEY=SPEC`): parsing, checks against the configuration,
the paper's point and the corners tried before a sweep starts."""

from __future__ import annotations

import pytest

from sweeps import SweepError
from sweeps.space import base_point, check_space, corners, parse_param_spec, parse_space


# ------------------------------------------------------------------------- space


@pytest.mark.parametrize("text, kind, low, high, choices", [
    ("log:0.1:10", "log", 0.1, 10.0, ()),
    ("float:0:1", "float", 0.0, 1.0, ()),
    ("int:0:6", "int", 0.0, 6.0, ()),
    ("int:3:3", "int", 3.0, 3.0, ()),
    ("choice:true,false", "choice", None, None, (True, False)),
    ("choice:1,2.5,adam", "choice", None, None, (1, 2.5, "adam")),
])
def test_space_specs_parse(text, kind, low, high, choices):
    spec = parse_param_spec("k", text)
    assert (spec.kind, spec.low, spec.high, spec.choices) == (kind, low, high, choices)
    assert parse_param_spec("k", spec.text()) == spec  # the text round-trips


@pytest.mark.parametrize("text, message", [
    ("log:5:1", "empty range"), ("float:1:1", "empty range"), ("int:4:2", "empty range"),
    ("log:0:1", "LOW > 0"), ("log:a:1", "numbers"), ("log:1", "LOW:HIGH"), ("float:1:inf", "finite"),
    ("choice:", "at least one"), ("choice:1,1", "repeated"), ("uniform:1:2", "unknown kind"),
])
def test_bad_space_specs(text, message):
    with pytest.raises(SweepError, match=message):
        parse_param_spec("k", text)


def test_space_checks_keys_and_types():
    flat = {"model.alpha": 2.0, "model.emotion_encoder_layers": 3, "model.use_vad_head": True, "eval.decoding": "nucleus"}
    assert parse_space({"model.alpha": "off"}) == {}
    check_space(parse_space({"model.alpha": "log:0.1:10", "eval.decoding": "choice:greedy,nucleus"}), flat)
    for texts, message in [
        ({"alpha": "log:0.1:1"}, "did you mean model.alpha"),
        ({"model.use_vad_head": "log:0.1:1"}, "switch"),
        ({"model.emotion_encoder_layers": "float:0:6"}, "integer"),
        ({"model.emotion_encoder_layers": "choice:1,2.5"}, "every choice must be an integer"),
        ({"model.alpha": "choice:1,x"}, "every choice must be a number"),
        ({"eval.decoding": "int:0:1"}, "not numeric"),
        ({"model.alpha": "off"}, "empty"),
    ]:
        with pytest.raises(SweepError, match=message):
            check_space(parse_space(texts), flat)


def test_paper_point_and_corners():
    space = parse_space({"model.alpha": "log:0.1:10", "model.emotion_encoder_layers": "int:0:6",
                         "model.neg_other_image": "choice:true,false"})
    assert base_point(space, {"model.alpha": 2, "model.emotion_encoder_layers": 3, "model.neg_other_image": True}) == {
        "model.alpha": 2.0, "model.emotion_encoder_layers": 3, "model.neg_other_image": True}
    low, high = corners(space)
    assert low == {"model.alpha": 0.1, "model.emotion_encoder_layers": 0, "model.neg_other_image": True}
    assert high == {"model.alpha": 10.0, "model.emotion_encoder_layers": 6, "model.neg_other_image": False}
