"""Fusion input (issue 13, paper eq. 2): ``model.fusion_input="paper"`` fuses f^X = word +
position + segment embeddings with f_E; "word" fuses the word embeddings only."""

from __future__ import annotations

import pytest
import torch

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import apply_overrides, tiny, validate
from sevlm.model import SEVLM


@pytest.fixture(scope="module")
def parts():
    from sevlm.text import SEVLMTokenizer
    from sevlm.vad import load_lexicon

    return SEVLMTokenizer.offline(8000), load_lexicon("warriner")


def _model(parts, mode: str) -> SEVLM:
    tokenizer, lexicon = parts
    cfg = apply_overrides(tiny(), {"model.fusion_input": mode})
    return SEVLM.from_config(cfg.model, tokenizer, 64, seed=0, vad_lexicon=lexicon).eval()


def _perturb_fusion(model: SEVLM) -> None:
    with torch.no_grad():
        weight = model.vad_model.fusion.linear.weight
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))


def _hidden(model: SEVLM, parts) -> torch.Tensor:
    """Last hidden states of one full sentence (its explanation positions are fused)."""
    tokenizer, lexicon = parts
    sentence = tokenizer.encode_full_sentence("awe", "the sky is dark and calm", vad=lexicon, max_length=30)
    seq = {key: torch.as_tensor(getattr(sentence, key)).unsqueeze(0) for key in
           ("input_ids", "segment_ids", "attention_mask", "vad", "explanation_mask")}
    seq["vad"] = seq["vad"].float()
    features = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.sequence_hidden_states(seq, model.decoder.project_image(features))


def test_both_inputs_start_identical_and_differ_once_the_fusion_is_trained(parts):
    word, paper = _model(parts, "word"), _model(parts, "paper")
    torch.testing.assert_close(_hidden(word, parts), _hidden(paper, parts), atol=1e-5, rtol=1e-5)
    _perturb_fusion(word)
    paper.load_state_dict(word.state_dict())
    assert not torch.allclose(_hidden(word, parts), _hidden(paper, parts), atol=1e-3)


def test_paper_fusion_generates_the_same_with_and_without_the_cache(parts):
    paper = _model(parts, "paper")
    _perturb_fusion(paper)
    features = torch.randn(3, 16, 64, generator=torch.Generator().manual_seed(1))
    cached = paper.generate(features, max_new_tokens=12, decoding="greedy", use_cache=True)
    plain = paper.generate(features, max_new_tokens=12, decoding="greedy", use_cache=False)
    assert cached == plain


def test_an_unknown_fusion_input_is_refused():
    with pytest.raises(ValueError, match="fusion_input"):
        validate(apply_overrides(tiny(), {"model.fusion_input": "positions"}))
