"""The two-node cluster rehearsal (scripts/cluster_rehearsal.sh, `make cluster-rehearsal`):
the real `ray up cluster.yaml` with a head and a worker in namespaces of their own, sweeps
on them, `ray down`. It prints what it checked; it runs last in the suite (conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.timeout(1200)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root: network, mount and process namespaces, ssh servers")
def test_two_node_cluster_rehearsal_passes():
    done = subprocess.run(["bash", str(REPO / "scripts" / "cluster_rehearsal.sh")], capture_output=True,
                          text=True, timeout=1100)
    print(done.stdout[-20000:], done.stderr[-5000:])
    assert done.returncode == 0 and done.stdout.rstrip().endswith("REHEARSAL PASSED"), done.stdout[-6000:]
    for shown in ("the sweep waited for the worker", "none on the head", "built once, in the shared folder only",
                  "mode 600", "ray start (no token): refused", "advertises a GPU to Ray", "lacks what the trial reads",
                  "Job 'raysubmit_", "worker: no Ray, MLflow or sshd process left"):
        assert shown in done.stdout, shown
