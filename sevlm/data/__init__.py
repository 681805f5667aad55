"""ArtEmis (v1.0, v2.0 Combined) and its synthetic stand-in, the frozen feature cache, and
the training / evaluation batches.

Typical use::

    prepared = prepare_data(cfg, tokenizer, lexicon, image_encoder)
    loader = make_train_loader(prepared, batch_size=cfg.train.batch_size, seed=cfg.seed)
    for ids, feats in eval_batches(prepared, "val", batch_size=64): ...
"""

from sevlm.data.artemis import (
    CONTRASTIVE_COLUMNS,
    V1_COLUMNS,
    ArtEmisFormatError,
    dominant_emotions,
    load_artemis,
    make_painting_id,
    read_artemis_csv,
    resolve_image_paths,
)
from sevlm.data.examples import (
    EpochSampler,
    TrainingExamples,
    collate,
    make_train_loader,
    training_examples,
)
from sevlm.data.pipeline import (
    DATA_VERSION,
    EvalPaintings,
    PreparedData,
    SplitData,
    data_fingerprint,
    eval_batches,
    prepare_data,
    select_paintings,
)
from sevlm.data.report import REPORT_FILE, REST, SPLITS, LoadReport, read_report
from sevlm.data.splits import anchor_ids, assign_splits, split_paintings
from sevlm.data.feature_cache import FeatureCache, image_set_hash
from sevlm.data.synthetic import (
    SyntheticPaths,
    dataset_name,
    generate_synthetic_artemis,
    synthetic_paths,
    write_synthetic_contrastive,
)

__all__ = [
    "CONTRASTIVE_COLUMNS",
    "DATA_VERSION",
    "REPORT_FILE",
    "REST",
    "SPLITS",
    "V1_COLUMNS",
    "ArtEmisFormatError",
    "EpochSampler",
    "EvalPaintings",
    "FeatureCache",
    "LoadReport",
    "PreparedData",
    "SplitData",
    "SyntheticPaths",
    "TrainingExamples",
    "anchor_ids",
    "assign_splits",
    "collate",
    "data_fingerprint",
    "dataset_name",
    "dominant_emotions",
    "eval_batches",
    "generate_synthetic_artemis",
    "image_set_hash",
    "load_artemis",
    "make_painting_id",
    "make_train_loader",
    "prepare_data",
    "read_artemis_csv",
    "read_report",
    "resolve_image_paths",
    "select_paintings",
    "split_paintings",
    "synthetic_paths",
    "training_examples",
    "write_synthetic_contrastive",
]
