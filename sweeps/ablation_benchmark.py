"""The ablation benchmark, named once: the fixed settings that ``sweeps/ablations.py`` and
``sweeps/lr_selection.py`` both train under, and its two regimes (``--decoder-init``).

A sweep kind that runs on this benchmark takes its settings from here; neither sweep file
imports from the other.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sevlm.config import DECODER_INITS
from sweeps.strategies import GridFlags

# Fixed settings of the benchmark per preset (override with --set). The tiny preset is
# sized for the default ablation grid (28 trials) on a 2-core machine: see the README.
DEFAULT_OVERRIDES: dict[str, dict[str, object]] = {
    "tiny": {
        # 140 test paintings (about 110 with a dominant emotion: enough for paired tests),
        # 40 for validation, 220 to train on for 5 epochs.
        "data.synthetic_paintings": 400,
        "data.split_fractions": [0.55, 0.1, 0.35],
        "train.epochs": 5,
        "eval.use_meteor": False,  # a JVM start per evaluation; --set eval.use_meteor=true
    },
    "paper": {},
}
# --quick: a smoke test of the whole path (a few steps and paintings per trial).
QUICK_OVERRIDES: dict[str, object] = {
    "data.synthetic_paintings": 40,
    "train.batch_size": 4,
    "train.max_steps": 4,
    "train.eval_every_steps": 2,
    "train.warmup_steps": 0,
    "eval.max_eval_paintings": 6,
    "eval.max_new_tokens": 8,
}


# The regime (--decoder-init, docs/regime.md): "scratch", the default benchmark, trains the
# decoder from random weights at the preset's rate; "pretrained" fine-tunes the decoder
# that python -m sevlm.pretrain trained on text (built by the first trial when missing), at
# a decoder rate chosen on validation by sweeps/lr_selection.py --decoder-init pretrained (the
# VAD modules at the paper's 2x): both the baseline and the full model chose 3e-3 of
# 1e-4 / 3e-4 / 1e-3 / 3e-3 (validation ROUGE-L 21.5 / 25.4 / 42.3 / 57.8 and
# 21.6 / 25.3 / 36.4 / 48.2; docs/regime.md).
PRETRAINED_LR_DECODER = 3e-3
REGIME_OVERRIDES: dict[str, dict[str, object]] = {
    "scratch": {},
    "pretrained": {
        "model.decoder_init": "pretrained",
        "train.lr_decoder": PRETRAINED_LR_DECODER,
        "train.lr_vad": 2 * PRETRAINED_LR_DECODER,
    },
}


@dataclass(frozen=True)
class RegimeGridFlags(GridFlags):
    """The variants x seeds flags plus ``--decoder-init``: the regime of every trial.

    ``regime_overrides``: the fixed overrides each regime adds (before --set, which can
    still change them). ``regime_variants``: a regime's own grid where the regime changes
    it (the learning-rate selection tries lower rates on a pre-trained decoder).
    """

    regime_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    regime_variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    regime_quick_variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defining: ClassVar[tuple[str, ...]] = GridFlags.defining + ("decoder_init",)

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        super().add_flags(parser)
        parser.add_argument(
            "--decoder-init", choices=list(DECODER_INITS), default=None,
            help="the regime: scratch (default: the decoder trains from random weights) or "
                 "pretrained (the paper's: the decoder that python -m sevlm.pretrain trained on "
                 "text, fine-tuned at a lower rate; docs/regime.md)")

    @staticmethod
    def regime(args: argparse.Namespace) -> str:
        return getattr(args, "decoder_init", None) or "scratch"

    def extra_overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        return {**super().extra_overrides(args), **self.regime_overrides.get(self.regime(args), {})}

    def build(self, args: argparse.Namespace, preset: str, base_flat: dict[str, Any],
              fixed: dict[str, Any]):
        regime = self.regime(args)
        flags = self
        if regime in self.regime_variants:
            flags = dataclasses.replace(self, variants=self.regime_variants[regime],
                                        quick_variants=self.regime_quick_variants[regime])
        return GridFlags.build(flags, args, preset, base_flat, fixed)
