"""What only a second node shows (issue "Two machines for real"), on real Ray clusters on
this machine:

* a sweep started before its GPU worker joins waits for it, then runs GPU trials; a trial
  whose node advertises a GPU that torch cannot use fails at once, once, naming the node;
* a path that the driver's machine has and the worker lacks (a worker node started in a
  mount namespace of its own, where the folder is hidden) fails that trial, naming the
  node and the path;
* the pieces: Ray Train's failure policy, the error's text through Ray's wrapping, the
  spec's cluster defaults (caches under --storage, scratch on the node's disk) and the
  shared folder's marker (scripts/shared_folder.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_sweep import _main, fast_flags, sweep_runs
from trainables import tracking_schema as schema
from trainables.node_checks import MARKER, NodeSetupError, check_paths, is_node_setup_failure, setup_message

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster_node_data")


@pytest.fixture(autouse=True)
def _isolated(sweep_in_tmp):
    yield


# ------------------------------------------------------------------------- the pieces
def test_ray_train_does_not_retry_a_node_set_up_failure_but_retries_the_rest():
    from ray.train import FailureConfig
    from ray.train.v2._internal.execution.failure_handling import FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    from trainables.node_checks import no_retry_failure_policy

    policy = no_retry_failure_policy(FailureConfig(max_failures=2))
    node_failure = WorkerGroupError("rank 0 failed", {0: NodeSetupError("node 10.0.0.2 (w): no CUDA")})
    assert policy.make_decision(node_failure) == FailureDecision.RAISE
    # any other worker failure is retried as before, up to max_failures
    transient = WorkerGroupError("rank 0 failed", {0: RuntimeError("connection reset")})
    assert [policy.make_decision(transient) for _ in range(3)] == [
        FailureDecision.RETRY, FailureDecision.RETRY, FailureDecision.RAISE]


def test_the_node_message_survives_rays_wrapping():
    error = NodeSetupError("node 10.0.0.2 (w) lacks what the trial reads:\n  data.image_dir = /x")
    wrapped = RuntimeError("Training failed due to worker errors:\n[Rank 0]\nTraceback (most recent call last):\n"
                           f"  File \"w.py\", line 1\n{type(error).__name__}: {error}\n")
    wrapped_again = RuntimeError(f"ray::Trial() (pid=1)\n{wrapped}")
    assert is_node_setup_failure(wrapped_again) and not is_node_setup_failure(RuntimeError("other"))
    assert setup_message(error) == "node 10.0.0.2 (w) lacks what the trial reads:\n  data.image_dir = /x"
    assert MARKER not in setup_message(wrapped_again)
    assert setup_message(wrapped_again).startswith("node 10.0.0.2 (w) lacks what the trial reads:")


def test_missing_paths_are_named_with_their_key(tmp_path):
    present = tmp_path / "here.csv"
    present.write_text("x")
    check_paths({"data.artemis_csv": str(present)})
    with pytest.raises(NodeSetupError) as caught:
        check_paths({"data.artemis_csv": str(present), "data.image_dir": str(tmp_path / "wikiart"),
                     "--heldout": str(tmp_path / "emoset")})
    message = str(caught.value)
    assert f"data.image_dir = {tmp_path / 'wikiart'}" in message and f"--heldout = {tmp_path / 'emoset'}" in message
    assert "data.artemis_csv" not in message and "lacks what the trial reads" in message


def test_a_cluster_sweep_keeps_its_caches_under_storage_and_works_on_local_disk(tmp_path):
    from sweeps.alpha_search import SWEEP
    from sweeps.spec import build_spec

    def spec(*argv):
        args = SWEEP.parser().parse_args(list(argv))
        return build_spec(args, kind=SWEEP.kind, strategy_flags=SWEEP.strategy,
                          default_overrides=SWEEP.default_overrides, default_metric=SWEEP.default_metric,
                          cwd=tmp_path)

    storage = tmp_path / "shared" / "ray_results"
    cluster = spec("--address", "auto", "--storage", str(storage), "--set", "data.synthetic_dir=/elsewhere")
    assert cluster.overrides["data.feature_cache_dir"] == f"{storage}/cache/features"
    assert cluster.overrides["data.ea_classifier_dir"] == f"{storage}/cache/ea_classifier"
    assert cluster.overrides["data.synthetic_dir"] == "/elsewhere"  # what the user set wins
    settings = cluster.trial_settings
    assert settings.local_scratch and not settings.outputs_path.startswith(str(storage))
    local = spec("--storage", str(storage))
    assert local.overrides["data.feature_cache_dir"] == str(tmp_path / ".cache" / "features")  # as before
    assert not local.trial_settings.local_scratch
    assert local.trial_settings.outputs_path == f"{storage}/{local.name}/outputs"


def test_the_shared_folder_check_fails_clearly_when_the_folder_is_not_mounted(tmp_path):
    script = REPO / "scripts" / "shared_folder.sh"
    head, worker = tmp_path / "head", tmp_path / "worker"
    for home in (head, worker):
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text("a" * 32)

    def run(home, *args):
        return subprocess.run(["bash", str(script), *args], env={**os.environ, "HOME": str(home)},
                              capture_output=True, text=True)

    shared = tmp_path / "shared" / "sevlm"
    assert run(head, "mark", str(shared)).returncode == 0
    assert run(worker, "check", str(shared)).returncode == 0
    unmounted = run(worker, "check", str(tmp_path / "not-mounted" / "sevlm"))
    assert unmounted.returncode == 1 and "is not mounted on this node" in unmounted.stderr
    (worker / ".ray" / "auth_token").write_text("b" * 32)  # another cluster's token
    other = run(worker, "check", str(shared))
    assert other.returncode == 1 and "another cluster's marker" in other.stderr


# --------------------------------------------------------------------- real clusters
def _sweep_in_thread(argv: list[str], result: dict) -> threading.Thread:
    def run():
        result["rc"] = _main(argv)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_sweep_waits_for_its_gpu_worker_and_a_gpu_without_cuda_fails_once(tmp_path, data_dir, capsys):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    name = "no-cuda"
    result: dict = {}
    thread = _sweep_in_thread(["--address", cluster.address, "--storage", str(tmp_path / "ray_results"),
                               "--num-trials", "1", "--wait-for-nodes", "1", "--name", name,
                               "--worker-retries", "2", "--trial-retries", "1", "--progress-interval", "60"]
                              + fast_flags(data_dir), result)
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("waiting for the cluster" in text for text in printed) and time.monotonic() < deadline:
            time.sleep(0.5)
            printed.append(capsys.readouterr().out)
        assert thread.is_alive(), "".join(printed)  # the head alone has no GPU and no worker: it waits
        cluster.add_node(num_cpus=2, num_gpus=1)  # a GPU that this machine's torch cannot use
        thread.join(timeout=300)
        assert not thread.is_alive(), "the sweep did not end"
    finally:
        cluster.shutdown()
    out = "".join(printed) + capsys.readouterr().out
    assert result["rc"] == 1, out
    assert "waiting for the cluster (0 of 900 s): it has 0 worker node(s)" in out
    assert "1 more worker node(s) (--wait-for-nodes 1)" in out and "cluster ready after" in out
    assert "GPU trials: the cluster has 1 GPU(s) on 1 node(s)" in out
    _, parents, trials = sweep_runs(tmp_path / "mlflow.db", name)
    (run,) = trials
    error = run.data.tags[schema.TAG_ERROR]
    assert run.info.status == "FAILED"
    assert "advertises a GPU to Ray" in error and "cannot use CUDA" in error, error
    assert "node " in error and "Fix the node, or start its Ray with --num-gpus=0 (no GPU trials)" in error
    # Ray Train did not retry it (the failure policy's test above); Tune's retry raised the
    # recorded failure at once instead of training again on that node
    assert run.data.tags[schema.TAG_TRIAL_STARTS] == "2"
    assert "(recorded by this trial's first attempt: not retried)" in out
    assert schema.TAG_WORKER_STARTS not in run.data.tags  # no training worker ever reported


def _worker_without(hidden: Path, address: str) -> subprocess.Popen:
    """A Ray worker node in a mount namespace of its own, where ``hidden`` is an empty
    folder: what the driver has in it, this node does not."""
    ray = Path(sys.executable).with_name("ray")
    script = f"mount -t tmpfs tmpfs {hidden} && exec {ray} start --address={address} --num-cpus=2 --block"
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_a_path_only_the_driver_has_fails_the_trial_on_the_worker_naming_both(tmp_path, data_dir, capsys):
    from ray.cluster_utils import Cluster

    from sevlm.data.synthetic_emoset import generate_synthetic_emoset

    head_only = tmp_path / "on-the-head-only"
    emoset = head_only / "emoset"
    generate_synthetic_emoset(emoset, 2, 1)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head trains nothing
    worker = _worker_without(head_only, cluster.address)
    name = "head-only-path"
    try:
        rc = _main(["--address", cluster.address, "--storage", str(tmp_path / "ray_results"), "--gpu", "off",
                    "--num-trials", "1", "--wait-for-nodes", "1", "--name", name, "--progress-interval", "60",
                    "--heldout", f"emoset:{emoset}"] + fast_flags(data_dir))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        cluster.shutdown()
    out = capsys.readouterr().out
    assert rc == 1, out
    _, _, trials = sweep_runs(tmp_path / "mlflow.db", name)
    error = trials[0].data.tags[schema.TAG_ERROR]
    assert "lacks what the trial reads" in error and f"--heldout = {emoset}" in error, error
    assert "node " in error and "(the driver's machine has it)" in error


def test_the_node_error_keeps_one_marker_through_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(NodeSetupError("node x: no CUDA")))
    assert str(error) == f"{MARKER} node x: no CUDA"
