"""Waiting for a cluster's nodes before deciding what the trials get.

``ray up`` returns once the head is set up; the launcher starts the workers after that
(ray-project/ray#26499). A sweep submitted at once would see the head alone, decide "CPU
trials" and run on the wrong hardware. So a sweep that joins a cluster (``--address``) first
waits for the worker nodes it expects: ``--wait-for-nodes N``, by default the launcher's own
``min_workers`` from the head's ``~/ray_bootstrap_config.yaml`` (what ``ray up`` started the
cluster with; 0 on a cluster started by hand). With ``--gpu on`` it also waits for a GPU.
A line every few seconds says what it has and what it waits for; at ``--wait-timeout``
it stops with an error rather than decide on part of the cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sweeps import SweepError

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written by `ray up` on the head
HEAD_RESOURCE = "node:__internal_head__"
PRINT_EVERY_S = 10.0


@dataclass(frozen=True)
class Expected:
    workers: int
    why: str


def expected_workers(flag: int | None, bootstrap: str = BOOTSTRAP_CONFIG) -> Expected:
    if flag is not None:
        return Expected(flag, f"--wait-for-nodes {flag}")
    path = Path(os.path.expanduser(bootstrap))
    if not path.is_file():
        return Expected(0, "no --wait-for-nodes and no ray up launcher config on this machine")
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
        workers = int(config.get("min_workers") or 0)
        listed = (config.get("provider") or {}).get("worker_ips")
        if listed:  # the local provider starts exactly its listed machines
            workers = max(workers, len(listed))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SweepError(f"cannot read the cluster launcher's config {path}: {exc}; pass --wait-for-nodes N") from None
    return Expected(workers, f"{path}: min_workers {workers}")


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _summary(nodes: list[dict]) -> str:
    workers = [n for n in nodes if HEAD_RESOURCE not in n.get("Resources", {})]
    cpus = sum(n["Resources"].get("CPU", 0.0) for n in workers)
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in workers)
    return f"{len(workers)} worker node(s) with {cpus:g} CPUs and {gpus:g} GPUs"


def wait_for_cluster(expected: Expected, *, need_gpu: bool, timeout_s: float, out,
                     list_nodes: Callable[[], list[dict]] = alive_nodes, clock=time.monotonic,
                     sleep=time.sleep) -> list[dict]:
    """The alive nodes' resources (a dict per node) once ``expected.workers`` worker nodes
    (and, if ``need_gpu``, a GPU) have joined; SweepError at ``timeout_s``."""
    start = clock()
    last_print = None
    while True:
        nodes = list_nodes()
        workers = [n for n in nodes if HEAD_RESOURCE not in n.get("Resources", {})]
        has_gpu = any(n["Resources"].get("GPU", 0.0) > 0 for n in nodes)
        if len(workers) >= expected.workers and (has_gpu or not need_gpu):
            if last_print is not None:
                print(f"cluster ready after {clock() - start:.0f} s: {_summary(nodes)}", file=out, flush=True)
            return [dict(n["Resources"]) for n in nodes]
        waited = clock() - start
        missing = []
        if len(workers) < expected.workers:
            missing.append(f"{expected.workers - len(workers)} more worker node(s) ({expected.why})")
        if need_gpu and not has_gpu:
            missing.append("a GPU (--gpu on)")
        if waited >= timeout_s:
            raise SweepError(f"the cluster is not ready after {timeout_s:g} s: it has {_summary(nodes)}; still "
                             f"missing {' and '.join(missing)}. Check `ray status` and the workers' set-up "
                             "(`ray up` logs), or change --wait-for-nodes / --wait-timeout")
        if last_print is None or clock() - last_print >= PRINT_EVERY_S:
            print(f"waiting for the cluster ({waited:.0f} of {timeout_s:g} s): it has {_summary(nodes)}; "
                  f"waiting for {' and '.join(missing)}", file=out, flush=True)
            last_print = clock()
        sleep(1.0)
