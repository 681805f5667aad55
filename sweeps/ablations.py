"""Reproduce the paper's ablation study: every variant of sevlm/variants.py at N seeds.

    python sweeps/ablations.py                     # laptop: tiny preset, synthetic data,
                                                   # local Ray, MLflow in ./mlflow.db
    python sweeps/ablations.py --seeds 5 --variants baseline,full,no_contrastive
    python sweeps/ablations.py --seeds 5 --all-seeds   # for a paper: the alpha grid at 5 seeds too
    python sweeps/ablations.py --address auto --storage /shared/ray_results \\
        --tracking-uri http://head:5000 --preset paper --dataset artemis_v1 \\
        --artemis-csv /data/artemis_dataset_release_v0.csv --image-dir /data/wikiart
    python sweeps/ablations.py --resume            # finish the interrupted sweep (--name if several)
    python sweeps/ablations.py --decoder-init pretrained   # the paper's regime: a decoder
                                                   # pre-trained on text, fine-tuned at a low
                                                   # rate (docs/regime.md)

Variants, in the paper's order: baseline (VAD features, VAD head and contrastive head all
off), full (SEVLM), no_vad_features, no_vad_head, no_contrastive (Fig. 5),
no_emotion_encoder (Fig. 6), no_neg_wrong_emotion, no_neg_other_image (Fig. 7) and
alpha_0.5, alpha_1, alpha_4, alpha_8 (the alpha sensitivity; alpha = 2 is "full").

Seeds 0..N-1 for every variant (the alpha_* variants at seed 0 only, unless --all-seeds),
paired: at one seed every variant sees the same batches and negatives and starts from the
same weights wherever two variants share a parameter. The
data (synthetic set, split) has its own seeds, so every run is tested on the same
paintings. Each trial is tested with its best-validation checkpoint and keeps its
per-painting predictions; its MLflow run is tagged with its variant and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sevlm.config import DECODER_INITS
from sevlm.variants import ALPHA_VARIANTS, FULL, VARIANTS
from sweeps.cli import Sweep, run_sweep_cli
from sweeps.progress import format_table
from sweeps.spec import SweepSpec
from sweeps.strategies import Grid, GridFlags
from sweeps.summary import SweepOutcome
from trainables import tracking_schema as schema

# Fixed settings of the default sweep per preset (override with --set). The tiny preset is
# sized for the default grid (28 trials) on a 2-core machine: see the README.
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
# The α sensitivity runs at one seed by default (--all-seeds: every seed), so that the
# default sweep fits a 2-core machine: 28 trials instead of 36 (see the README). α = 2 is the
# full model, which keeps every seed.
ALPHA_SEED_COUNTS = {name: 1 for name in ALPHA_VARIANTS.values() if name != FULL}
# --quick: a smoke test of the whole path (a few steps and paintings per trial).
QUICK_VARIANTS = ("baseline", "full", "no_contrastive")
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

    def build(self, args: argparse.Namespace, preset: str, preset_flat: dict[str, Any],
              fixed: dict[str, Any]):
        regime = self.regime(args)
        flags = self
        if regime in self.regime_variants:
            flags = dataclasses.replace(self, variants=self.regime_variants[regime],
                                        quick_variants=self.regime_quick_variants[regime])
        return GridFlags.build(flags, args, preset, preset_flat, fixed)


def report(spec: SweepSpec, outcome: SweepOutcome, run_ids: dict[str, str], out) -> None:
    print_variant_table(outcome, out)


def print_variant_table(outcome: SweepOutcome, out) -> None:
    """Test metrics per variant and seed, then each variant's mean ± sd over its seeds."""
    order = {name: i for i, name in enumerate(VARIANTS)}
    variant = lambda t: str(t.config.get(Grid.VARIANT_KEY))  # noqa: E731
    seed = lambda t: t.config.get(Grid.SEED_KEY)  # noqa: E731
    # A trial that an interrupted sweep created but never started may come back without
    # its config: the counts line has it ("not started").
    trials = sorted((t for t in outcome.trials if t.config.get(Grid.VARIANT_KEY) is not None),
                    key=lambda t: (order.get(variant(t), len(order)), seed(t) or 0))
    count = schema.TEST_PREFIX + schema.COUNT_METRIC
    known = [m for m in schema.TEST_METRICS if m != count]
    found = {k for t in trials for k in t.final if k.startswith(schema.TEST_PREFIX)}
    metrics = [m for m in known if m in found] + sorted(found - set(known) - {count})
    names = [m[len(schema.TEST_PREFIX):] for m in metrics]
    paintings = {int(t.final[count]) for t in trials if count in t.final}
    print(f"\nTest metrics on {', '.join(map(str, sorted(paintings))) or 'no'} test paintings:", file=out)
    rows = [[variant(t), str(seed(t)), t.state]
            + [f"{t.final[m]:.3g}" if m in t.final else "-" for m in metrics] for t in trials]
    print(format_table(rows, ["variant", "seed", "status"] + names), file=out)
    rows = []
    for name in dict.fromkeys(variant(t) for t in trials):
        done = [t for t in trials if variant(t) == name and t.final]
        cells = []
        for m in metrics:
            values = [t.final[m] for t in done if m in t.final]
            sd = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3g}{sd}" if values else "-")
        rows.append([name, str(len(done))] + cells)
    print("\nMean ± sd over seeds:", file=out)
    print(format_table(rows, ["variant", "seeds"] + names), file=out)


SWEEP = Sweep(
    kind="ablations",
    doc=__doc__,
    strategy=RegimeGridFlags(variants=VARIANTS, default_seeds=3, quick_variants=QUICK_VARIANTS, quick_seeds=2,
                             quick_overrides=QUICK_OVERRIDES, default_seed_counts=ALPHA_SEED_COUNTS,
                             regime_overrides=REGIME_OVERRIDES),
    default_overrides=DEFAULT_OVERRIDES,
    report=report,
    analysis_report="Ablation report",
)


def main(argv: list[str] | None = None) -> int:
    return run_sweep_cli(argv, SWEEP)


if __name__ == "__main__":
    sys.exit(main())
