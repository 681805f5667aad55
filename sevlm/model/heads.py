"""The VAD head (emotion loss) and the contrastive head (paper section 4.3-4.4).

All reductions are masked: padding (and, for the contrastive means, positions outside the
span) never enters a mean, whatever values it holds (``torch.where``, not multiplication,
so even inf/NaN at masked positions cannot leak in). Losses are computed in float32 so
they are safe under fp16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sevlm.model.emotion import VAD_DIM


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x`` (B, L, D) over ``dim`` where ``mask`` (B, L) is true; 0 if none."""
    m = mask.bool().unsqueeze(-1)
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim)
    count = m.sum(dim).clamp(min=1).to(total.dtype)
    return total / count


class VADHead(nn.Module):
    """Linear(d_s -> 3): predicts the VAD vector of the next token from each hidden state."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, VAD_DIM)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def emotion_loss(pred_vad: torch.Tensor, target_vad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and lexicon VAD vectors, a masked mean over tokens.

    ``pred_vad``/``target_vad`` (B, T, 3), ``mask`` (B, T). Per token the squared error
    is averaged over the three dimensions, then averaged over masked tokens (0 if none).
    """
    err = (pred_vad.float() - target_vad.float()).pow(2).mean(-1)  # (B, T)
    m = mask.bool()
    total = torch.where(m, err, torch.zeros((), device=err.device)).sum()
    return total / m.sum().clamp(min=1).float()


class ContrastiveHead(nn.Module):
    """S(I, M, X) = MLP(mean(f_I) ⊕ mean(f'_M) ⊕ mean(f'_X)) -> scalar score.

    ``f_I`` are the (projected) image patch tokens, ``f'_M``/``f'_X`` the decoder's last
    hidden states on the prompt / explanation positions (their masked means are the
    inputs). Two hidden layers of width ``hidden`` with ReLU.
    """

    def __init__(self, image_dim: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(image_dim + 2 * text_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, image_mean: torch.Tensor, prompt_mean: torch.Tensor,
                explanation_mean: torch.Tensor) -> torch.Tensor:
        """(B, d_I), (B, d), (B, d) -> scores (B,)."""
        feats = torch.cat([image_mean.to(prompt_mean.dtype), prompt_mean, explanation_mean], dim=-1)
        return self.mlp(feats).squeeze(-1)


def contrastive_loss(
    pos_scores: torch.Tensor,
    neg_scores_list: Sequence[torch.Tensor],
    neg_valid_list: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of the positive against the negatives, batch mean.

    ``loss_b = -log( exp(s+_b) / (exp(s+_b) + sum_k exp(s-_{k,b})) )`` computed with
    ``log_softmax`` (log-sum-exp) in float32. ``neg_valid_list[k]`` (B,) bool, optional:
    where False, negative k of row b is left out of that row's softmax (a row with no valid
    negative contributes 0).
    """
    if len(neg_scores_list) == 0:
        raise ValueError("contrastive_loss needs at least one negative")
    scores = torch.stack([pos_scores.float(), *[s.float() for s in neg_scores_list]], dim=1)
    if neg_valid_list is not None:
        if len(neg_valid_list) != len(neg_scores_list):
            raise ValueError("neg_valid_list must have one entry (or None) per negative")
        keep = [torch.ones_like(pos_scores, dtype=torch.bool)]
        for valid, neg in zip(neg_valid_list, neg_scores_list):
            keep.append(torch.ones_like(neg, dtype=torch.bool) if valid is None else valid.bool())
        scores = scores.masked_fill(~torch.stack(keep, dim=1), float("-inf"))
    return -F.log_softmax(scores, dim=1)[:, 0].mean()
