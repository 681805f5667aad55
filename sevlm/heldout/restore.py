"""A trained SEVLM rebuilt from a checkpoint folder, with the image encoder it trained on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sevlm.config import ExperimentConfig, from_json
from sevlm.training.checkpoint import CONFIG_FILE, MODEL_FILE, load_model_weights


@dataclass
class TrainedModel:
    checkpoint: Path  # the folder the weights came from
    cfg: ExperimentConfig  # the run's configuration (config.json)
    model: torch.nn.Module  # SEVLM in eval mode, on `device`
    encoder: torch.nn.Module  # the frozen image encoder of the run, on `device`
    device: torch.device


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder (``model.safetensors`` + ``config.json``), or a run folder whose
    ``checkpoints/best`` is used."""
    path = Path(path)
    for candidate in (path, path / "checkpoints" / "best"):
        if (candidate / MODEL_FILE).is_file() and (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: not a checkpoint (needs {MODEL_FILE} and {CONFIG_FILE}, e.g. <run>/checkpoints/best) "
        "nor a run folder with checkpoints/best"
    )


def load_trained_model(checkpoint: str | os.PathLike, device: str = "auto") -> TrainedModel:
    """Rebuild the run's tokenizer, VAD lexicon, image encoder and model; load the weights."""
    # Imported here: the training stack is heavy and only needed once a model is loaded.
    from sevlm.model import SEVLM, build_image_encoder
    from sevlm.pretrain import resolve_decoder_init
    from sevlm.text import SEVLMTokenizer
    from sevlm.training.loop import IMAGE_ENCODER_SEED, resolve_device
    from sevlm.vad import load_lexicon

    folder = resolve_checkpoint(checkpoint)
    # A run's config.json names the folder its decoder was read from; resolving only
    # matters for a config written before the run resolved it.
    cfg = resolve_decoder_init(from_json((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    target = resolve_device(device)
    tokenizer = SEVLMTokenizer.for_decoder(cfg.model.decoder.name_or_path, cfg.model.decoder.bpe_merges)
    lexicon = load_lexicon(cfg.vad.lexicon, cfg.vad.path, cfg.vad.lemmatize)
    # The same seed as training, so a random (tiny preset) encoder is the one it trained on.
    encoder = build_image_encoder(cfg.model.image_encoder, seed=IMAGE_ENCODER_SEED).to(target)
    model = SEVLM.from_config(cfg.model, tokenizer, encoder.feature_dim, seed=cfg.seed, vad_lexicon=lexicon)
    load_model_weights(folder, model, target)
    return TrainedModel(folder, cfg, model.to(target).eval(), encoder, target)
