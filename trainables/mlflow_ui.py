"""``mlflow ui`` on a sweep's store, opened through the sweeps' locked opener first.

MLflow creates and migrates the tables of a new SQLite store in whichever process opens it
first, without a lock: an ``mlflow ui`` started while a sweep was creating ``mlflow.db``
made the sweep fail ("duplicate column name: step"). This opens the store the way every
sweep does (``trainables.mlflow_store.open_tracking_store``: under a file lock), then
becomes ``mlflow ui``, which finds the tables ready. ``make mlflow-ui`` and the command a
sweep prints run it.

    python -m trainables.mlflow_ui [--backend-store-uri URI] [any other `mlflow ui` flag]

The store defaults to the sweeps' (``--tracking-uri``'s default: ``$MLFLOW_TRACKING_URI``,
else ``./mlflow.db``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainables.mlflow_store import open_tracking_store, resolve_tracking_uri, sqlite_path

STORE_FLAG = "--backend-store-uri"
# One worker and no job-execution workers: 2 processes and ~0.5 GB instead of ~16 and 2.5 GB.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
UI_DEFAULTS = ["--workers", "1"]


def ui_argv(argv: list[str]) -> tuple[str, list[str]]:
    """The store and the ``mlflow ui`` arguments: the store absolute, the defaults added."""
    args = list(argv)
    if STORE_FLAG in args:
        i = args.index(STORE_FLAG) + 1
        args[i] = resolve_tracking_uri(args[i])
        uri = args[i]
    else:
        uri = resolve_tracking_uri(None)
        args += [STORE_FLAG, uri]
    if "--workers" not in args:
        args = UI_DEFAULTS + args
    return uri, args


def main(argv: list[str] | None = None) -> None:
    uri, args = ui_argv(sys.argv[1:] if argv is None else argv)
    if sqlite_path(uri) is not None:
        open_tracking_store(uri)  # creates or migrates the tables under the sweeps' lock
    mlflow = str(Path(sys.executable).parent / "mlflow")
    os.execve(mlflow, [mlflow, "ui", *args], {**os.environ, **UI_ENV})


if __name__ == "__main__":
    main()
