"""Sweeps whose trials fail (real Ray, real MLflow, the shrunken tiny configuration of
test_sweep.py):

* a trial that always fails is retried by Tune, then FAILED in MLflow;
* a trial whose first attempt dies after its first checkpoint, with no worker retries, is
  retried by Tune from that checkpoint;
* a cluster with two fake-GPU worker nodes: the two trials run at the same time, one per
  node; one node is killed after its trial's first checkpoint, the trial resumes from that
  checkpoint on a new node and one MLflow run holds its whole history.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from test_sweep import EVAL_EVERY, _main, _wait_for, assert_complete_history, fast_flags, steps, sweep_runs
from trainables import tracking_schema as schema


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("failure_data")


@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failing_trial_is_retried_then_failed_in_mlflow(tmp_path, data_dir, capsys):
    # The NRC lexicon without its file: every attempt of the trial fails in the worker.
    name = "failing"
    rc = _main(["--num-trials", "1", "--name", name, "--worker-retries", "0", "--trial-retries", "1",
                "--set", "vad.lexicon=nrc"] + fast_flags(data_dir))
    assert rc == 1, capsys.readouterr().out
    client, parents, trials = sweep_runs(tmp_path / "mlflow.db", name)
    assert len(parents) == 1 and len(trials) == 1
    run = trials[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[schema.TAG_END_REASON] == schema.END_FAILED
    assert run.data.tags[schema.TAG_ERROR]
    assert run.data.tags[schema.TAG_TRIAL_STARTS] == "2"  # Tune retried the trial once
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trial_retried_by_tune_resumes_from_its_checkpoint(tmp_path, data_dir, monkeypatch):
    # No worker retries: the failure after the first checkpoint fails the Ray Train run, and
    # Tune's retry of the trial must continue from that checkpoint, not start again.
    import flaky_training

    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEVLM_TRAINING_FN", "flaky_training:run_training")
    name = "retried"
    rc = _main(["--num-trials", "1", "--name", name, "--worker-retries", "0", "--trial-retries", "1",
                "--progress-interval", "60"] + fast_flags(data_dir, evals=3))
    assert rc == 0
    client, parents, trials = sweep_runs(tmp_path / "mlflow.db", name)
    run = trials[0]
    tags = run.data.tags
    assert run.info.status == "FINISHED" and parents[0].info.status == "FINISHED"
    assert tags[schema.TAG_TRIAL_STARTS] == "2"  # Tune started the trial twice
    assert tags[schema.TAG_WORKER_STARTS] == "2"
    assert tags[schema.TAG_RESUMED_FROM_STEP] == str(EVAL_EVERY)  # from the first checkpoint
    outputs = tmp_path / "ray_results" / name / "outputs" / schema.trial_run_name(name, tags[schema.TAG_TRIAL_ID])
    assert (outputs / flaky_training.FAILED_MARKER).read_text() == str(EVAL_EVERY)
    resumed_from = (outputs / flaky_training.RESUMED_MARKER).read_text().split()
    assert len(resumed_from) == 1 and resumed_from[0], "the retry started from scratch"
    # one history: the first attempt's evaluation is not logged twice
    assert steps(client, run.info.run_id, schema.EPOCH_METRIC) == [EVAL_EVERY * (i + 1) for i in range(3)]
    assert [m.value for m in client.get_metric_history(run.info.run_id, schema.WORKER_START_METRIC)] == [
        0.0, float(EVAL_EVERY)]
    assert any(k.startswith(schema.TEST_PREFIX) for k in run.data.metrics)



@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fake_gpu_cluster_one_trial_per_node_and_node_failure(tmp_path, data_dir, monkeypatch):
    from ray.cluster_utils import Cluster

    from trainables.node_checks import FAKE_GPUS_ENV

    monkeypatch.setenv(FAKE_GPUS_ENV, "1")  # the nodes' fake GPUs train on the CPU
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    name = "gpus"
    db = tmp_path / "mlflow.db"
    result: dict = {}

    def run():
        result["rc"] = _main(
            ["--address", cluster.address, "--storage", str(tmp_path / "ray_results"),
             "--num-trials", "2", "--concurrency", "2", "--gpu", "on",
             "--name", name, "--worker-retries", "3", "--progress-interval", "30"]
            + fast_flags(data_dir, evals=6)
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        def both_started():
            if not db.exists():
                return None
            try:
                client, _, trials = sweep_runs(db, name)
            except Exception:  # noqa: BLE001 - experiment not created yet
                return None
            ready = [t for t in trials if t.data.tags.get(schema.TAG_NODE_ID) and "epoch" in t.data.metrics]
            return ready if len(ready) == 2 else None

        ready = _wait_for(both_started, 400, "both trials to report their first checkpoint")
        nodes = {t.data.tags[schema.TAG_NODE_ID] for t in ready}
        assert len(nodes) == 2, "the two trials ran on the same node"
        assert nodes <= {w.node_id for w in workers}
        victim_run = ready[0]
        victim_node = next(w for w in workers if w.node_id == victim_run.data.tags[schema.TAG_NODE_ID])
        killed_after = int(victim_run.data.tags.get(schema.TAG_BEST_STEP, "0"))
        cluster.remove_node(victim_node)
        cluster.add_node(num_cpus=1, num_gpus=1)
        thread.join(timeout=500)
        assert not thread.is_alive(), "sweep did not finish"
    finally:
        if thread.is_alive():
            thread.join(timeout=5)
        cluster.shutdown()
    assert result.get("rc") == 0

    client, parents, trials = sweep_runs(db, name)
    assert len(parents) == 1 and len(trials) == 2
    windows = []
    for run in trials:
        assert run.info.status == "FINISHED"
        eval_steps = assert_complete_history(client, run)
        assert eval_steps == [EVAL_EVERY * (i + 1) for i in range(6)]
        history = client.get_metric_history(run.info.run_id, schema.EPOCH_METRIC)
        windows.append((min(m.timestamp for m in history), max(m.timestamp for m in history)))
    (a0, a1), (b0, b1) = windows
    assert a0 < b1 and b0 < a1, f"the trials did not run at the same time: {windows}"

    victim = client.get_run(victim_run.info.run_id)
    starts = [int(m.value) for m in sorted(client.get_metric_history(victim.info.run_id, schema.WORKER_START_METRIC),
                                           key=lambda m: m.timestamp)]
    print(f"killed node {victim_node.node_id[:8]} after step {killed_after}; worker start steps {starts}; "
          f"nodes {victim.data.tags[schema.TAG_NODE_IDS]}")
    assert starts[0] == 0 and len(starts) >= 2, starts
    assert all(s > 0 for s in starts[1:]), f"a restarted worker began at step 0: {starts}"
    assert starts[1] >= killed_after > 0
    assert int(victim.data.tags[schema.TAG_RESUMED_FROM_STEP]) > 0
    assert len(victim.data.tags[schema.TAG_NODE_IDS].split(",")) >= 2  # ran on two nodes
    # exactly one run for the trial
    again = client.search_runs([victim.info.experiment_id],
                               filter_string=schema.search_filter_trial(name, victim.data.tags[schema.TAG_TRIAL_ID]))
    assert len(again) == 1
