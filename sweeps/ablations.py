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

import sys

from sevlm.variants import ALPHA_VARIANTS, FULL, VARIANTS
from sweeps.ablation_benchmark import DEFAULT_OVERRIDES, QUICK_OVERRIDES, REGIME_OVERRIDES, RegimeGridFlags
from sweeps.cli import Sweep, run_sweep_cli
from sweeps.result_tables import print_variant_results

# The benchmark's settings and regimes: sweeps/ablation_benchmark.py (shared with
# sweeps/lr_selection.py). The α sensitivity runs at one seed by default (--all-seeds: every
# seed), so that the default sweep fits a 2-core machine: 28 trials instead of 36 (see the
# README). α = 2 is the full model, which keeps every seed.
ALPHA_SEED_COUNTS = {name: 1 for name in ALPHA_VARIANTS.values() if name != FULL}
# --quick: a smoke test of the whole path (a few steps and paintings per trial).
QUICK_VARIANTS = ("baseline", "full", "no_contrastive")

SWEEP = Sweep(
    kind="ablations",
    doc=__doc__,
    strategy=RegimeGridFlags(variants=VARIANTS, default_seeds=3, quick_variants=QUICK_VARIANTS, quick_seeds=2,
                             quick_overrides=QUICK_OVERRIDES, default_seed_counts=ALPHA_SEED_COUNTS,
                             regime_overrides=REGIME_OVERRIDES),
    default_overrides=DEFAULT_OVERRIDES,
    print_results=print_variant_results,
    analysis_report="Ablation report",
)


def main(argv: list[str] | None = None) -> int:
    return run_sweep_cli(argv, SWEEP)


if __name__ == "__main__":
    sys.exit(main())
