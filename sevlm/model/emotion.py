"""VAD emotion modelling (paper section 4.2, eq. 2-3).

Every explanation token carries the (valence, arousal, dominance) vector of its word. The
**emotion encoder** (a ``d_model=3`` transformer encoder) turns the explanation's VAD
sequence into f_E; ``f_X ⊕ f_E`` goes through one linear layer back to ``d_s``.

Differences from the reference code (on purpose):

- The encoder is **causal** and sees the explanation only: position t of the explanation
  attends to explanation positions <= t. The reference attended bidirectionally over the
  ground-truth explanation, which leaks future labels at training time and cannot be
  reproduced at generation time. Prompt and padding positions are never attended to as
  keys by explanation positions; to keep every softmax row non-empty (no NaN), each
  position may always attend to itself, so prompt/padding outputs are finite (and unused:
  fusion is applied to explanation positions only).
- The encoder is pre-LayerNorm (``norm_first=True``): with ``d_model=3`` a post-LN encoder
  would normalise every VAD vector to mean 0 / variance 1 and lose its magnitude; the
  pre-LN residual stream keeps the raw VAD vector.
- The fusion layer starts as the identity on the word-embedding part and zeros on the VAD
  part, so pretrained embeddings are not scrambled at the start of training.

``emotion_encoder_layers=0`` (the paper's "w/o emotion encoder") uses the raw VAD vectors
as f_E.
"""

from __future__ import annotations

import torch
from torch import nn

VAD_DIM = 3


def explanation_attention_mask(explanation_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool -> (B, L, L) bool mask, True = *not* allowed to attend.

    Query i may attend to key j iff ``j <= i`` and j is an explanation position, or
    ``j == i`` (so no row is ever fully masked).
    """
    expl = explanation_mask.bool()
    length = expl.shape[1]
    idx = torch.arange(length, device=expl.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key j <= query i
    allowed = causal[None] & expl[:, None, :]  # keys must be explanation positions
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=expl.device)[None]
    return ~allowed


class EmotionEncoder(nn.Module):
    """Causal ``nn.TransformerEncoder`` over VAD vectors (d_model=3), batch first."""

    def __init__(self, num_layers: int, num_heads: int = 1, dim_feedforward: int = 12,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("EmotionEncoder needs at least one layer (0 = no encoder)")
        if VAD_DIM % num_heads != 0:
            raise ValueError(f"emotion_encoder_heads must divide d_model=3, got {num_heads}")
        self.num_heads = num_heads
        layer = nn.TransformerEncoderLayer(
            d_model=VAD_DIM,
            nhead=num_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)

    def forward(self, vad: torch.Tensor, explanation_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, 3) VAD, (B, L) explanation mask -> (B, L, 3) f_E (causal)."""
        mask = explanation_attention_mask(explanation_mask)
        if self.num_heads > 1:
            mask = mask.repeat_interleave(self.num_heads, dim=0)  # (B*heads, L, L)
        return self.encoder(vad, mask=mask, is_causal=False)


class VADFusion(nn.Module):
    """Linear(d_s + 3 -> d_s) on ``f_X ⊕ f_E``, identity/zeros initialised."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model + VAD_DIM, d_model)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[:, :d_model].copy_(torch.eye(d_model))
            self.linear.bias.zero_()

    def forward(self, word_embeds: torch.Tensor, emotion_feats: torch.Tensor) -> torch.Tensor:
        feats = emotion_feats.to(word_embeds.dtype)
        return self.linear(torch.cat([word_embeds, feats], dim=-1))


class VADEmotionModel(nn.Module):
    """Emotion encoder (or raw VAD) + fusion, applied to explanation positions only.

    Prompt positions keep their plain word embeddings (paper eq. 2-3 fuse VAD into X only).
    """

    def __init__(self, d_model: int, num_layers: int, num_heads: int = 1,
                 dim_feedforward: int = 12, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = (
            EmotionEncoder(num_layers, num_heads, dim_feedforward, dropout) if num_layers > 0 else None
        )
        self.fusion = VADFusion(d_model)

    def emotion_features(self, vad: torch.Tensor, explanation_mask: torch.Tensor) -> torch.Tensor:
        """f_E: (B, L, 3); raw VAD when there is no encoder."""
        if self.encoder is None:
            return vad
        return self.encoder(vad, explanation_mask)

    def forward(self, word_embeds: torch.Tensor, vad: torch.Tensor,
                explanation_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Fuse VAD into the explanation positions of ``word_embeds``.

        ``last_only``: ``word_embeds`` is (B, 1, d) for the last position of a (B, L) VAD /
        mask sequence (incremental generation: the tiny encoder is recomputed over the
        whole VAD sequence, the fusion only for the new token).
        """
        f_e = self.emotion_features(vad, explanation_mask)
        expl = explanation_mask.bool()
        if last_only:
            f_e, expl = f_e[:, -1:], expl[:, -1:]
        fused = self.fusion(word_embeds, f_e)
        return torch.where(expl.unsqueeze(-1), fused.to(word_embeds.dtype), word_embeds)
