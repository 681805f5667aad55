"""The VAD head (emotion loss) and the contrastive head (paper section 4.3-4.4).

All reductions are masked: padding (and, for the contrastive means, positions outside the
span) never enters a mean, whatever values it holds (``torch.where``, not multiplication,
so even inf/NaN at masked positions cannot leak in); the one exception is asked for by
``model.contrastive_mean_includes_padding`` (the reference code's explanation mean, see
:func:`explanation_span`). Losses are computed in float32 so they are safe under fp16
autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sevlm.model.emotion import VAD_DIM

# GPT-2's initializer_range: the reference code's contrastive MLP is initialised with it.
GPT2_INIT_STD = 0.02


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
    inputs). ``layers`` hidden layers of width ``hidden`` with ReLU (default 2; the
    reference code has 4). ``init``: "pytorch" (nn.Linear's default) or "gpt2" (weights
    N(0, 0.02), biases 0: what the reference code's GPT-2 ``init_weights`` does to it).
    """

    def __init__(self, image_dim: int, text_dim: int, hidden: int, layers: int = 2, init: str = "pytorch") -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"the contrastive head needs at least one hidden layer (got {layers})")
        widths = [image_dim + 2 * text_dim] + [hidden] * layers
        modules: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            modules += [nn.Linear(n_in, n_out), nn.ReLU()]
        modules.append(nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(*modules)
        if init == "gpt2":
            for module in self.mlp:
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, mean=0.0, std=GPT2_INIT_STD)
                    nn.init.zeros_(module.bias)
        elif init != "pytorch":
            raise ValueError(f"contrastive head init must be 'pytorch' or 'gpt2' (got {init!r})")

    def forward(self, image_mean: torch.Tensor, prompt_mean: torch.Tensor,
                explanation_mean: torch.Tensor) -> torch.Tensor:
        """(B, d_I), (B, d), (B, d) -> scores (B,)."""
        feats = torch.cat([image_mean.to(prompt_mean.dtype), prompt_mean, explanation_mean], dim=-1)
        return self.mlp(feats).squeeze(-1)


def explanation_span(explanation_mask: torch.Tensor, include_padding: bool = False) -> torch.Tensor:
    """The positions the explanation mean covers (B, L) bool.

    Default: the explanation itself (" because ... <eos>"). ``include_padding``: from the
    explanation's first position to the end of the padded sequence, padding included, as
    the reference code averages ``hidden[:, 6:]`` (the padding positions' hidden states
    enter the mean; rows with longer explanations get less padding).
    """
    span = explanation_mask.bool()
    if not include_padding:
        return span
    return torch.cumsum(span.long(), dim=1) > 0  # from its first position to the end


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
