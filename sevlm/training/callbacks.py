"""How a training run reports progress without knowing who listens.

``sevlm`` imports neither Ray nor MLflow: ``trainables/`` implements this interface to
forward metrics and checkpoints to Ray Train (and from there to Tune and MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvaluationEvent:
    """One validation evaluation, with the checkpoint saved right after it."""

    step: int
    epoch: int
    metrics: dict[str, float]  # "val/acc", "val/bleu4", "train/loss_language", ...
    checkpoint_dir: Path  # a complete checkpoint (see sevlm.training.checkpoint)
    predictions_path: Path | None = None  # CSV of per-painting predictions
    is_best: bool = False


@dataclass
class RunResult:
    final_metrics: dict[str, float]  # includes "test/..." metrics
    best_checkpoint_dir: Path | None
    output_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> file
    stopped_early: bool = False


class TrainingCallback:
    """Override what you need; every hook is optional."""

    def on_train_start(self, config_flat: dict, start_step: int) -> None:
        """Called once, after resuming (start_step > 0 when resumed)."""

    def on_train_log(self, step: int, metrics: dict[str, float]) -> None:
        """Training losses, learning rates, throughput and memory every few steps."""

    def on_evaluation(self, event: EvaluationEvent) -> None:
        """After each validation evaluation and its checkpoint."""

    def on_train_end(self, result: RunResult) -> None:
        """After the final test evaluation."""
