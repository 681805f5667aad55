"""A training function (``$SEVLM_TRAINING_FN=flaky_training:run_training``) whose first
attempt dies right after its first checkpoint was reported, the way a lost worker process
would; later attempts train normally. Tests put this folder on the workers' PYTHONPATH."""

from __future__ import annotations

from pathlib import Path

from sevlm.training import loop
from sevlm.training.callbacks import TrainingCallback

FAILED_MARKER = "flaky_failed_at_step"  # in the run's output folder: the first attempt died
RESUMED_MARKER = "flaky_resumed_from"  # written by each later attempt: where it started


class _DieAfterFirstCheckpoint(TrainingCallback):
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_evaluation(self, event):
        if not self.marker.exists():
            self.marker.write_text(str(event.step))
            raise RuntimeError(f"planted failure after the checkpoint of step {event.step}")


def run_training(cfg, callbacks=(), resume_from=None, progress=False):
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    marker = output / FAILED_MARKER
    if marker.exists():
        with (output / RESUMED_MARKER).open("a") as f:
            f.write(f"{resume_from or ''}\n")
    # after the real callbacks: the checkpoint has been reported when this one raises
    return loop.run_training(cfg, [*callbacks, _DieAfterFirstCheckpoint(marker)],
                             resume_from=resume_from, progress=progress)
