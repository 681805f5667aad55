"""One held-out evaluation from a checkpoint folder: what ``python -m sevlm.evaluate`` and
the sweeps' ``--heldout`` trial hook both call.

A held-out set is named ``<dataset>:<dir>``; EmoSet (``emoset:<dir>``, its test split) is
the only dataset so far.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sevlm.data.emoset import EMOSET_SPLITS, load_emoset, split_file

log = logging.getLogger(__name__)

HELDOUT_DATASETS = ("emoset",)
DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class HeldoutSet:
    dataset: str  # one of HELDOUT_DATASETS
    directory: str  # absolute
    split: str = DEFAULT_SPLIT

    def __str__(self) -> str:
        return f"{self.dataset}:{self.directory}"


def parse_heldout(text: str, cwd: str | os.PathLike | None = None, split: str = DEFAULT_SPLIT) -> HeldoutSet:
    """``"emoset:DIR"`` -> :class:`HeldoutSet` with DIR made absolute; checks that the
    split file is there, so a sweep fails before its first trial, not after training."""
    dataset, sep, directory = text.partition(":")
    if not sep or dataset not in HELDOUT_DATASETS or not directory:
        raise ValueError(f"held-out set {text!r}: expected <dataset>:<dir> with dataset one of {HELDOUT_DATASETS}, "
                         "e.g. emoset:data/EmoSet-118K")
    if split not in EMOSET_SPLITS:
        raise ValueError(f"unknown EmoSet split {split!r}; choose one of {EMOSET_SPLITS}")
    folder = Path(cwd or os.getcwd()) / Path(directory).expanduser()
    if not split_file(folder, split).is_file():
        raise ValueError(f"held-out set {text!r}: {split_file(folder, split)} not found")
    return HeldoutSet(dataset, str(folder.resolve()), split)


def evaluate_checkpoint(
    heldout: HeldoutSet,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    feature_cache_dir: str | None = None,
    batch_size: int = 64,
    max_images: int = 0,
    on_unknown_emotion: str = "error",
    samples_per_emotion: int = 2,
):
    """Load the checkpoint, score it on the held-out split, write the files of
    :mod:`sevlm.heldout.outputs` into ``out_dir``; returns the
    :class:`~sevlm.heldout.classification.HeldoutEvaluation`."""
    from sevlm.heldout.classification import evaluate_on_emoset
    from sevlm.heldout.outputs import write_outputs
    from sevlm.heldout.restore import load_trained_model

    split = load_emoset(heldout.directory, heldout.split, on_unknown_emotion=on_unknown_emotion)
    trained = load_trained_model(checkpoint, device)
    evaluation = evaluate_on_emoset(
        trained.model, split, trained.encoder, feature_cache_dir or trained.cfg.data.feature_cache_dir,
        trained.cfg.eval, trained.device, seed=trained.cfg.seed, batch_size=batch_size, max_images=max_images,
    )
    split.report.log(log)
    write_outputs(evaluation, out_dir, report=split.report.to_dict(), checkpoint=str(trained.checkpoint),
                  samples_per_emotion=samples_per_emotion)
    return evaluation
