"""cluster.yaml and the scripts its commands run: what `ray up` accepts, the head's MLflow
command run the way Ray runs it (a real server on loopback, stopped by its pidfile), a
node's set-up on a machine that lacks things, and the documented sweep command.

The full two-node `ray up` / `ray exec` / `ray down` rehearsal is
tests/test_cluster_rehearsal.py (`make cluster-rehearsal` runs it alone).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
SCRIPTS = REPO / "scripts"


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


def test_every_value_to_fill_in_is_marked_and_the_key_is_set():
    text = CLUSTER.read_text()
    for key in ("head_ip:", "worker_ips:", "ssh_user:", "ssh_private_key:"):
        line = next(line for line in text.splitlines() if line.strip().startswith(key))
        preceding = text[:text.index(line)].splitlines()[-1]
        assert "EDIT" in line or "EDIT" in preceding, f"{key} is not marked EDIT"
    assert load()["auth"].get("ssh_private_key"), "the head cannot reach the workers without a key"


# ------------------------------------------------------------ the head's MLflow server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str, host_header: str | None = None) -> int | None:
    request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _other_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _as_ray_runs(command: str, home: Path, env: dict[str, str], timeout: float = 180):
    # ray's command runner: `bash --login -c -i '<command>'` over ssh, in the user's home.
    return subprocess.run(["bash", "--login", "-c", "-i", command], cwd=home, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_head_mlflow_command_as_ray_runs_it_serves_on_loopback_and_stops_by_pid(tmp_path):
    command = next(c for c in load()["head_start_ray_commands"] if "mlflow_server.sh" in c)
    assert "pkill" not in command
    home = tmp_path / "home"
    home.mkdir()
    (home / "sevlm-sweeps").symlink_to(REPO)  # where file_mounts puts the project
    port = _free_port()
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "SEVLM_MLFLOW_PORT": str(port),
           "LANG": "C.UTF-8"}
    state = home / "sevlm-mlflow"
    pid = None
    try:
        done = _as_ray_runs(command, home, env)
        assert done.returncode == 0, done.stdout + done.stderr
        pid = int((state / "mlflow.pid").read_text())
        url = f"http://127.0.0.1:{port}"
        assert _status(f"{url}/health") == 200
        # DNS-rebinding protection on (/health is exempt from it): a Host header outside the
        # allowed list is refused, a browser behind an ssh tunnel on another port is not
        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _status(api, host_header=f"attacker.example:{port}") == 403
        assert _status(api, host_header=f"localhost:{port + 1}") == 200
        assert _status(api) == 200
        other = _other_address()
        if other:
            assert _status(f"http://{other}:{port}/health") is None, "MLflow answers off loopback"
        assert (state / "mlflow.db").is_file()

        # `start` is idempotent: a running server is left alone, not started twice
        again = subprocess.run([str(SCRIPTS / "mlflow_server.sh"), "start"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        assert int((state / "mlflow.pid").read_text()) == pid

        stop = subprocess.run([str(SCRIPTS / "mlflow_server.sh"), "stop"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
        assert _status(f"{url}/health") is None
        assert not (state / "mlflow.pid").exists()
        # and nothing of its process group is left (the uvicorn worker)
        group = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
        assert group.stdout.strip() == "", group.stdout
    finally:
        if pid is not None and _alive(pid):
            os.killpg(pid, 9)


def test_mlflow_server_script_refuses_a_public_address(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SEVLM_MLFLOW_HOST": "0.0.0.0"}
    done = subprocess.run([str(SCRIPTS / "mlflow_server.sh"), "start"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "0.0.0.0" in done.stderr
    assert not (tmp_path / "sevlm-mlflow" / "mlflow.pid").exists()


# ------------------------------------------------------------------ a node's set-up


def _stub(folder: Path, name: str, body: str = "") -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\necho {name} \"$@\" >> {folder}/calls\n{body}\n")
    path.chmod(0o755)


# apt-get "installs" a package by putting a recording stub of its command on PATH.
APT_BODY = """[ "$1" = install ] || exit 0
for p in "$@"; do
  case "$p" in make|python3.11|tmux) n=$p;; default-jre-headless) n=java;; *) continue;; esac
  printf '#!/bin/bash\\necho %s "$@" >> %s/calls\\n' "$n" "$(dirname "$0")" > "$(dirname "$0")/$n"
  chmod +x "$(dirname "$0")/$n"
done"""


def _setup_node(tmp_path: Path, tools: list[str]) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    """scripts/node_setup.sh on a PATH of stubs: `tools` are present; apt-get, sudo and the
    tools only record their calls (apt-get adds the tools it installs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for real in ("bash", "grep", "id", "dirname", "chmod"):
        if not (bin_dir / real).exists():
            (bin_dir / real).symlink_to(shutil.which(real))
    for name in tools:
        _stub(bin_dir, name)
    _stub(bin_dir, "apt-get", APT_BODY)
    _stub(bin_dir, "sudo", '[ "$1" = -n ] && shift; exec "$@"')
    (bin_dir / "calls").unlink(missing_ok=True)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": str(bin_dir)}
    done = subprocess.run([str(bin_dir / "bash"), str(SCRIPTS / "node_setup.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    calls = (bin_dir / "calls").read_text().splitlines() if (bin_dir / "calls").exists() else []
    return done, calls, home


def test_node_setup_installs_what_is_missing_and_is_idempotent(tmp_path):
    done, calls, home = _setup_node(tmp_path, tools=["python3.11"])  # no make, java or tmux
    assert done.returncode == 0, done.stderr
    install = [c.split() for c in calls if c.startswith("apt-get install")]
    assert len(install) == 1 and {"make", "default-jre-headless", "tmux"} <= set(install[0]), calls
    assert "python3.11" not in install[0]
    assert calls[-1] == f"make -C {REPO} install PYTHON=python3.11", calls  # the README's install
    profile = (home / ".profile").read_text()
    assert profile.count(f"{REPO}/scripts/bin") == 1

    done, calls, home = _setup_node(tmp_path, tools=[])  # a second run: all there now
    assert done.returncode == 0, done.stderr
    assert not [c for c in calls if c.startswith(("apt-get", "sudo"))], calls
    assert calls[-1] == f"make -C {REPO} install PYTHON=python3.11"
    assert (home / ".profile").read_text() == profile  # the PATH line once


def test_node_setup_refuses_a_copy_that_is_not_the_project(tmp_path):
    copy = tmp_path / "elsewhere" / "scripts"
    copy.mkdir(parents=True)
    shutil.copy(SCRIPTS / "node_setup.sh", copy)
    done = subprocess.run(["bash", str(copy / "node_setup.sh")], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
    assert done.returncode != 0 and "from the project's folder" in done.stderr


def test_ray_down_stops_the_workers_from_the_head(tmp_path):
    # `ray stop` on the head (what `ray down` runs) reaches each worker with the key and
    # user that `ray up` wrote into the head's bootstrap config.
    sys.path.insert(0, str(SCRIPTS))
    try:
        import stop_workers
    finally:
        sys.path.remove(str(SCRIPTS))
    config = {"auth": {"ssh_user": "ubuntu", "ssh_private_key": "~/ray_bootstrap_key.pem"},
              "provider": {"worker_ips": ["10.0.0.2"]}}
    cmd = stop_workers.stop_command(config, "10.0.0.2")
    assert cmd[0] == "ssh" and "ubuntu@10.0.0.2" in cmd
    assert cmd[cmd.index("-i") + 1] == os.path.expanduser("~/ray_bootstrap_key.pem")
    assert cmd[-1] == "bash --login -c 'ray stop'"
    shim = (SCRIPTS / "bin" / "ray").read_text()
    assert "mlflow_server.sh\" stop" in shim and "stop_workers.py" in shim
    # cluster.yaml's own start commands bypass the shim (ray up must not stop the workers)
    config = load()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert not re.match(r"^\s*ray\s", command), command


# ------------------------------------------------------------ the documented commands


def _documented_commands(text: str) -> list[str]:
    found = [c for c in re.findall(r"ray exec cluster\.yaml (?:--tmux )?'(.*?)'", text, re.S) if "sweeps/" in c]
    return [" ".join(line.strip().lstrip("#").strip().rstrip("\\") for line in c.splitlines()) for c in found]


@pytest.mark.parametrize("source", ["cluster.yaml", "README.md"])
def test_documented_sweep_commands_parse_and_fit_the_shipped_cluster(source):
    from sweeps.ablations import SWEEP as ABLATIONS
    from sweeps.alpha_search import SWEEP as ALPHA

    commands = _documented_commands((REPO / source).read_text())
    assert commands, f"{source} documents no `ray exec cluster.yaml` sweep command"
    workers = len(load()["provider"]["worker_ips"])
    for command in commands:
        script = "alpha_search" if "sweeps/alpha_search.py" in command else "ablations"
        sweep = ALPHA if script == "alpha_search" else ABLATIONS
        argv = shlex.split(command.split(f"sweeps/{script}.py", 1)[1])
        argv = [a for a in argv if a != "..."]
        parser = sweep.parser()
        parser.allow_abbrev = False
        parser.error = lambda message: (_ for _ in ()).throw(AssertionError(f"{source}: {message}"))
        args = parser.parse_args(argv)
        assert args.address == "auto"
        assert args.storage and args.storage.startswith("/shared/"), "multi-node needs shared --storage"
        assert args.tracking_uri == "http://127.0.0.1:5000", "the driver runs on the head, MLflow on its loopback"
        assert args.concurrency is None or args.concurrency <= workers, "more trials than worker GPUs"
