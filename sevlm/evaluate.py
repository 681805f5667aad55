"""Held-out evaluation of a trained checkpoint on EmoSet, as EmoVIT reports it.

    python -m sevlm.evaluate runs/default/checkpoints/best --dataset emoset \\
        --emoset-dir data/EmoSet-118K [--split test]

The model never trained on EmoSet. Closed-set accuracy (the headline) takes, per image, the
most likely of the eight prompts "the emotion is <e> because" (EmoSet's emotions: ArtEmis'
without "something else"); the free-generation accuracy reads the emotion off one sampled
generation and counts one that names none of the eight as wrong. Files (per-class
accuracy, confusion matrices as CSV and a figure, predictions, sample explanations with
their images) go to --output-dir, by default <run>/heldout/emoset_<split>.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sevlm.data.emoset import EMOSET_SPLITS
from sevlm.heldout.run import HELDOUT_DATASETS, parse_heldout
from sevlm.names import HELDOUT_CLOSED_ACC, HELDOUT_GENERATION_ACC, HELDOUT_IMAGES


def build_parser() -> argparse.ArgumentParser:
    description, _, epilog = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="python -m sevlm.evaluate", description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + config.json, e.g. "
                                      "<run>/checkpoints/best) or a run folder")
    p.add_argument("--dataset", choices=HELDOUT_DATASETS, default="emoset")
    p.add_argument("--emoset-dir", required=True, help="EmoSet folder with train/val/test.json, image/, annotation/")
    p.add_argument("--split", choices=EMOSET_SPLITS, default="test")
    p.add_argument("--output-dir", help="where the files go (default <run>/heldout/emoset_<split>)")
    p.add_argument("--feature-cache-dir", help="image-feature cache (default: the run's data.feature_cache_dir)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int, default=0,
                   help="score a fixed random subset of N images (a quick look; 0 = all)")
    p.add_argument("--skip-unknown-emotions", action="store_true",
                   help="count entries with an emotion outside the eight as skipped instead of failing")
    return p


def default_output_dir(checkpoint: Path, dataset: str, split: str) -> Path:
    """<run>/heldout/<dataset>_<split> for <run>/checkpoints/<name>, else next to the folder."""
    checkpoint = checkpoint.resolve()
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint
    return run / "heldout" / f"{dataset}_{split}"


def _percent(value) -> str:
    """A per-class accuracy, or a dash for a class without images (NaN in the frame)."""
    return "   –  " if value is None or value != value else f"{value:6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        heldout = parse_heldout(f"{args.dataset}:{args.emoset_dir}", split=args.split)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sevlm.heldout.restore import resolve_checkpoint
    from sevlm.heldout.run import evaluate_checkpoint

    checkpoint = resolve_checkpoint(args.checkpoint)
    out = Path(args.output_dir) if args.output_dir else default_output_dir(checkpoint, args.dataset, args.split)
    evaluation = evaluate_checkpoint(
        heldout, checkpoint, out, device=args.device, feature_cache_dir=args.feature_cache_dir,
        batch_size=args.batch_size, max_images=args.max_images,
        on_unknown_emotion="skip" if args.skip_unknown_emotions else "error",
    )
    m = evaluation.metrics
    print(f"\nEmoSet {args.split}, held out, 8 classes: {int(m[HELDOUT_IMAGES])} images")
    print(f"  closed-set accuracy       {m[HELDOUT_CLOSED_ACC]:6.2f} %   (chance 12.5 %)")
    print(f"  free-generation accuracy  {m[HELDOUT_GENERATION_ACC]:6.2f} %")
    print("  per class (closed-set / generation):")
    for row in evaluation.per_class.itertuples(index=False):
        closed, generation = getattr(row, HELDOUT_CLOSED_ACC), getattr(row, HELDOUT_GENERATION_ACC)
        print(f"    {row.emotion:<12} {_percent(closed)} / {_percent(generation)}   ({row.images} images)")
    print(f"files: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
