"""cluster.yaml: what `ray up` accepts, the MLflow server on the head, and a documented sweep
command that parses (no machines are started)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_accepts_the_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does with the file before it contacts any node.
    config = prepare_config(load())
    validate_config(config)
    assert config["provider"]["type"] == "local"
    workers = config["provider"]["worker_ips"]
    node_type = config["available_node_types"][config["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(workers)


def test_head_serves_mlflow_and_trains_nothing_workers_offer_one_gpu():
    config = load()
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--num-gpus=0" in head
    assert "mlflow server" in head and "--port 5000" in head and "--backend-store-uri sqlite:///" in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--num-gpus=1" in workers and "$RAY_HEAD_IP:6379" in workers
    assert any("make install" in c for c in config["setup_commands"])


def test_documented_sweep_command_parses():
    from sweeps.alpha_search import SWEEP

    found = re.search(r"ray exec cluster\.yaml '(.*?)'", CLUSTER.read_text(), re.S)
    assert found, "cluster.yaml documents no `ray exec` sweep command"
    command = " ".join(line.strip().lstrip("#").strip().rstrip("\\") for line in found.group(1).splitlines())
    argv = shlex.split(command.split("sweeps/alpha_search.py", 1)[1])
    parser = SWEEP.parser()
    parser.allow_abbrev = False
    parser.error = lambda message: (_ for _ in ()).throw(AssertionError(message))  # no SystemExit
    args = parser.parse_args(argv)
    assert args.address == "auto" and args.preset == "paper"
    assert args.tracking_uri.startswith("http://") and args.tracking_uri.endswith(":5000")
    assert args.storage.startswith("/shared/")
