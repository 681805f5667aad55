"""``mlflow ui`` on a sweep's store, opened through the sweeps' locked opener first.

MLflow creates and migrates the tables of a new SQLite store in whichever process opens it
first, without a lock: an ``mlflow ui`` started while a sweep was creating ``mlflow.db``
made the sweep fail ("duplicate column name: step"). This opens the store the way every
sweep does (``trainables.mlflow_store.open_tracking_store``: under a file lock), then
becomes ``mlflow ui``, which finds the tables ready. ``make mlflow-ui`` and the command a
sweep prints run it. First it prints the link of each recent sweep's parent run, in the
UI's "Model training" view (MLflow 3 opens an experiment on its GenAI view otherwise).

    python -m trainables.mlflow_ui [--backend-store-uri URI] [any other `mlflow ui` flag]

The store defaults to the sweeps' (``--tracking-uri``'s default: ``$MLFLOW_TRACKING_URI``,
else ``./mlflow.db``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainables import tracking_schema as schema
from trainables.mlflow_store import open_tracking_store, resolve_tracking_uri, sqlite_path, ui_url

STORE_FLAG = "--backend-store-uri"
# One worker and no job-execution workers: 2 processes and ~0.5 GB instead of ~16 and 2.5 GB.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
UI_DEFAULTS = ["--workers", "1"]
RECENT_SWEEPS = 5  # parent runs listed, newest first


def ui_base(args: list[str]) -> str:
    """The address ``mlflow ui`` will listen on, from its --host/-h and --port/-p."""
    def value(*names: str, default: str) -> str:
        for i, arg in enumerate(args):
            for name in names:
                if arg == name and i + 1 < len(args):
                    return args[i + 1]
                if arg.startswith(name + "="):
                    return arg.split("=", 1)[1]
        return default

    host = value("--host", "-h", default="127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{value('--port', '-p', default='5000')}"


def sweep_links(client, base: str, limit: int = RECENT_SWEEPS) -> list[str]:
    """A line per recent sweep (newest first): its name, status, trials and the link that
    opens its parent run; then each experiment's runs table."""
    lines, experiments = [], []
    for experiment in client.search_experiments():
        parents = client.search_runs([experiment.experiment_id],
                                     filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_PARENT}'",
                                     order_by=["attributes.start_time DESC"], max_results=limit)
        if parents:
            experiments.append(experiment)
        lines += [(run.info.start_time or 0, run, experiment) for run in parents]
    lines.sort(key=lambda item: item[0], reverse=True)
    out = []
    for _, run, experiment in lines[:limit]:
        tags = run.data.tags
        trials = tags.get(schema.TAG_TRIALS_TOTAL)
        what = f"{run.info.status}" + (f", {tags.get(schema.TAG_TRIALS_FINISHED, '?')}/{trials} trials finished"
                                       if trials else "")
        out.append(f"  {run.info.run_name} ({what}): {ui_url('', experiment.experiment_id, run.info.run_id, base)}")
    for experiment in experiments:
        out.append(f"  every run of experiment {experiment.name!r}: {ui_url('', experiment.experiment_id, base=base)}")
    return out


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
        client = open_tracking_store(uri)  # creates or migrates the tables under the sweeps' lock
        base = ui_base(args)
        links = sweep_links(client, base)
        print(f"MLflow UI on {base} (store {uri}). "
              + ("The recent sweeps, each opening on its parent run (description: its results table; "
                 "its trials: the + beside it):" if links else "No sweep in this store yet."), flush=True)
        if links:
            print("\n".join(links), flush=True)
    mlflow = str(Path(sys.executable).parent / "mlflow")
    os.execve(mlflow, [mlflow, "ui", *args], {**os.environ, **UI_ENV})


if __name__ == "__main__":
    main()
