"""The three probes of the reference code's choices (docs/regime.md), each a configuration
switch, checked at the tensor level; and the loss diagnostic's contrastive score columns."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_model import LEXICON, build, make_batch, model_cfg  # the model tests' batch and model
from torch import nn

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import ModelConfig, validate
from sevlm.model import SEVLM
from sevlm.model.heads import GPT2_INIT_STD, ContrastiveHead, explanation_span, masked_mean
from sevlm.text import SEVLMTokenizer
from sevlm.training.loss_diagnostics import EXP_OVERFLOW, Snapshot, overflow_note, score_stats


@pytest.fixture(scope="module")
def tok() -> SEVLMTokenizer:
    return SEVLMTokenizer.offline()


def test_the_defaults_are_unchanged():
    cfg = ModelConfig()
    assert cfg.contrastive_head_layers == 2 and cfg.contrastive_head_init == "pytorch"
    assert cfg.contrastive_mean_includes_padding is False and cfg.decoder_init == "scratch" and cfg.alpha == 2.0


def test_bad_probe_settings_are_refused():
    for bad, message in (({"contrastive_head_layers": 0}, "contrastive_head_layers"),
                         ({"contrastive_head_init": "xavier"}, "contrastive_head_init"),
                         ({"decoder_init": "warm"}, "decoder_init")):
        with pytest.raises(ValueError, match=message):
            validate(dataclasses.replace(ModelConfig(), **bad))


# ------------------------------------------------------------------------ the head


def linears(head: ContrastiveHead) -> list[nn.Linear]:
    return [m for m in head.mlp if isinstance(m, nn.Linear)]


def test_the_head_has_the_hidden_layers_it_is_asked_for():
    for layers in (1, 2, 4):
        head = ContrastiveHead(8, 16, 32, layers=layers)
        shapes = [tuple(m.weight.shape) for m in linears(head)]
        assert shapes == [(32, 8 + 2 * 16)] + [(32, 32)] * (layers - 1) + [(1, 32)]
        assert sum(isinstance(m, nn.ReLU) for m in head.mlp) == layers
        assert head(torch.zeros(3, 8), torch.zeros(3, 16), torch.zeros(3, 16)).shape == (3,)


def test_the_gpt2_initialisation_is_normal_0_02_with_zero_biases():
    torch.manual_seed(0)
    gpt2 = ContrastiveHead(768, 768, 768, layers=4, init="gpt2")
    weights = torch.cat([m.weight.reshape(-1) for m in linears(gpt2)])
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weights.std().item() == pytest.approx(GPT2_INIT_STD, rel=0.01)
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears(gpt2))
    # PyTorch's default: uniform in +-1/sqrt(fan_in), biases too.
    default = ContrastiveHead(768, 768, 768, layers=4)
    first = linears(default)[0]
    bound = 1 / math.sqrt(first.in_features)
    assert first.weight.abs().max().item() <= bound
    assert first.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert torch.count_nonzero(first.bias) > 0


def test_the_model_builds_the_head_the_configuration_names(tok):
    model = build(tok, contrastive_head_layers=4, contrastive_head_init="gpt2")
    layers = linears(model.contrastive_head)
    assert len(layers) == 5 and all(torch.count_nonzero(m.bias) == 0 for m in layers)
    assert model(make_batch(tok)).contrastive_scores.shape == (4, 3)
    # Only the head changes: the decoder starts from the same weights.
    default = build(tok)
    assert all(torch.equal(a, b) for a, b in zip(model.decoder.parameters(), default.decoder.parameters()))


# ------------------------------------------------------------- the explanation mean


def test_the_explanation_span_with_padding_runs_to_the_end_of_the_sequence():
    expl = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 1, 1, 1, 1, 1],
                         [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(explanation_span(expl), expl)
    assert explanation_span(expl, include_padding=True).int().tolist() == [
        [0, 0, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0, 0]]
    hidden = torch.randn(3, 8, 4)
    with_padding = masked_mean(hidden, explanation_span(expl, include_padding=True))
    # The reference code's mean: every position from the explanation's start on.
    assert torch.allclose(with_padding[0], hidden[0, 2:].mean(0))
    assert torch.allclose(with_padding[1], hidden[1, 3:].mean(0))
    assert torch.allclose(masked_mean(hidden, expl)[0], hidden[0, 2:5].mean(0))


def test_the_padding_switch_changes_the_scores_of_padded_rows_only(tok):
    batch = make_batch(tok)
    plain = build(tok)
    padded = SEVLM.from_config(model_cfg(contrastive_mean_includes_padding=True), tok, 32, seed=0, vad_lexicon=LEXICON)
    padded.load_state_dict(plain.state_dict())
    plain.eval(), padded.eval()
    with torch.no_grad():
        a, b = plain(batch), padded(batch)
    # Same language loss (the decoder is untouched), other contrastive scores: every row
    # of this batch is padded (L = 24), so its explanation mean takes in the padding.
    assert torch.equal(a.loss_language, b.loss_language)
    assert (batch["attention_mask"] == 0).any(dim=1).all()
    assert not torch.allclose(a.contrastive_scores, b.contrastive_scores)
    # A batch without padding: both means are the same.
    full = make_batch(tok, length=int(batch["attention_mask"].sum(1).max()))
    keep = (full["attention_mask"] == 1).all(dim=1)
    with torch.no_grad():
        c, d = plain(full), padded(full)
    assert torch.allclose(c.contrastive_scores[keep, 0], d.contrastive_scores[keep, 0])


# --------------------------------------------------------------------------- alpha


def test_alpha_weights_the_contrastive_term_in_the_total(tok):
    batch = make_batch(tok)
    outs = {}
    for alpha in (1.0, 2.0):
        model = build(tok, alpha=alpha)
        model.eval()
        with torch.no_grad():
            outs[alpha] = model(batch)
    one, two = outs[1.0], outs[2.0]
    assert torch.equal(one.loss_contrastive, two.loss_contrastive)  # alpha does not change the weights
    assert torch.allclose(one.loss, one.loss_language + one.loss_emotion + one.loss_contrastive)
    assert torch.allclose(two.loss - one.loss, one.loss_contrastive)


# -------------------------------------------------------------------- diagnostics


def test_score_stats_give_the_largest_score_and_the_margin_over_valid_negatives():
    scores = torch.tensor([[2.0, 1.0, -3.0],
                           [0.5, 4.0, 0.0],
                           [1.0, 90.0, -1.0]])
    max_abs, margin = score_stats(scores)
    assert max_abs == 90.0
    assert margin == pytest.approx(((2 - 1) + (0.5 - 4) + (1 - 90)) / 3)
    # Row 2's first negative is left out of its softmax: out of the statistics too.
    valid = torch.tensor([[True, True], [True, True], [False, True]])
    max_abs, margin = score_stats(scores, valid)
    assert max_abs == 4.0
    assert margin == pytest.approx(((2 - 1) + (0.5 - 4) + (1 - (-1))) / 3)
    # A row without any valid negative has no margin.
    none = torch.tensor([[False, False], [True, True], [True, True]])
    assert score_stats(scores, none)[1] == pytest.approx(((0.5 - 4) + (1 - 90)) / 2)


def test_the_overflow_note_names_the_precisions_where_exp_overflows():
    def snap(value):
        return Snapshot(step=0, terms={}, total_grad_norm=1.0, clip_factor=1.0, max_abs_score=value, score_margin=0.0)

    assert EXP_OVERFLOW["float32"] == pytest.approx(88.72, abs=0.01)
    assert EXP_OVERFLOW["float16"] == pytest.approx(11.09, abs=0.01)
    assert overflow_note([snap(None)]) is None
    assert "below the overflow" in overflow_note([snap(3.0)])
    assert "float16" in overflow_note([snap(20.0)]) and "float32" not in overflow_note([snap(20.0)])
    assert "float16 and float32" in overflow_note([snap(5.0), snap(100.0)])  # the worst one counts
    assert math.exp(EXP_OVERFLOW["float16"] + 0.1) > torch.finfo(torch.float16).max


def test_the_diagnostic_logs_the_scores_of_a_contrastive_run(tmp_path, data_root):
    from conftest import small_config

    from sevlm.training.loss_diagnostics import run

    full = run(small_config(data_root, tmp_path / "full"), steps=2, every=1)
    assert all(s.max_abs_score is not None and s.max_abs_score >= 0 and math.isfinite(s.score_margin) for s in full)
    baseline = run(small_config(data_root, tmp_path / "base", **{"model.use_contrastive": False}), steps=1, every=1)
    assert baseline[0].max_abs_score is None and baseline[0].score_margin is None
