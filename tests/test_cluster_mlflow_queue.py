"""The driver's MLflow write queue (trainables/mlflow_queue.py) on a real SQLite store,
with a client that plays an absent or slow server: writes wait on disk, a later driver
writes them, nothing twice, and a dead server costs seconds, not minutes."""

from __future__ import annotations

import socket
import time

import pytest

from trainables import tracking_schema as schema
from trainables.mlflow_queue import WriteQueue


class Outage:
    """A real client whose calls fail while ``down`` (as an unreachable server's do)."""

    def __init__(self, client, down: bool = True, after_create: bool = False):
        self.client, self.down, self.after_create = client, down, after_create
        self.calls = 0

    def __getattr__(self, name):
        real = getattr(self.client, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.after_create and name == "create_run":
                real(*args, **kwargs)  # the server made the run, the answer never came
                self.after_create = False
                raise TimeoutError("read timed out")
            if self.down:
                raise ConnectionError("Connection refused")
            return real(*args, **kwargs)

        return call


@pytest.fixture()
def store(tmp_path):
    from trainables.mlflow_store import get_or_create_experiment, open_tracking_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_tracking_store(uri)
    return client, get_or_create_experiment(client, "e", uri)


def _metric(key, value, step):
    from mlflow.entities import Metric

    return Metric(key, value, 1_700_000_000_000 + step, step)


def _queue_trial(queue: WriteQueue, exp_id: str, trial_id: str) -> str:
    search = schema.search_filter_trial("s", trial_id)
    tags = {schema.TAG_SWEEP_NAME: "s", schema.TAG_TRIAL_ID: trial_id, schema.TAG_ROLE: schema.ROLE_TRIAL}
    run = queue.create_run(trial_id, exp_id, tags, f"s_{trial_id}", search)
    queue.set_status(run, "RUNNING")
    for step in (2, 4, 6):
        queue.log_batch(run, metrics=[_metric("val/bleu4", step / 10, step)], tags={"sevlm.best_step": str(step)})
    queue.set_status(run, "FINISHED", terminated=True)
    return run


def _trial_runs(client, exp_id):
    return client.search_runs([exp_id], filter_string=f"tags.`{schema.TAG_SWEEP_NAME}` = 's'")


def test_writes_wait_on_disk_while_the_server_is_away_and_a_later_driver_writes_them(store, tmp_path):
    client, exp_id = store
    path = tmp_path / "sweep" / "mlflow_queue.jsonl"
    away = Outage(client)
    queue = WriteQueue(away, path, backoff_max_s=0.2)
    for trial_id in ("t0", "t1"):
        _queue_trial(queue, exp_id, trial_id)
    started = time.monotonic()
    assert queue.drain() is False and len(queue) == 2 * 6  # create, 2 statuses, 3 batches
    assert away.calls == 1, "a hook makes one attempt, then backs off"
    assert queue.drain() is False and away.calls == 1  # still backing off: no call at all
    assert time.monotonic() - started < 1
    assert not _trial_runs(client, exp_id)

    # the driver dies; the next one (--resume) finds the writes on disk
    queue = WriteQueue(Outage(client, down=False), path)
    assert len(queue) == 12
    assert queue.drain() is True
    assert path.read_text() == ""  # emptied with the queue
    runs = _trial_runs(client, exp_id)
    assert sorted(r.data.tags[schema.TAG_TRIAL_ID] for r in runs) == ["t0", "t1"]
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val/bleu4")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [2, 4, 6]
        assert run.info.status == "FINISHED" and run.data.tags["sevlm.best_step"] == "6"  # in order


def test_sending_again_writes_nothing_twice(store, tmp_path):
    client, exp_id = store
    path = tmp_path / "q.jsonl"
    # a creation the server did although its answer was lost: found by its tags, not made again
    queue = WriteQueue(Outage(client, down=False, after_create=True), path, backoff_max_s=0.01)
    _queue_trial(queue, exp_id, "t0")
    assert queue.drain(budget_s=5) is True
    # a driver killed after writing but before recording it: everything is sent again
    journal = path.with_suffix(".copy")
    queue = WriteQueue(client, journal)
    _queue_trial(queue, exp_id, "t0")
    lines = journal.read_text()
    assert queue.drain() is True
    journal.write_text(lines)  # as if no write had been marked done
    assert WriteQueue(client, journal).drain() is True
    runs = _trial_runs(client, exp_id)
    assert len(runs) == 1
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val/bleu4")) == [2, 4, 6]


def test_a_refused_write_does_not_block_the_ones_after_it(store, tmp_path):
    from mlflow.entities import Param

    client, exp_id = store
    run_id = client.create_run(exp_id).info.run_id
    queue = WriteQueue(client, tmp_path / "q.jsonl")
    queue.log_batch(run_id, params=[Param("alpha", "1")])
    queue.log_batch(run_id, params=[Param("alpha", "2")])  # MLflow refuses a changed param
    queue.log_batch(run_id, metrics=[_metric("m", 1.0, 1)])
    assert queue.drain() is True
    run = client.get_run(run_id)
    assert run.data.params == {"alpha": "1"} and run.data.metrics == {"m": 1.0}


def _dead_server() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    return f"http://127.0.0.1:{port}"


def test_a_dead_server_costs_seconds_not_minutes(tmp_path):
    from mlflow import MlflowClient

    queue = WriteQueue(MlflowClient(tracking_uri=_dead_server()), tmp_path / "q.jsonl")
    queue.log_batch("0" * 32, metrics=[_metric("m", 1.0, 1)])
    started = time.monotonic()
    assert queue.drain() is False
    assert time.monotonic() - started < 15  # MLflow's own retries took 246 s
    assert len(queue) == 1


def test_the_end_of_a_sweep_with_the_server_away_costs_seconds_and_resume_sends_it(store, tmp_path):
    from trainables.sweep_tracking import SweepTracking

    client, _ = store
    uri, sweep = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "sweep")
    _, parent_id = SweepTracking(uri, "e", "s", "alpha_search", sweep).open_parent_run(
        metric="val/bleu4", params={}, tags={}, spec={})
    # the server went away while the last trial ran: the driver's end-of-sweep writes (a
    # driver of the same sweep whose store is a dead server, its parent run opened before)
    away = SweepTracking(_dead_server(), "e", "s", "alpha_search", sweep)
    away.parent_run_id = parent_id
    started = time.monotonic()
    assert away.trial_run_ids() == {}
    assert away.end_orphaned_trial_runs(drain_s=1) == []
    unsent = away.close_parent_run(status="FINISHED", counts={"total": 1, "finished": 1, "failed": 0, "killed": 0},
                                   rows=[{"trial_id": "t0", "test/acc": 50.0}],
                                   best={"trial_id": "t0", "metrics": {"val/bleu4": 3.0}}, drain_s=1)
    assert time.monotonic() - started < 30  # MLflow's own retries: minutes per call
    # counts and best metrics, results.csv, the status; and best.json, unless the artifact
    # repository MLflow cached for the run (a local folder here) took it without the server
    assert unsent in (3, 4)
    assert client.get_run(parent_id).info.status == "RUNNING"

    # --resume (the server back): everything is written, once
    assert SweepTracking(uri, "e", "s", "alpha_search", sweep).replay_queued() == 0
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[schema.TAG_TRIALS_FINISHED] == "1"
    assert parent.data.metrics[schema.PARENT_BEST_METRIC_PREFIX + "val/bleu4"] == 3.0
    artifacts = {a.path for a in client.list_artifacts(parent_id, "sweep")}
    assert {schema.ARTIFACT_SWEEP_RESULTS, schema.ARTIFACT_SWEEP_BEST} <= artifacts


def test_the_parent_runs_creation_goes_through_the_queue_and_survives_a_lost_answer(store, tmp_path):
    from trainables.sweep_tracking import SweepTracking

    client, exp_id = store
    uri, sweep = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "sweep")
    opening = dict(metric="val/bleu4", params={"sweep.num_trials": 8}, tags={"sevlm.extra": "x"}, spec={"name": "s"})
    # the store makes the parent run, its answer is lost: the queue finds it by its tags
    flaky = Outage(client, down=False, after_create=True)
    tracking = SweepTracking(uri, "e", "s", "alpha_search", sweep, client=flaky)
    tracking.queue.backoff_max_s = 0.01
    _, parent_id = tracking.open_parent_run(**opening, drain_s=10)
    parents = client.search_runs([exp_id], filter_string=schema.search_filter_parent("s"))
    assert [p.info.run_id for p in parents] == [parent_id], "a second parent run"
    parent = client.get_run(parent_id)
    assert parent.data.tags[schema.TAG_RESUME_COUNT] == "0" and parent.data.tags["sevlm.extra"] == "x"
    assert parent.data.params == {"sweep.num_trials": "8"}
    assert {a.path for a in client.list_artifacts(parent_id, "sweep")} == {schema.ARTIFACT_SWEEP_SPEC}
    assert (tmp_path / "sweep" / "mlflow_queue.jsonl").read_text() == ""

    # the server is gone once the reads answered: the sweep cannot start, and says so; the
    # creation waits in the journal
    class CreateRefused(Outage):
        def __getattr__(self, name):
            return super().__getattr__(name) if name == "create_run" else getattr(self.client, name)

    down = SweepTracking(uri, "e", "other", "alpha_search", str(tmp_path / "other"), client=CreateRefused(client))
    with pytest.raises(RuntimeError, match="did not create the parent run of sweep other"):
        down.open_parent_run(**opening, drain_s=0.5)
    assert '"op": "create_run"' in (tmp_path / "other" / "mlflow_queue.jsonl").read_text()
    assert not client.search_runs([exp_id], filter_string=schema.search_filter_parent("other"))
