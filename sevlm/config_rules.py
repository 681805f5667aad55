"""The rules of a configuration, in one place: the value ranges, what the model can be
built from, what follows from other settings, which dataset needs which files, which
settings are paths.

``sevlm.config.compose`` applies them all; ``sevlm.data.pipeline`` reads the dataset rule,
the sweeps' driver and cluster nodes read :func:`input_paths`. Everything here works on an
``ExperimentConfig`` or its flattened dict (dotted keys) and imports nothing of the project.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------ value ranges

# The ranges of the numeric settings that have one: (test, what the value must be).
RANGES: dict[str, tuple[Any, str]] = {
    "model.alpha": (lambda v: v >= 0, "at least 0"),
    "train.epochs": (lambda v: v >= 1, "at least 1"),
    "train.batch_size": (lambda v: v >= 1, "at least 1"),
    "train.lr_decoder": (lambda v: v > 0, "greater than 0"),
    "train.lr_vad": (lambda v: v > 0, "greater than 0"),
    "train.weight_decay": (lambda v: v >= 0, "at least 0"),
    "train.warmup_steps": (lambda v: v >= 0, "at least 0"),
    "train.grad_clip": (lambda v: v >= 0, "at least 0 (0 = no clipping)"),
    "train.eval_every_steps": (lambda v: v >= 0, "at least 0 (0 = once per epoch)"),
    "train.log_every_steps": (lambda v: v >= 1, "at least 1"),
    "train.early_stopping_patience": (lambda v: v >= 0, "at least 0 (0 = never stop early)"),
    "train.max_steps": (lambda v: v >= 0, "at least 0 (0 = no limit)"),
    "eval.top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "eval.temperature": (lambda v: v > 0, "greater than 0"),
    "eval.max_new_tokens": (lambda v: v >= 1, "at least 1"),
    "eval.batch_size": (lambda v: v >= 1, "at least 1"),
    "eval.max_eval_paintings": (lambda v: v >= 0, "at least 0 (0 = all)"),
    "data.synthetic_paintings": (lambda v: v >= 1, "at least 1"),
    "data.min_tokens": (lambda v: v >= 1, "at least 1"),
    "data.max_tokens": (lambda v: v >= 1, "at least 1"),
}


def check_range(key: str, value: Any) -> None:
    rule = RANGES.get(key)
    if rule is not None and value is not None and not rule[0](value):
        raise ValueError(f"{key} must be {rule[1]} (got {value!r})")


# -------------------------------------------------------------------------- model rules

# What the VAD fusion reads (see ModelConfig.fusion_input).
FUSION_INPUTS = ("word", "paper")
# Depth of the emotion encoder: 0 = raw VAD vectors (the paper's "w/o emotion encoder").
EMOTION_ENCODER_LAYERS = (0, 6)
# Where a decoder without a checkpoint starts (ModelConfig.decoder_init).
DECODER_INITS = ("scratch", "pretrained")
# The contrastive MLP: initialisations and the range of its hidden layers.
CONTRASTIVE_HEAD_INITS = ("pytorch", "gpt2")
CONTRASTIVE_HEAD_LAYERS = (1, 8)


def validate(cfg) -> None:
    """Raise ValueError if the model cannot be built from ``cfg``.

    ``SEVLM.from_config`` calls it, and :func:`sevlm.config.compose` on every configuration
    it composes (a sweep's base and each of its trials).
    """
    model = getattr(cfg, "model", cfg)  # an ExperimentConfig or its ModelConfig
    if model.use_contrastive and not (model.neg_wrong_emotion or model.neg_other_image):
        raise ValueError(
            "model.use_contrastive=True needs at least one negative type: set "
            "model.neg_wrong_emotion and/or model.neg_other_image to True (or "
            "model.use_contrastive=False)"
        )
    if model.fusion_input not in FUSION_INPUTS:
        raise ValueError(f"model.fusion_input must be one of {FUSION_INPUTS} (got {model.fusion_input!r})")
    low, high = EMOTION_ENCODER_LAYERS
    if not low <= model.emotion_encoder_layers <= high:
        raise ValueError(
            f"model.emotion_encoder_layers must stay within {low}..{high} "
            f"(got {model.emotion_encoder_layers})"
        )
    if model.decoder_init not in DECODER_INITS:
        raise ValueError(f"model.decoder_init must be one of {DECODER_INITS} (got {model.decoder_init!r})")
    if model.contrastive_head_init not in CONTRASTIVE_HEAD_INITS:
        raise ValueError(
            f"model.contrastive_head_init must be one of {CONTRASTIVE_HEAD_INITS} "
            f"(got {model.contrastive_head_init!r})"
        )
    low, high = CONTRASTIVE_HEAD_LAYERS
    if not low <= model.contrastive_head_layers <= high:
        raise ValueError(
            f"model.contrastive_head_layers must stay within {low}..{high} "
            f"(got {model.contrastive_head_layers})"
        )


# ------------------------------------------------------------------------- derived rules


def derived_settings(flat: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Settings that follow from others. Each rule fires when a key it depends on is among
    ``given`` (the keys the layers being composed set) and never changes a key that is:

    * neither negative type: nothing to contrast, so no contrastive loss (alpha has no
      effect); an explicit ``model.use_contrastive=true`` then fails :func:`validate`;
    * a decoder with a checkpoint brings its own tokenizer: the preset's smaller offline BPE
      (``model.decoder.bpe_merges``, tiny) does not apply to it.
    """
    out: dict[str, Any] = {}
    negatives = ("model.neg_wrong_emotion", "model.neg_other_image")
    if (given.intersection(negatives) and "model.use_contrastive" not in given
            and not any(flat[key] for key in negatives)):
        out["model.use_contrastive"] = False
    if ("model.decoder.name_or_path" in given and "model.decoder.bpe_merges" not in given
            and flat["model.decoder.name_or_path"] is not None):
        out["model.decoder.bpe_merges"] = None
    return out


# ----------------------------------------------------------------------------- datasets

# data.dataset -> the path settings it needs (the synthetic set is generated in
# data.synthetic_dir, which always has a value).
DATASET_PATHS: dict[str, tuple[str, ...]] = {
    "synthetic": (),
    "artemis_v1": ("data.artemis_csv", "data.image_dir"),
    "artemis_v2": ("data.artemis_csv", "data.image_dir", "data.contrastive_csv"),
}
DATASETS = tuple(DATASET_PATHS)


def missing_dataset_paths(data) -> list[str]:
    """The path settings ``data`` (a DataConfig) needs for its dataset and lacks; a
    ValueError for an unknown dataset."""
    if data.dataset not in DATASET_PATHS:
        raise ValueError(f"unknown data.dataset {data.dataset!r}; use {', '.join(DATASETS)}")
    return [key for key in DATASET_PATHS[data.dataset] if not getattr(data, key.split(".", 1)[1])]


def input_paths(cfg) -> dict[str, str]:
    """The files and folders a run reads and does not make itself, by configuration key:
    what must exist on the machine that trains (a cluster node checks them before it
    starts). Pretrained weights are named only when given as a local path; a hub name is
    ``sevlm.model.weights``' concern."""
    data = cfg.data
    paths: dict[str, str | None] = {key: getattr(data, key.split(".", 1)[1]) for key in DATASET_PATHS[data.dataset]}
    paths["vad.path"] = cfg.vad.path
    for key, value in (("model.image_encoder.pretrained", cfg.model.image_encoder.pretrained),
                       ("model.decoder.name_or_path", cfg.model.decoder.name_or_path)):
        if isinstance(value, str) and value.startswith(("/", "./", "../", "~")):
            paths[key] = value
    return {key: str(value) for key, value in paths.items() if value and "://" not in str(value)}


# -------------------------------------------------------------------------------- paths

# Settings that are always paths, and settings that are a path when such a file exists
# (else a hub name or a pretrained tag).
PATH_KEYS = (
    "data.artemis_csv",
    "data.contrastive_csv",
    "data.image_dir",
    "data.synthetic_dir",
    "data.feature_cache_dir",
    "data.ea_classifier_dir",
    "vad.path",
)
MAYBE_PATH_KEYS = ("model.image_encoder.pretrained", "model.decoder.name_or_path")


def absolute_paths(flat: dict[str, Any], cwd: str | os.PathLike) -> dict[str, str]:
    """The path settings of ``flat`` that are relative, made absolute against ``cwd``
    (for runs that start elsewhere: a sweep's trials); URIs are left alone."""
    cwd = Path(cwd)
    out = {}
    for key in PATH_KEYS:
        value = flat.get(key)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            out[key] = str((cwd / value).resolve())
    for key in MAYBE_PATH_KEYS:
        value = flat.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value) and (cwd / value).exists():
            out[key] = str((cwd / value).resolve())
    return out
