"""What a user meets in the MLflow UI (seconds, a temporary SQLite store, no Ray): every link
the project prints opens the "Model training" view (MLflow 3 opens an experiment on its
GenAI view otherwise), the experiment's description says how the runs are organised and a
sweep's parent run's description holds its results table.

The pages themselves were looked at in headless Chromium when this was written; here the
links and texts are checked as strings and through MLflow's API, which the UI reads. Also
here: the log-scale axes of the alpha search's figure, whose labels ran into each other.
"""

from __future__ import annotations

import pytest

from trainables import tracking_schema as schema

MODEL_TRAINING = "?workflowType=machine_learning"


def test_every_link_opens_the_model_training_view(tmp_path):
    from trainables.mlflow_store import ui_url

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui_url(db, "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc" + MODEL_TRAINING
    assert ui_url(db, "3") == "http://127.0.0.1:5000/#/experiments/3" + MODEL_TRAINING
    assert ui_url("http://head:5000/", "3", "abc") == "http://head:5000/#/experiments/3/runs/abc" + MODEL_TRAINING
    assert ui_url(db, "3", "abc", base="http://127.0.0.1:5632") == (
        "http://127.0.0.1:5632/#/experiments/3/runs/abc" + MODEL_TRAINING)
    assert ui_url(db) == "http://127.0.0.1:5000"  # the UI's front page: no view to choose


def _open(uri, tmp_path, name="s", kind="alpha_search"):
    """A driver's SweepTracking with its parent run open: (tracking, (experiment id, parent run id))."""
    from trainables.sweep_tracking import SweepTracking

    tracking = SweepTracking(uri, "e", name, kind, str(tmp_path / name))
    return tracking, tracking.open_parent_run(metric="val/rouge_l", params={}, tags={}, spec={}, total_trials=3)


ROWS = [
    {"trial_id": "t0", "status": "FINISHED", "state": "finished", "run_id": "r0", "model.alpha": 2.0,
     "train.lr_decoder": 0.01, "val/rouge_l": 40.25, "test/acc": 45.0, "test/bleu4": 21.84, "test/cider": 51.7},
    {"trial_id": "t1", "status": "FINISHED", "state": "finished", "run_id": "r1", "model.alpha": 0.5,
     "train.lr_decoder": 0.0057, "val/rouge_l": 55.5, "test/acc": 50.0, "test/bleu4": 33.1, "test/cider": 90.2},
    {"trial_id": "t2", "status": "KILLED", "state": "interrupted", "run_id": "r2", "model.alpha": 8.0,
     "train.lr_decoder": 0.02, "val/rouge_l": 3.0},
]
COUNTS = {"total": 3, "finished": 2, "failed": 0, "killed": 1, "planned": 4, "stopped_early": 0,
          "interrupted": 1, "not_started": 1}


def test_the_experiment_says_how_runs_are_organised_and_the_parent_holds_the_results(tmp_path):
    from trainables.mlflow_notes import EXPERIMENT_NOTE_TITLE
    from trainables.mlflow_store import open_tracking_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_tracking_store(uri)
    tracking, (experiment_id, parent_id) = _open(uri, tmp_path)
    note = client.get_experiment(experiment_id).tags[schema.MLFLOW_NOTE]
    assert note.startswith(EXPERIMENT_NOTE_TITLE)
    for text in ("One parent run per sweep", "One child run per trial", schema.TAG_SWEEP_NAME, schema.TAG_VARIANT,
                 schema.TAG_SEED, "report/report.html", "python -m analysis", schema.ARTIFACT_SWEEP_RESULTS, "--resume"):
        assert text in note, text
    running = client.get_run(parent_id).data.tags[schema.MLFLOW_NOTE]
    assert "`s`" in running and "3 trials" in running and "appears here when it ends" in running

    tracking.close_parent_run(status="KILLED", counts=COUNTS, rows=ROWS,
                              best={"trial_id": "t1", "run_id": "r1", "metrics": {"val/rouge_l": 55.5}},
                              metric="val/rouge_l", columns={"model.alpha": "alpha", "train.lr_decoder": "lr_dec"})
    parent = client.get_run(parent_id)
    assert parent.info.status == "KILLED"
    note = parent.data.tags[schema.MLFLOW_NOTE]
    first, second, *_ = [line for line in note.splitlines() if line]
    # the first lines, which the UI shows before "Show more": the outcome and the answer
    assert first == ("**Sweep `s`** (alpha_search, optimising `val/rouge_l`): KILLED, 2 finished, 1 interrupted, "
                     "1 not started (of 4 trials).")
    assert second == ("**Best: trial `t1`**, val/rouge_l 55.5: alpha 0.5, lr_dec 0.0057; "
                      "test ACC 50.0, BLEU-4 33.1, CIDEr 90.2.")
    assert f"`python sweeps/alpha_search.py --resume --name s --storage {tmp_path}` continues it" in note
    table = [line for line in note.splitlines() if line.startswith("|")]
    assert table[0] == "| trial | status | alpha | lr_dec | val/rouge_l | ACC | BLEU-4 | CIDEr |"
    assert table[2:] == ["| t1 | finished | 0.5 | 0.0057 | 55.5 | 50.0 | 33.1 | 90.2 |",  # best first
                         "| t0 | finished | 2.0 | 0.01 | 40.2 | 45.0 | 21.8 | 51.7 |",
                         "| t2 | interrupted | 8.0 | 0.02 | 3.0 | - | - | - |"]

    # a resumed sweep is running again; an experiment description someone wrote stays
    client.set_experiment_tag(experiment_id, schema.MLFLOW_NOTE, "my own notes")
    assert _open(uri, tmp_path)[1] == (experiment_id, parent_id)
    assert "appears here when it ends" in client.get_run(parent_id).data.tags[schema.MLFLOW_NOTE]
    assert client.get_experiment(experiment_id).tags[schema.MLFLOW_NOTE] == "my own notes"


def test_a_long_results_table_fits_mlflows_tag_limit():
    from trainables.mlflow_notes import MAX_NOTE_CHARS, parent_note

    rows = [{**ROWS[0], "trial_id": f"t{i:03d}", "val/rouge_l": float(i)} for i in range(300)]
    note = parent_note(sweep_name="big", sweep_kind="ablations", metric="val/rouge_l", status="FINISHED",
                       counts={"total": 300, "finished": 300, "failed": 0, "killed": 0}, rows=rows,
                       columns={"model.alpha": "alpha"}, best={"trial_id": "t299", "metrics": {}})
    assert len(note) <= MAX_NOTE_CHARS < 8000  # MLflow's limit on a tag value
    assert "| t299 |" in note and "more trials in `sweep/results.csv`" in note


def test_mlflow_ui_prints_the_link_of_each_recent_sweep(tmp_path, monkeypatch, capsys):
    import trainables.mlflow_ui as mlflow_ui
    from trainables.mlflow_store import open_tracking_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, (experiment_id, older) = _open(uri, tmp_path, "older")
    _, (_, newer) = _open(uri, tmp_path, "newer", kind="ablations")
    client = open_tracking_store(uri)
    client.set_tag(older, schema.TAG_TRIALS_TOTAL, "8")
    client.set_tag(older, schema.TAG_TRIALS_FINISHED, "8")
    client.set_terminated(older, "FINISHED")
    assert mlflow_ui.ui_base(["--port", "5632"]) == "http://127.0.0.1:5632"
    assert mlflow_ui.ui_base(["--host=0.0.0.0", "-p", "8080"]) == "http://127.0.0.1:8080"

    execs = []
    monkeypatch.setattr(mlflow_ui.os, "execve", lambda path, argv, env: execs.append(argv))
    mlflow_ui.main(["--backend-store-uri", uri, "--port", "5632"])
    lines = capsys.readouterr().out.splitlines()
    base = f"http://127.0.0.1:5632/#/experiments/{experiment_id}"
    assert lines[0].startswith("MLflow UI on http://127.0.0.1:5632")
    assert lines[1] == f"  newer (RUNNING): {base}/runs/{newer}{MODEL_TRAINING}"  # newest first
    assert lines[2] == f"  older (FINISHED, 8/8 trials finished): {base}/runs/{older}{MODEL_TRAINING}"
    assert lines[3] == f"  every run of experiment 'e': {base}{MODEL_TRAINING}"
    assert execs and execs[0][1] == "ui" and "5632" in execs[0]


def test_an_empty_store_says_so(tmp_path, monkeypatch, capsys):
    import trainables.mlflow_ui as mlflow_ui

    monkeypatch.setattr(mlflow_ui.os, "execve", lambda path, argv, env: None)
    mlflow_ui.main(["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert capsys.readouterr().out.splitlines() == [
        f"MLflow UI on http://127.0.0.1:5000 (store sqlite:///{tmp_path / 'mlflow.db'}). No sweep in this store yet."]


@pytest.mark.parametrize("values, labels", [
    ([0.0057, 0.01, 0.0139], ["0.006", "0.008", "0.01"]),  # under a decade: was "6×10⁻³" minor labels
    ([0.002, 0.0035, 0.03], ["0.003", "0.01", "0.03"]),
    ([0.11, 2.0, 8.46], ["0.3", "1", "3"]),
    ([2.0, 2.1], ["2", "2.1"]),
])
def test_log_axes_label_a_few_round_numbers(values, labels):
    import matplotlib.pyplot as plt

    from analysis.figures import _log_ticks

    fig, ax = plt.subplots(figsize=(2.9, 2.5))
    ax.scatter(values, values)
    ax.set_xscale("log")
    _log_ticks(ax, values)
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert major == labels and minor == []
