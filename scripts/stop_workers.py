"""Stop Ray on every worker of a `ray up` cluster, from its head (``scripts/bin/ray stop``).

``ray down`` on a local-provider cluster runs ``ray stop`` on the head only; the workers'
raylets would linger until they notice the head is gone. The head knows the workers, the
ssh user and the key from the config ``ray up`` left there (``~/ray_bootstrap_config.yaml``).

    python scripts/stop_workers.py ~/ray_bootstrap_config.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def stop_command(config: dict, ip: str) -> list[str]:
    auth = config.get("auth", {})
    cmd = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    if auth.get("ssh_private_key"):
        cmd += ["-i", os.path.expanduser(auth["ssh_private_key"])]
    if auth.get("ssh_port"):
        cmd += ["-p", str(auth["ssh_port"])]
    # A login shell, as `ray up` runs commands: its PATH has this project's `ray`.
    return cmd + [f"{auth.get('ssh_user', os.environ.get('USER', 'root'))}@{ip}", "bash --login -c 'ray stop'"]


def main(path: str) -> int:
    with open(path) as f:
        config = json.load(f)  # ray up writes the bootstrap config as JSON
    workers = config.get("provider", {}).get("worker_ips") or []

    def stop(ip: str) -> tuple[str, int]:
        done = subprocess.run(stop_command(config, ip), capture_output=True, text=True, timeout=120)
        return ip, done.returncode

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(stop, workers))
    for ip, rc in results:
        print(f"worker {ip}: ray stop {'done' if rc == 0 else f'failed (exit {rc})'}")
    return 0 if all(rc == 0 for _, rc in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
