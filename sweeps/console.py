"""What the console shows during a sweep: the project's progress table and summary. Ray's
and MLflow's own chatter (Tune's experiment banner and TensorBoard hint, the raylet's
"N PYTHON worker processes have been started" warning, Ray's token-authentication notice,
MLflow's database set-up) is shown with ``--verbose`` only, and so is what Tune says about
an interrupted sweep: its "Resume experiment with: Tuner.restore(...)" hint (the sweep
prints its own ``--resume`` command, the one way to continue it) and the "Failed to fetch
metrics" traceback of a trial that was stopped before it wrote any result.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys

# Substrings of the lines that are dropped without --verbose. The raylet's warning is
# expected here: every trial is a fractional-CPU Tune function plus Ray Train actors.
NOISE = (
    "worker processes have been started on node",
    "Token authentication is enabled for this Ray cluster",
    "Experiment has been interrupted, but the most recent state was saved",
    "Resume experiment with: Tuner.restore",
    "Failed to fetch metrics for",
)
# Tune's own console output (experiment banner, TensorBoard hint) is off with its legacy
# reporter at verbosity 0.
# MLflow's client prints "View run ... at" links (to its GenAI view) whenever a run on a
# tracking server ends: the sweep prints its own link to the parent run.
QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class _LineFilter(io.TextIOBase):
    """A text stream that forwards every line except the noise (partial lines are held
    until their end arrives or the stream is flushed)."""

    def __init__(self, stream):
        self.stream = stream
        self.partial = ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        kept = [line for line in lines if not _noise(line)]
        if kept:
            self.stream.write("\n".join(kept) + "\n")
        return len(text)

    def flush(self) -> None:
        if self.partial and not _noise(self.partial):
            self.stream.write(self.partial)
        self.partial = ""
        self.stream.flush()

    def isatty(self) -> bool:
        # Asked by colorama (inside Ray) even at exit, when a test's stream may be closed.
        try:
            return self.stream.isatty()
        except ValueError:
            return False

    def fileno(self) -> int:
        return self.stream.fileno()


class _LogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _noise(record.getMessage())


def _noise(line: str) -> bool:
    return any(n in line for n in NOISE)


@contextlib.contextmanager
def quiet_console(verbose: bool):
    """Hide Ray's and MLflow's chatter unless ``verbose``."""
    if verbose:
        yield
        return
    # Both configure their loggers when first imported: after that, ours stay.
    import mlflow  # noqa: F401
    import ray  # noqa: F401

    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    mlflow_logger = logging.getLogger("mlflow")
    saved_level = mlflow_logger.level
    mlflow_logger.setLevel(logging.WARNING)
    log_filter = _LogFilter()
    ray_handlers = logging.getLogger("ray").handlers
    for handler in ray_handlers:
        handler.addFilter(log_filter)
    saved_stdout = sys.stdout
    sys.stdout = _LineFilter(saved_stdout)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = saved_stdout
        for handler in ray_handlers:
            handler.removeFilter(log_filter)
        mlflow_logger.setLevel(saved_level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
