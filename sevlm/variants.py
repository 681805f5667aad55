"""The paper's ablation variants (arXiv 2403.11150, Fig. 5, 6, 7 and the supplementary α
sensitivity), in the paper's order. Pure data: read by ``sweeps/ablations.py`` (which runs
them) and ``analysis/`` (which groups them into the paper's tables and figures).

Each variant is a complete set of overrides of the seven keys that the ablations vary,
never a difference to whatever the preset or ``--set`` says: "full" is always the paper's
model (α = 2, a 3-layer emotion encoder, both negatives), whatever the preset.
"""

from __future__ import annotations

from typing import Any

FULL = "full"
BASELINE = "baseline"
PAPER_ALPHA = 2.0

# The paper's SEVLM: every component on.
_FULL: dict[str, Any] = {
    "model.use_vad_features": True,
    "model.emotion_encoder_layers": 3,
    "model.use_vad_head": True,
    "model.use_contrastive": True,
    "model.neg_wrong_emotion": True,
    "model.neg_other_image": True,
    "model.alpha": PAPER_ALPHA,
}


def _full(**changes: Any) -> dict[str, Any]:
    return {**_FULL, **{f"model.{k}": v for k, v in changes.items()}}


# α of the sensitivity study -> its variant; α = 2 is the full model, run once.
ALPHA_VARIANTS: dict[float, str] = {
    0.5: "alpha_0.5",
    1.0: "alpha_1",
    PAPER_ALPHA: FULL,
    4.0: "alpha_4",
    8.0: "alpha_8",
}

# name -> configuration overrides, in the paper's order.
VARIANTS: dict[str, dict[str, Any]] = {
    # Table 1: the CLIP-GPT2 baseline (all three components off) and SEVLM.
    BASELINE: _full(use_vad_features=False, use_vad_head=False, use_contrastive=False),
    FULL: _full(),
    # Fig. 5: one main component removed.
    "no_vad_features": _full(use_vad_features=False),
    "no_vad_head": _full(use_vad_head=False),
    "no_contrastive": _full(use_contrastive=False),
    # Fig. 6: raw VAD vectors instead of the emotion encoder.
    "no_emotion_encoder": _full(emotion_encoder_layers=0),
    # Fig. 7: one negative type removed (X≠M: wrong emotion, X≠I: another image).
    "no_neg_wrong_emotion": _full(neg_wrong_emotion=False),
    "no_neg_other_image": _full(neg_other_image=False),
    # Supplementary: sensitivity to α.
    **{name: _full(alpha=alpha) for alpha, name in ALPHA_VARIANTS.items() if name != FULL},
}

# What the paper calls each variant (table rows, figure labels).
LABELS: dict[str, str] = {
    BASELINE: "Baseline",
    FULL: "SEVLM",
    "no_vad_features": "w/o VAD features",
    "no_vad_head": "w/o VAD head",
    "no_contrastive": "w/o contrastive head",
    "no_emotion_encoder": "w/o emotion encoder",
    "no_neg_wrong_emotion": "w/o X≠M negatives",
    "no_neg_other_image": "w/o X≠I negatives",
    **{name: f"α = {alpha:g}" for alpha, name in ALPHA_VARIANTS.items() if name != FULL},
}

# The paper's figures: which variants each compares (the full model first).
FIGURES: dict[str, tuple[str, ...]] = {
    "table1": (BASELINE, FULL),
    "fig5": (FULL, "no_vad_features", "no_vad_head", "no_contrastive"),
    "fig6": (FULL, "no_emotion_encoder"),
    "fig7": (FULL, "no_neg_wrong_emotion", "no_neg_other_image"),
    "alpha": tuple(ALPHA_VARIANTS.values()),
}
