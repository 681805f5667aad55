"""From a configuration to prepared splits and evaluation batches: the loading pipeline.

:func:`prepare_data` is the one entry point: it generates the synthetic set if asked, loads
and validates the CSV(s) (:mod:`sevlm.data.artemis`), splits by painting
(:mod:`sevlm.data.splits`), finds the images, ensures the frozen feature cache and returns
:class:`PreparedData` with its :class:`~sevlm.data.report.LoadReport`. Paths come from the
configuration (``data.artemis_csv``, ``data.contrastive_csv``, ``data.image_dir``,
``data.synthetic_dir``, ``data.feature_cache_dir``), never from code. The training examples
built on top of it live in :mod:`sevlm.data.examples`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sevlm.config_rules import missing_dataset_paths
from sevlm.data.artemis import ArtEmisFormatError, dominant_emotions, load_artemis, resolve_image_paths
from sevlm.data.feature_cache import FeatureCache
from sevlm.data.report import REST, SPLITS, LoadReport
from sevlm.data.splits import assign_splits
from sevlm.data.synthetic import dataset_name, generate_synthetic_artemis
from sevlm.text import tokenizer_cache_key

log = logging.getLogger(__name__)

# 2: word-prefix VAD of BPE pieces; 3: long utterances dropped in every split (ArtEmis),
# v1 paintings keep their v1 split under v2 and contrastive paintings follow their anchor.
DATA_VERSION = "sevlm-data-3"
ANNOTATION_COLUMNS = ["painting_id", "art_style", "painting", "emotion", "utterance"]


# ----------------------------------------------------------------------- containers


@dataclass
class SplitData:
    """One split: its annotations, paintings, references and dominant emotions."""

    name: str
    annotations: pd.DataFrame  # painting_id, art_style, painting, emotion, utterance (+ source, row)
    painting_ids: list[str]  # sorted
    references: dict[str, list[str]]  # painting_id -> its utterances
    dominant: dict[str, str | None]  # painting_id -> sevlm.emotions.dominant_emotion(votes)
    image_keys: list[str]  # feature-cache key of each painting (aligned with painting_ids)

    @classmethod
    def from_annotations(cls, name: str, annotations: pd.DataFrame) -> SplitData:
        annotations = annotations.sort_values(["painting_id", "source", "row"], kind="stable").reset_index(drop=True)
        painting_ids = sorted(annotations["painting_id"].unique().tolist())
        references = {pid: list(group) for pid, group in annotations.groupby("painting_id", sort=True)["utterance"]}
        return cls(
            name=name,
            annotations=annotations,
            painting_ids=painting_ids,
            references=references,
            dominant=dominant_emotions(annotations),
            image_keys=list(painting_ids),
        )

    def __len__(self) -> int:
        return len(self.annotations)


@dataclass
class PreparedData:
    splits: dict[str, SplitData]  # "train", "val", "test"
    fingerprint: str
    report: LoadReport
    features: FeatureCache
    image_paths: dict[str, Path]  # painting_id -> image file
    tokenizer: object = None
    lexicon: object = None
    max_length: int = 30
    rest: SplitData | None = None  # paintings with repetition > max_repetition (unused)
    sources: dict[str, str] = field(default_factory=dict)  # "csv", "contrastive_csv", "image_dir"
    examples_cache: dict = field(default_factory=dict, repr=False)  # see training_examples()

    def __getitem__(self, split: str) -> SplitData:
        return self.splits[split]


# ------------------------------------------------------------------- preparation


def _resolve_sources(cfg) -> tuple[Path, Path | None, Path]:
    data = cfg.data
    if data.dataset == "synthetic":
        root = Path(data.synthetic_dir) / dataset_name(data.synthetic_paintings, data.synthetic_annotators, data.synthetic_seed)
        paths = generate_synthetic_artemis(
            root, n_paintings=data.synthetic_paintings, annotators=data.synthetic_annotators, seed=data.synthetic_seed
        )
        return paths.csv, None, paths.image_dir
    missing = missing_dataset_paths(data)
    if missing:
        raise ValueError(
            f"data.dataset={data.dataset!r} needs the paths {missing} "
            "(configuration keys or the matching command-line flags)"
        )
    contrastive = Path(data.contrastive_csv) if data.dataset == "artemis_v2" else None
    return Path(data.artemis_csv), contrastive, Path(data.image_dir)


def prepare_data(
    cfg,
    tokenizer,
    lexicon,
    image_encoder,
    *,
    progress: bool = False,
    feature_batch_size: int = 64,
    log_report: bool = True,
) -> PreparedData:
    """Load (or generate), validate, split, cache image features; see the module doc."""
    data = cfg.data
    csv_path, contrastive_path, image_dir = _resolve_sources(cfg)
    frame, report = load_artemis(
        csv_path,
        contrastive_path,
        min_tokens=data.min_tokens,
        max_tokens=data.max_tokens,
        long_utterances=data.long_utterances,
        on_unknown_emotion=data.on_unknown_emotion,
    )
    split = assign_splits(
        frame,
        seed=data.split_seed,
        fractions=tuple(data.split_fractions),
        max_repetition=data.max_repetition,
        report=report,
    )
    frame["split"] = frame["painting_id"].map(split)
    used = frame[frame["split"] != REST]

    found, missing = resolve_image_paths(used, image_dir)
    if not found:
        raise FileNotFoundError(
            f"none of the {len(missing)} images was found under {image_dir} "
            f"(expected <image_dir>/<art_style>/<painting>.jpg, e.g. {next(iter(missing.values()))})"
        )
    report.skip("missing_image", len(missing), [f"{p} (painting {pid})" for pid, p in missing.items()])

    features = FeatureCache.ensure(
        image_encoder,
        found,
        data.feature_cache_dir,
        batch_size=feature_batch_size,
        progress=progress,
        num_workers=data.num_workers,
    )
    report.note("images_encoded_now", features.images_encoded)
    report.skip("corrupt_image", len(features.failed), [f"{reason} (painting {pid})" for pid, reason in features.failed.items()])
    keep = frame["painting_id"].isin(features.index)
    dropped = (frame["split"] != REST) & ~keep
    if dropped.any():
        report.note("annotations_of_paintings_without_image", int(dropped.sum()))

    splits: dict[str, SplitData] = {}
    for name in SPLITS:
        part = frame[(frame["split"] == name) & keep]
        if part.empty:
            raise ArtEmisFormatError(f"{csv_path}: the {name} split is empty:\n{report.summary()}")
        splits[name] = SplitData.from_annotations(name, part[[*ANNOTATION_COLUMNS, "source", "row"]])
        report.split_paintings[name] = len(splits[name].painting_ids)
        report.split_annotations[name] = len(splits[name].annotations)
    rest_part = frame[frame["split"] == REST]
    rest = SplitData.from_annotations(REST, rest_part[[*ANNOTATION_COLUMNS, "source", "row"]]) if len(rest_part) else None
    report.split_paintings[REST] = 0 if rest is None else len(rest.painting_ids)
    report.split_annotations[REST] = len(rest_part)

    train = splits["train"]
    unanimous, fallback_items = _unanimity(train.annotations)
    report.note("train_paintings_unanimous", unanimous)
    report.note("train_items_wrong_emotion_negative_from_other_painting", fallback_items)
    report.note(
        "train_paintings_without_dominant_emotion", sum(v is None for v in train.dominant.values())
    )

    fingerprint = data_fingerprint(splits, tokenizer, lexicon, cfg, features)
    if log_report:
        report.log(log)
    return PreparedData(
        splits=splits,
        fingerprint=fingerprint,
        report=report,
        features=features,
        image_paths={pid: p for pid, p in found.items() if pid in features.index},
        tokenizer=tokenizer,
        lexicon=lexicon,
        max_length=cfg.model.max_length,
        rest=rest,
        sources={
            "csv": str(csv_path),
            "contrastive_csv": "" if contrastive_path is None else str(contrastive_path),
            "image_dir": str(image_dir),
        },
    )


def _unanimity(annotations: pd.DataFrame) -> tuple[int, int]:
    """(paintings whose annotations all share one emotion, their annotations)."""
    n_emotions = annotations.groupby("painting_id")["emotion"].nunique()
    unanimous = n_emotions[n_emotions == 1].index
    return len(unanimous), int(annotations["painting_id"].isin(unanimous).sum())


def data_fingerprint(splits: dict[str, SplitData], tokenizer, lexicon, cfg, features: FeatureCache | None) -> str:
    """Hash of the processed annotations of every split, the tokenizer, the lexicon, the
    sentence length and the feature cache (encoder + image set): identical inputs give an
    identical fingerprint."""
    h = hashlib.sha256(DATA_VERSION.encode())
    for name in sorted(splits):
        ann = splits[name].annotations[["painting_id", "emotion", "utterance"]]
        h.update(f"|split={name}|{len(ann)}|".encode())
        h.update(pd.util.hash_pandas_object(ann, index=False).to_numpy().tobytes())
    h.update(f"|tokenizer={tokenizer_cache_key(cfg.model.decoder.name_or_path, cfg.model.decoder.bpe_merges)}:{len(tokenizer)}".encode())
    h.update(f"|lexicon={lexicon.fingerprint()}|max_length={cfg.model.max_length}".encode())
    if features is not None:
        h.update(f"|features={features.directory.parent.name}/{features.directory.name}".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------- evaluation


def select_paintings(painting_ids: Sequence[str], max_paintings: int = 0) -> list[str]:
    """All paintings, or a fixed subset (``default_rng(0)``, the same for every trial)."""
    ids = sorted(painting_ids)
    if not max_paintings or max_paintings >= len(ids):
        return ids
    picks = np.random.default_rng(0).permutation(len(ids))[:max_paintings]
    return [ids[i] for i in sorted(picks.tolist())]


class EvalPaintings:
    """Iterable of ``(painting_ids, image_features (B,K,d_v) float32)``, one entry per painting."""

    def __init__(self, features: FeatureCache, painting_ids: Sequence[str], batch_size: int) -> None:
        self.features = features
        self.painting_ids = list(painting_ids)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return (len(self.painting_ids) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        for start in range(0, len(self.painting_ids), self.batch_size):
            ids = self.painting_ids[start : start + self.batch_size]
            yield ids, self.features.get(ids)


def eval_batches(prepared: PreparedData, split: str, batch_size: int, max_paintings: int = 0) -> EvalPaintings:
    return EvalPaintings(
        prepared.features, select_paintings(prepared.splits[split].painting_ids, max_paintings), batch_size
    )


__all__ = [
    "DATA_VERSION",
    "EvalPaintings",
    "PreparedData",
    "SplitData",
    "data_fingerprint",
    "eval_batches",
    "prepare_data",
    "select_paintings",
]
