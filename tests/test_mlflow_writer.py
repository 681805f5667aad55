"""The driver's MLflow writer driven by fake trials against a temporary SQLite store, and
a resumed sweep's parent run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sevlm.variants import BASELINE, FULL, VARIANTS
from sweeps.strategies import Grid
from trainables import tracking_schema as schema


# ----------------------------------------------------------------- MLflow writer


class _Trial:
    def __init__(self, trial_id, config, error=None):
        self.trial_id, self.config, self.status, self.last_result, self._error = trial_id, config, "RUNNING", {}, error

    def get_error(self):
        return self._error


def _evaluation(step, value, session="w1", start=0, best=True, checkpoint=None, config=None, replay=()):
    from trainables import report_protocol as rp

    report = rp.evaluation_report(
        rp.WorkerSession(session, start, "10.0.0.1", "node-a", "cpu"), step,
        {"val/rouge_l": value, "train/loss": 1.0 / step, "epoch": float(step // 4)},
        is_best=best, score=value, train_log=[[step - 1, {"train/loss": 1.5}], [step, {"train/loss": 1.2}]],
        config_json=json.dumps(config) if config else None, replay=list(replay),
    )
    if checkpoint:
        report[rp.CHECKPOINT_PATH_KEY] = checkpoint  # as Ray Train's TuneReportCallback adds it
    return report


@pytest.fixture()
def store(tmp_path):
    from trainables.mlflow_store import open_tracking_store
    from trainables.mlflow_writer import MlflowTrialWriter
    from trainables.sweep_tracking import SweepTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = Grid(variants={"full": VARIANTS[FULL], "baseline": VARIANTS[BASELINE]}, seeds=[0, 1])
    tracking = SweepTracking(uri, "e", "s", "ablations", str(tmp_path / "sweep"))
    _, parent_id = tracking.open_parent_run(
        metric="val/rouge_l", params={"sweep.kind": "ablations"}, tags=grid.parent_tags(), spec={"name": "s"},
    )
    writer = MlflowTrialWriter(tracking, storage_path=str(tmp_path), metric="val/rouge_l", trial_tags=grid.trial_tags)
    return tracking, open_tracking_store(uri), writer, parent_id


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_mlflow_writer_records_fake_trials(store, tmp_path):
    from trainables import mlflow_store
    from trainables import report_protocol as rp
    from trainables.mlflow_queue import QUEUE_ARTIFACTS, QUEUE_FILE

    tracking, client, writer, parent_id = store
    final_dir = tmp_path / "final"
    (final_dir / "predictions").mkdir(parents=True)
    (final_dir / "predictions" / "test.csv").write_text("painting_id,dominant_emotion\np1,awe\n")
    (final_dir / schema.ARTIFACT_FINAL_METRICS).write_text("{}")
    (final_dir / "sevlm_final.json").write_text("{}")  # bookkeeping: not an artifact

    done = _Trial("t0", {"ablation": "full", "seed": 0})
    failed = _Trial("t1", {"ablation": "baseline", "seed": 0}, error=RuntimeError("lexicon missing"))
    open_ = _Trial("t2", {"ablation": "full", "seed": 1})
    trials = [done, failed, open_]
    for t in trials:
        writer.on_trial_start(0, trials, t)
    writer.on_trial_result(0, trials, done, _evaluation(4, 10.0, checkpoint="/ckpt/4", config={"seed": 0, "model.alpha": 2.0}))
    writer.on_trial_result(0, trials, done, _evaluation(8, 20.0, checkpoint="/ckpt/8"))
    final = rp.final_report(rp.WorkerSession("w1", 0, "10.0.0.1", "node-a", "cpu"), 8,
                            {"test/acc": 55.0, "best_val/rouge_l": 20.0}, stopped_early=False,
                            metric="val/rouge_l", metric_value=20.0)
    final[rp.CHECKPOINT_PATH_KEY] = str(final_dir)
    writer.on_trial_result(0, trials, done, final)
    writer.on_trial_complete(0, trials, done)
    writer.on_trial_error(0, trials, failed)
    writer.on_trial_result(0, trials, open_, _evaluation(4, 5.0))
    writer.on_experiment_end(trials)

    runs = mlflow_store.sweep_runs(client, "s", experiment="e")
    assert runs.parent.info.run_id == parent_id
    by_id = runs.by_trial_id()
    assert set(by_id) == {"t0", "t1", "t2"}
    run = client.get_run(by_id["t0"].info.run_id)
    tags = run.data.tags
    assert tags[schema.MLFLOW_PARENT_RUN_ID] == parent_id and run.info.run_name == "s_t0"
    assert (tags[schema.TAG_VARIANT], tags[schema.TAG_SEED]) == ("full", "0")
    assert (run.info.status, tags[schema.TAG_END_REASON]) == ("FINISHED", schema.END_COMPLETED)
    assert (tags[schema.TAG_DEVICE], tags[schema.TAG_NODE_ID], tags[schema.TAG_WORKER_STARTS]) == ("cpu", "node-a", "1")
    assert (tags[schema.TAG_BEST_CHECKPOINT], tags[schema.TAG_BEST_STEP]) == ("/ckpt/8", "8")
    assert run.data.params == {"seed": "0", "model.alpha": "2.0"}  # the worker's config, once
    assert _steps(client, run.info.run_id, "val/rouge_l") == [4, 8]
    assert _steps(client, run.info.run_id, "train_step/loss") == [3, 4, 7, 8]
    assert run.data.metrics["test/acc"] == 55.0 and run.data.metrics["best_val/rouge_l"] == 20.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"predictions", schema.ARTIFACT_FINAL_METRICS}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "predictions")] == [schema.ARTIFACT_PREDICTIONS_TEST]

    run = client.get_run(by_id["t1"].info.run_id)
    assert (run.info.status, run.data.tags[schema.TAG_END_REASON]) == ("FAILED", schema.END_FAILED)
    assert run.data.tags[schema.TAG_ERROR] == "lexicon missing"
    run = client.get_run(by_id["t2"].info.run_id)
    assert (run.info.status, run.data.tags[schema.TAG_END_REASON]) == ("KILLED", schema.END_INTERRUPTED)

    # --resume: Tune restores the writer from its pickle; the interrupted trial continues its
    # own run from its step-4 checkpoint, re-sending what it reported before it.
    resumed = pickle.loads(pickle.dumps(writer))
    assert resumed.tracking is tracking  # the driver's: one client, one write queue
    resumed.on_trial_start(0, [open_], open_)
    report = _evaluation(8, 7.0, session="w2", start=4, replay=[rp.stored_record(_evaluation(4, 5.0))])
    resumed.on_trial_result(0, [open_], open_, report)
    resumed.on_trial_complete(0, [open_], open_)
    run = client.get_run(by_id["t2"].info.run_id)
    assert len(mlflow_store.sweep_runs(client, "s", experiment="e").trials) == 3
    assert _steps(client, run.info.run_id, "val/rouge_l") == [4, 8]  # no duplicate
    assert _steps(client, run.info.run_id, "train_step/loss") == [3, 4, 7, 8]
    assert [m.value for m in client.get_metric_history(run.info.run_id, schema.WORKER_START_METRIC)] == [0.0, 4.0]
    tags = run.data.tags
    assert (tags[schema.TAG_TRIAL_STARTS], tags[schema.TAG_WORKER_STARTS], tags[schema.TAG_RESUMED_FROM_STEP]) == (
        "2", "2", "4")
    assert run.info.status == "KILLED" and tags[schema.TAG_END_REASON] == schema.END_PRUNED  # no final report

    tracking.close_parent_run(status="FINISHED", counts={"total": 3, "finished": 1, "failed": 1, "killed": 1},
                              rows=[{"trial_id": "t0", "test/acc": 55.0}, {"trial_id": "t1", "status": "FAILED"}],
                              best={"trial_id": "t0", "run_id": by_id["t0"].info.run_id,
                                    "metrics": {"val/rouge_l": 20.0}})
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[schema.TAG_TRIALS_FAILED] == "1"
    assert parent.data.metrics[schema.PARENT_BEST_METRIC_PREFIX + "val/rouge_l"] == 20.0
    assert json.loads(parent.data.tags[schema.TAG_GRID])["seeds"] == [0, 1]
    csv = Path(client.download_artifacts(parent_id, schema.ARTIFACT_SWEEP_RESULTS)).read_text().splitlines()
    assert csv == ["trial_id,test/acc,status", "t0,55.0,", "t1,,FAILED"]
    # every write went through the queue, and it is empty: no other file of unwritten writes
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == sorted([QUEUE_FILE, QUEUE_ARTIFACTS])
    assert (tmp_path / "sweep" / QUEUE_FILE).read_text() == ""


def test_a_resumed_sweep_continues_its_parent_run(tmp_path):
    from trainables.mlflow_store import open_tracking_store
    from trainables.sweep_tracking import SweepTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kwargs = dict(metric="val/bleu4", params={"sweep.num_trials": 8}, tags={}, spec={})
    first = SweepTracking(uri, "e", "s", "alpha_search", str(tmp_path)).open_parent_run(**kwargs)
    # a later driver (--resume)
    again = SweepTracking(uri, "e", "s", "alpha_search", str(tmp_path)).open_parent_run(
        **{**kwargs, "params": {"sweep.num_trials": 9}})
    assert again == first
    parent = open_tracking_store(uri).get_run(first[1])
    assert parent.data.tags[schema.TAG_RESUME_COUNT] == "1" and parent.data.params["sweep.num_trials"] == "8"


def test_a_sweeps_params_read_the_same_fresh_and_resumed(sweep_in_tmp):
    """A composed configuration holds tuples, its saved spec lists: a param's text is the same."""
    from sweeps import ablations
    from sweeps.spec import SweepSpec, build_spec
    from trainables.mlflow_store import param_text

    sweep = ablations.SWEEP
    spec = build_spec(sweep.parser().parse_args(["--quick"]), kind=sweep.kind, strategy_flags=sweep.strategy,
                      default_overrides=sweep.default_overrides, default_metric=sweep.default_metric,
                      cwd=sweep_in_tmp)
    spec.save()
    fresh, saved = spec.parent_params(), SweepSpec.load(spec.experiment_dir).parent_params()
    assert {k: param_text(v) for k, v in fresh.items()} == {k: param_text(v) for k, v in saved.items()}
    assert param_text(fresh["sweep.set.data.split_fractions"]) == "[0.55, 0.1, 0.35]"
