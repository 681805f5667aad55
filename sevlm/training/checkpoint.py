"""Checkpoints that resume exactly and load without arbitrary unpickling.

A checkpoint is a directory:

- ``model.safetensors``: model weights (safetensors; tied GPT-2 weights handled by
  ``save_model``/``load_model``);
- ``training_state.pt``: optimizer, scheduler and GradScaler state dicts, read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only);
- ``state.json``: step, epoch, position in the epoch, early-stopping state and the
  Python/NumPy RNG states; the torch CPU RNG state is stored in ``training_state.pt``;
- ``config.json``: the run's configuration.

Directories are written under a temporary name and renamed, so a crash never leaves a
half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

MODEL_FILE = "model.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"


@dataclass
class TrainingState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)  # validation metrics per evaluation


def _numpy_state_to_json(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_json(data: list) -> tuple:
    name, keys, pos, has_gauss, cached = data
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler,
    state: TrainingState,
    config_json: str,
) -> Path:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / MODEL_FILE))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp / TRAINING_STATE_FILE,
    )
    payload = {
        "training_state": asdict(state),
        "python_rng": _python_state_to_json(random.getstate()),
        "numpy_rng": _numpy_state_to_json(np.random.get_state()),
    }
    (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1))
    (tmp / CONFIG_FILE).write_text(config_json)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def _python_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def is_checkpoint(directory: str | Path) -> bool:
    d = Path(directory)
    return all((d / f).is_file() for f in (MODEL_FILE, TRAINING_STATE_FILE, STATE_FILE))


def load_model_weights(directory: str | Path, model: torch.nn.Module, device="cpu") -> None:
    directory = Path(directory)
    if not (directory / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint (no {MODEL_FILE})")
    missing, unexpected = load_model(model, str(directory / MODEL_FILE), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(
            f"{directory / MODEL_FILE}: does not match the configured model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}); "
            "was it saved with other model switches?"
        )


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler,
    device="cpu",
) -> TrainingState:
    """Restore everything saved by :func:`save_checkpoint`, RNG states included."""
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise FileNotFoundError(
            f"{directory}: not a complete checkpoint (needs {MODEL_FILE}, "
            f"{TRAINING_STATE_FILE} and {STATE_FILE})"
        )
    load_model_weights(directory, model, device)
    blob = torch.load(directory / TRAINING_STATE_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["torch_rng"].cpu())
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    payload = json.loads((directory / STATE_FILE).read_text())
    random.setstate(_python_state_from_json(payload["python_rng"]))
    np.random.set_state(_numpy_state_from_json(payload["numpy_rng"]))
    return TrainingState(**payload["training_state"])


def read_state(directory: str | Path) -> TrainingState:
    payload = json.loads((Path(directory) / STATE_FILE).read_text())
    return TrainingState(**payload["training_state"])
