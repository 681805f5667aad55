"""What a killed sweep driver left running on this machine, found and stopped by the next
driver of the same sweep (``--resume``).

A driver that starts its own local Ray records, next to Tune's state, its process id, the
machine and the Ray session it started. A driver killed with SIGKILL cannot stop that
Ray: its GCS, raylet, agents and trial workers go on (holding CPUs, GPUs and memory, and
writing checkpoints of trials the next driver resumes). Every process of one Ray session
carries the session's unique name in its command line, so exactly those are stopped, and
nothing of any other Ray on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

DRIVER_FILE = "sevlm_driver.json"


def record_driver(experiment_dir: str, session_dir: str) -> None:
    """Called by a driver that started a local Ray for the sweep."""
    if "://" in experiment_dir:
        return
    path = Path(experiment_dir) / DRIVER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "session": Path(session_dir).name}))


def session_processes(session: str) -> list[int]:
    """Processes whose command line names the Ray session ``session``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session in cmdline:
            found.append(int(proc.name))
    return found


def stop_leftovers(experiment_dir: str, grace_s: float = 10.0) -> list[int]:
    """Stop the Ray processes of a dead driver of this sweep on this machine; returns
    their ids (none if the driver is alive, ran elsewhere, or started no Ray)."""
    path = Path(experiment_dir) / DRIVER_FILE
    if "://" in experiment_dir or not path.is_file():
        return []
    record = json.loads(path.read_text())
    if record.get("host") != socket.gethostname() or _alive(record["pid"]) or not record.get("session"):
        return []
    pids = session_processes(record["session"])
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
