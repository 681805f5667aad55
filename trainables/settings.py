"""What every trial of a sweep shares (:class:`TrialSettings`), and how a trial's point
becomes its configuration overrides. Imports neither Ray nor torch: the sweep's driver,
the Tune trial function and the training worker all read it.

A trial's configuration is ``sevlm.config.compose(settings.base, settings.point_overrides(
point), <the trial's own output folder and device>)``: the sweep's composed base plus its
point, composed once, on the node that trains (``trainables.worker``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_TRAINING_FN = "sevlm.training.loop:run_training"


@dataclass
class TrialSettings:
    """Everything a trial needs besides its point (the same for all trials)."""

    sweep_name: str
    storage_path: str  # Tune storage root (absolute path or URI)
    # The sweep's configuration, composed once by its driver and flattened
    # (sevlm.config.to_flat_dict): preset, the sweep's fixed settings and --set. Empty: the
    # configuration's defaults.
    base: dict[str, Any] = field(default_factory=dict)
    # Keys of a trial's point whose value names a layer of overrides (a grid's variant name
    # -> that variant's overrides); every other key of the point is a configuration key.
    point_layers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    metric: str = "val/bleu4"  # the sweep's metric: scores each report's checkpoint
    use_gpu: bool = False
    cpus_per_worker: float = 0.9  # CPU of the training worker (GPU: 0 = Ray's default)
    gpus_per_worker: float = 1.0  # on GPU trials: 0.5 packs two trials on one GPU
    max_failures: int = 2  # worker failures retried by Ray Train, per trial attempt
    keep_checkpoints: int | None = 2  # best N by `metric` (the latest is always kept)
    output_root: str | None = None  # trials write to <output_root>/<run name>; default <storage>/<sweep>/outputs
    # A multi-node sweep's trials work on the node's local disk (scratch_root() there) and
    # send only their checkpoints and final files to the shared storage; the folder is
    # removed when the trial has finished.
    local_scratch: bool = False
    # "<dataset>:<absolute dir>" (sweeps' --heldout, sevlm.heldout.parse_heldout): the tested
    # checkpoint is also scored there, under schema.heldout_metric(...) in the final metrics.
    heldout: str | None = None
    # "module:function" with run_training's signature; $SEVLM_TRAINING_FN overrides it
    # (a developer hook, e.g. for a stand-in loop).
    training_fn: str = field(default_factory=lambda: os.environ.get("SEVLM_TRAINING_FN", DEFAULT_TRAINING_FN))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSettings:
        return cls(**dict(data))

    def point_overrides(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's point (its Tune config) as configuration overrides."""
        overrides: dict[str, Any] = {}
        for key, value in point.items():
            layers = self.point_layers.get(key)
            if layers is None:
                overrides[key] = value
            else:
                overrides.update(layers[str(value)])
        return overrides

    def run_overrides(self, run_name: str) -> dict[str, Any]:
        """What a trial's run sets itself: its own output folder (a --set output_dir is
        the root of the trials' folders)."""
        return {"output_dir": f"{self.outputs_path}/{run_name}"}

    @property
    def train_storage_path(self) -> str:
        """Ray Train runs of the sweep: ``<storage>/<sweep>/train/<trial run name>``."""
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}/train"

    @property
    def outputs_path(self) -> str:
        """Where the trials write; read on the node that runs the trial."""
        if self.output_root:
            return self.output_root
        if self.local_scratch:
            return f"{scratch_root()}/{self.sweep_name}"
        return f"{self.storage_path.rstrip('/')}/{self.sweep_name}/outputs"


def scratch_root() -> str:
    """A node's local folder for trials' working files: $SEVLM_SCRATCH_DIR, else
    ~/.cache/sevlm-sweeps/trials."""
    return os.environ.get("SEVLM_SCRATCH_DIR") or os.path.expanduser("~/.cache/sevlm-sweeps/trials")
