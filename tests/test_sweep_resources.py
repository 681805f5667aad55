"""What each trial gets, without a real cluster: resources from the nodes' (fake) resources,
GPU trials sharing a node's CPUs, waiting for the expected workers, the lean Ray Train
trainer."""

from __future__ import annotations

import pytest

from sweeps import SweepError
from trainables.settings import TrialSettings


# ---------------------------------------------------------------------- resources


def test_resources_fill_the_cluster_and_refuse_the_impossible():
    from sweeps.resources import cluster_capacity, decide_resources

    two_cpus = {"CPU": 2.0}
    r = decide_resources(two_cpus, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker) == (False, 2, 0.9)
    r = decide_resources(two_cpus, gpu=None, cpus_per_trial=None, concurrency=1, total_trials=8)
    assert (r.concurrency, r.cpus_per_worker) == (1, 1.9)  # one trial gets both cores
    r = decide_resources({"CPU": 16.0}, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=3)
    assert r.concurrency == 3  # never more than there are trials
    gpus = {"CPU": 8.0, "GPU": 2.0}
    r = decide_resources(gpus, gpu="auto", cpus_per_trial=None, concurrency=None, total_trials=8)
    # by default a GPU trial gets its node's CPUs per GPU (4), less the trial function's 0.1
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker, r.describe()) == (True, 2, 3.9, "one GPU and 4 CPU")
    assert decide_resources(gpus, gpu="off", cpus_per_trial=None, concurrency=None, total_trials=8).concurrency == 8
    assert cluster_capacity([gpus], True, 5.0) == 1  # 2 GPUs, but CPUs for one trial only
    for kwargs, message in [
        (dict(gpu="on"), "no GPU"),
        (dict(concurrency=3), "more than the cluster can run"),
        (dict(cpus_per_trial=1.5, concurrency=2), "more than the cluster can run"),
    ]:
        with pytest.raises(SweepError, match=message):
            decide_resources(two_cpus, **{"gpu": None, "cpus_per_trial": None, "concurrency": None,
                                          "total_trials": 8, **kwargs})
    with pytest.raises(SweepError, match="at least 1"):
        decide_resources({"CPU": 0.5}, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=1)

def test_a_trial_starts_none_of_the_ray_train_actors_it_does_not_use(tmp_path, monkeypatch):
    import os

    from trainables.trial import TRAIN_ENV, build_trainer

    for key in TRAIN_ENV:  # absent again after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    trainer = build_trainer({}, TrialSettings(sweep_name="s", storage_path=str(tmp_path)), "s_t0", in_tune=False)
    names = {type(cb).__name__ for cb in trainer._create_default_callbacks()}
    # no Ray Datasets manager, no placement-group cleaner (an actor each), no metrics callbacks
    assert not names & {"DatasetsCallback", "PlacementGroupCleanerCallback", "ControllerMetricsCallback",
                        "WorkerMetricsCallback"}, names
    assert "BackendSetupCallback" in names
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"  # propagated to the controller


def test_gpu_trials_share_each_gpu_nodes_cpus_and_can_pack_two_per_gpu():
    from sweeps.resources import decide_resources

    head = {"CPU": 0.0, "node:__internal_head__": 1.0}
    workers = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 6.0, "GPU": 1.0}]
    r = decide_resources([head, *workers], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    # the smaller node's share (6 CPUs for its one GPU) for every trial; one trial per GPU
    assert (r.use_gpu, r.concurrency, r.cpus_per_worker, r.gpus_per_worker) == (True, 2, 5.9, 1.0)
    r = decide_resources([head, *workers], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8,
                         gpus_per_trial=0.5)
    assert (r.concurrency, r.cpus_per_worker, r.gpus_per_worker) == (4, 2.9, 0.5)
    assert r.describe() == "0.5 of a GPU and 3 CPU"
    assert "2 GPU(s) on 2 node(s)" in r.reason
    # CPUs are counted per node: two 3-CPU trials do not fit on a 5-CPU node beside its GPUs
    with pytest.raises(SweepError, match="more than the cluster can run"):
        decide_resources([{"CPU": 5.0, "GPU": 2.0}], gpu=None, cpus_per_trial=3.0, concurrency=2, total_trials=8)
    with pytest.raises(SweepError, match="gpus-per-trial"):
        decide_resources(workers, gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8, gpus_per_trial=2)
    cpu_only = decide_resources([head, {"CPU": 4.0}], gpu=None, cpus_per_trial=None, concurrency=None, total_trials=8)
    assert (cpu_only.use_gpu, cpu_only.concurrency) == (False, 4) and "no GPU" in cpu_only.reason


def test_a_cluster_sweep_waits_for_the_expected_workers_and_says_so(tmp_path):
    import io

    from sweeps.cluster_wait import Expected, expected_workers, wait_for_cluster

    head = {"Alive": True, "Resources": {"CPU": 0.0, "node:__internal_head__": 1.0}}
    worker = {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}
    joined = iter([[head]] * 12 + [[head, worker]])
    now = [0.0]
    out = io.StringIO()
    nodes = wait_for_cluster(Expected(1, "--wait-for-nodes 1"), need_gpu=False, timeout_s=60, out=out,
                             list_nodes=lambda: next(joined), clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert nodes == [head["Resources"], worker["Resources"]]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("waiting for the cluster (0 of 60 s): it has 0 worker node(s)")
    assert "1 more worker node(s) (--wait-for-nodes 1)" in lines[0]
    assert len(lines) == 3 and lines[-1].startswith("cluster ready after 12 s: 1 worker node(s) with 4 CPUs and 1 GPUs")
    # never decides on part of the cluster: a clear error at the time limit
    with pytest.raises(SweepError, match="not ready after 5 s.*1 more worker node"):
        wait_for_cluster(Expected(1, "x"), need_gpu=False, timeout_s=5, out=io.StringIO(),
                         list_nodes=lambda: [head], clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(SweepError, match="a GPU"):
        wait_for_cluster(Expected(0, "x"), need_gpu=True, timeout_s=3, out=io.StringIO(),
                         list_nodes=lambda: [head], clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    # the default: what ray up started the cluster with (the head's launcher config)
    config = tmp_path / "ray_bootstrap_config.yaml"
    assert expected_workers(None, str(config)).workers == 0
    config.write_text("min_workers: 1\nprovider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3]}\n")
    assert expected_workers(None, str(config)).workers == 2
    assert expected_workers(3, str(config)) == Expected(3, "--wait-for-nodes 3")
