"""What a killed driver's local Ray left running is stopped by the next driver of the same
sweep (sweeps/leftovers.py), and nothing else: processes are told apart by the Ray session
named in their command line. Stand-ins play the Ray processes (a real SIGKILL of a driver
is in test_cluster_driver_signals.py, where Ray usually cleans up after itself)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from sweeps import leftovers


def _process(title: str) -> subprocess.Popen:
    # a process whose command line names a session, as raylet's and gcs_server's do
    return subprocess.Popen(["bash", "-c", f'exec -a "{title}" sleep 300'])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_dead_drivers_session_is_stopped_and_only_it(tmp_path):
    ours = [_process("raylet --session-dir=/tmp/ray/session_test_0_dead")]
    ours.append(_process("gcs_server --session-name=session_test_0_dead"))
    other = _process("raylet --session-dir=/tmp/ray/session_test_1_alive")
    try:
        time.sleep(0.3)
        (tmp_path / leftovers.DRIVER_FILE).write_text(json.dumps(
            {"pid": _dead_pid(), "host": socket.gethostname(), "session": "session_test_0_dead"}))
        stopped = leftovers.stop_leftovers(str(tmp_path), grace_s=5)
        assert sorted(stopped) == sorted(p.pid for p in ours)
        for proc in ours:
            assert proc.wait(timeout=10) is not None
        assert other.poll() is None, "a process of another Ray session was stopped"
        assert not (tmp_path / leftovers.DRIVER_FILE).exists()
    finally:
        for proc in ours + [other]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_live_driver_or_another_machine_is_left_alone(tmp_path):
    proc = _process("raylet --session-dir=/tmp/ray/session_test_2_live")
    try:
        for record in ({"pid": os.getpid(), "host": socket.gethostname()},  # alive
                       {"pid": _dead_pid(), "host": "another-machine"}):
            (tmp_path / leftovers.DRIVER_FILE).write_text(json.dumps({**record, "session": "session_test_2_live"}))
            assert leftovers.stop_leftovers(str(tmp_path), grace_s=1) == []
            assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
