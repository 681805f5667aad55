"""Run one SEVLM configuration end to end: ``python -m sevlm.train --preset tiny``.

Offline by default (tiny preset: random small encoder and decoder, synthetic data). With
weights and data, switch by flags, for example::

    python -m sevlm.train --preset paper --dataset artemis_v1 \\
        --artemis-csv data/artemis_dataset_release_v0.csv --image-dir data/wikiart \\
        --image-pretrained openai --decoder distilgpt2 --vad-lexicon nrc \\
        --vad-path data/NRC-VAD-Lexicon.txt

The paper's regime offline (a decoder pre-trained on text, fine-tuned at a low rate;
docs/regime.md): ``--decoder-init pretrained --lr-decoder 1e-3 --lr-vad 2e-3``.

Any configuration field can also be set with ``--set section.field=value``
(``--print-config`` lists them all).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sevlm.config import DATASETS, DECODER_INITS, PRESETS, compose, set_items, to_flat_dict, to_json

# Exit status of an error in the user's input (argparse uses the same for bad flags).
EXIT_USER_ERROR = 2

# flag -> configuration key; None values are left at the preset's value.
FLAG_KEYS = {
    "dataset": "data.dataset",
    "artemis_csv": "data.artemis_csv",
    "contrastive_csv": "data.contrastive_csv",
    "image_dir": "data.image_dir",
    "synthetic_dir": "data.synthetic_dir",
    "feature_cache_dir": "data.feature_cache_dir",
    "image_encoder": "model.image_encoder.arch",
    "image_pretrained": "model.image_encoder.pretrained",
    "decoder": "model.decoder.name_or_path",
    "decoder_init": "model.decoder_init",
    "vad_lexicon": "vad.lexicon",
    "vad_path": "vad.path",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr_decoder": "train.lr_decoder",
    "lr_vad": "train.lr_vad",
    "alpha": "model.alpha",
    "decoding": "eval.decoding",
    "device": "train.device",
    "seed": "seed",
    "output_dir": "output_dir",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sevlm.train",
        description="Train and evaluate one SEVLM configuration.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="tiny: offline CPU model on synthetic data; paper: CLIP ViT-B/16 + "
                        "distilgpt2 with the paper's hyper-parameters (default: tiny)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS,
                   help="which data to train on (default: the preset's, synthetic)")
    g.add_argument("--artemis-csv", help="ArtEmis v1.0 raw CSV (artemis_dataset_release_v0.csv)")
    g.add_argument("--contrastive-csv", help="ArtEmis v2.0 Contrastive.csv (for artemis_v2)")
    g.add_argument("--image-dir", help="WikiArt folder laid out as <dir>/<art_style>/<painting>.jpg")
    g.add_argument("--synthetic-dir", help="where the synthetic dataset is generated")
    g.add_argument("--feature-cache-dir", help="where frozen image features are cached")
    g = p.add_argument_group("model")
    g.add_argument("--image-encoder", help="open_clip architecture (default ViT-B-16)")
    g.add_argument("--image-pretrained",
                   help="open_clip pretrained tag (e.g. openai) or a local checkpoint path; "
                        "'none' for random weights")
    g.add_argument("--decoder", help="GPT-2 name or local directory (e.g. distilgpt2); "
                                     "'none' for a random decoder")
    g.add_argument("--decoder-init", choices=list(DECODER_INITS),
                   help="where a decoder without a checkpoint starts: scratch (random weights, "
                        "the default) or pretrained (the text-only language model of "
                        "python -m sevlm.pretrain, built when missing; docs/regime.md)")
    g.add_argument("--vad-lexicon", choices=["warriner", "anew", "nrc"],
                   help="VAD lexicon (nrc needs --vad-path)")
    g.add_argument("--vad-path", help="NRC-VAD lexicon file")
    g.add_argument("--alpha", type=float, help="weight of the contrastive loss (paper: 2)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr-decoder", type=float, help="decoder and heads (paper: 2e-5)")
    g.add_argument("--lr-vad", type=float, help="VAD emotion modelling (paper: 4e-5)")
    g.add_argument("--decoding", choices=["nucleus", "greedy"])
    g.add_argument("--device", help="auto, cpu or cuda")
    g.add_argument("--seed", type=int)
    g.add_argument("--output-dir", help="run directory (checkpoints, predictions)")
    g.add_argument("--resume", metavar="CHECKPOINT_DIR",
                   help="continue from a checkpoint directory (<output-dir>/checkpoints/latest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration field, e.g. --set model.use_vad_head=false")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="show the full traceback of an error (default: one message, exit 2)")
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave (files, flags, weights): one message, not a traceback.

    ValueError covers configuration mistakes (a dataset without its paths, a bad override);
    ``--verbose`` shows the traceback of any of them.
    """
    from sevlm.data import ArtEmisFormatError
    from sevlm.metrics.emotion_classifier import ClassifierCacheError
    from sevlm.model.weights import WeightsUnavailableError

    return (ArtEmisFormatError, WeightsUnavailableError, ClassifierCacheError, FileNotFoundError, ValueError)


def report_error(exc: BaseException) -> int:
    kind = type(exc).__name__
    print(f"error ({kind}): {exc}\n(run again with --verbose for the traceback)", file=sys.stderr)
    return EXIT_USER_ERROR


def resolve_config(args: argparse.Namespace):
    """The preset, then the flags, then ``--set`` (which wins)."""
    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    return compose(args.preset, flags, set_items(args.set))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.print_config:
        print(to_json(cfg))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sevlm.data.report import REPORT_FILE, read_report
    from sevlm.training.loop import run_training

    try:
        result = run_training(cfg, resume_from=args.resume, progress=not args.quiet)
    except user_errors() as exc:
        if args.verbose:
            raise
        return report_error(exc)
    report = read_report(result.output_dir)
    if report is not None:
        print("\n" + report.summary())
        print(f"(all of it in {result.output_dir / REPORT_FILE})")
    print(f"\nrun directory: {result.output_dir}")
    print(f"best checkpoint: {result.best_checkpoint_dir}")
    width = max(len(k) for k in result.final_metrics)
    for key, value in sorted(result.final_metrics.items()):
        print(f"  {key:<{width}}  {value:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser", "resolve_config", "to_flat_dict"]
