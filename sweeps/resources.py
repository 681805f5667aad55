"""What each trial gets and how many run at once, from what the cluster has.

A trial is a Tune function (``TRIAL_FN_CPUS``, it only waits) plus one Ray Train worker:
a GPU (or ``--gpus-per-trial`` of one) and CPUs on a GPU cluster, else CPUs. Decided twice:
before Ray starts, from what a local ``ray.init()`` would see (so that a bad flag fails at
once), and again from the nodes Ray reports (``sweeps.cluster_wait`` first waits for them
on a cluster).

CPUs of a GPU trial: by default each GPU node's CPUs shared among the trials its GPUs
hold (the smallest such share over the GPU nodes), so that evaluation and data loading do
not run on one thread while the node's other cores idle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from sweeps import SweepError
from trainables.trial import TRIAL_FN_CPUS

EPS = 1e-9


@dataclass(frozen=True)
class TrialResources:
    use_gpu: bool
    cpus_per_worker: float  # CPUs of the training worker
    concurrency: int
    gpus_per_worker: float = 1.0  # of a GPU trial
    reason: str = ""  # why GPU or CPU trials, for the sweep's first lines

    def describe(self) -> str:
        cpus = f"{self.cpus_per_worker + TRIAL_FN_CPUS:g} CPU"
        if not self.use_gpu:
            return cpus
        gpu = "one GPU" if self.gpus_per_worker == 1 else f"{self.gpus_per_worker:g} of a GPU"
        return f"{gpu} and {cpus}"


def _fits(total: float, each: float) -> int:
    return int((total + EPS) // each) if each > 0 else 0


def gpu_trials_per_node(node: dict[str, float], gpus_per_trial: float, cpus_per_trial: float) -> int:
    return min(_fits(node.get("GPU", 0.0), gpus_per_trial),
               _fits(node.get("CPU", 0.0), cpus_per_trial) if cpus_per_trial else 10**9)


def cluster_capacity(nodes: Sequence[dict[str, float]], use_gpu: bool, cpus_per_trial: float,
                     gpus_per_trial: float = 1.0) -> int:
    """How many trials fit at once (a trial's CPUs and GPU on one node)."""
    if use_gpu:
        return sum(gpu_trials_per_node(n, gpus_per_trial, cpus_per_trial) for n in nodes)
    return sum(_fits(n.get("CPU", 0.0), cpus_per_trial) for n in nodes)


def default_gpu_trial_cpus(nodes: Sequence[dict[str, float]], gpus_per_trial: float) -> float:
    """The CPUs a GPU node can give each of the trials its GPUs hold (the smallest share
    over the GPU nodes, whole CPUs); at least the trial function's own."""
    shares = [n.get("CPU", 0.0) / _fits(n["GPU"], gpus_per_trial)
              for n in nodes if _fits(n.get("GPU", 0.0), gpus_per_trial) >= 1]
    if not shares:
        return TRIAL_FN_CPUS
    return max(TRIAL_FN_CPUS, float(math.floor(min(shares) + EPS)))


def local_resources(gpu: str | None) -> dict[str, float]:
    """What a local ``ray.init()`` would detect."""
    res = {"CPU": float(os.cpu_count() or 1)}
    if gpu != "off":
        try:
            import torch

            if torch.cuda.is_available():
                res["GPU"] = float(torch.cuda.device_count())
        except Exception:  # noqa: BLE001
            pass
    return res


def decide_resources(
    nodes: dict[str, float] | Sequence[dict[str, float]],
    *,
    gpu: str | None,
    cpus_per_trial: float | None,
    concurrency: int | None,
    total_trials: int,
    gpus_per_trial: float | None = None,
) -> TrialResources:
    """GPU or CPU trials, CPUs per worker and concurrency (by default as many trials as the
    cluster fits, never more than there are), from the nodes' resources (one dict: a single
    machine); raises SweepError if the cluster cannot run what the flags ask for."""
    nodes = [nodes] if isinstance(nodes, dict) else list(nodes)
    gpu = gpu or "auto"
    gpus_per_trial = gpus_per_trial or 1.0
    if not 0 < gpus_per_trial <= 1:
        raise SweepError(f"--gpus-per-trial must be in (0, 1] (got {gpus_per_trial:g})")
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    cpus = sum(n.get("CPU", 0.0) for n in nodes)
    gpu_nodes = sum(1 for n in nodes if n.get("GPU", 0.0) >= gpus_per_trial - EPS)
    has_gpu = gpu_nodes > 0
    if gpu == "on" and not has_gpu:
        raise SweepError("--gpu on, but the cluster has no GPU")
    use_gpu = has_gpu if gpu == "auto" else gpu == "on"
    if use_gpu:
        reason = (f"GPU trials: the cluster has {gpus:g} GPU(s) on {gpu_nodes} node(s)"
                  + (" (--gpu on)" if gpu == "on" else ""))
    elif gpu == "off":
        reason = "CPU trials: --gpu off"
    else:
        reason = f"CPU trials: the cluster has no GPU ({len(nodes)} node(s), {cpus:g} CPUs)"
    if not use_gpu and cpus < 1:
        raise SweepError(f"the cluster has {cpus:g} CPUs; a CPU trial needs at least 1")

    if use_gpu:
        per_trial = cpus_per_trial or default_gpu_trial_cpus(nodes, gpus_per_trial)
        capacity = cluster_capacity(nodes, True, per_trial, gpus_per_trial)
        wanted = concurrency or max(1, min(capacity, total_trials))
    else:
        wanted = concurrency
        if wanted is None:
            wanted = max(1, min(cluster_capacity(nodes, False, cpus_per_trial or 1.0), total_trials))
        per_trial = cpus_per_trial or max(1.0, math.floor(cpus / wanted))
        capacity = cluster_capacity(nodes, False, per_trial)
    if wanted > capacity:
        what = (f"{gpus:g} GPU(s), {gpus_per_trial:g} and {per_trial:g} CPUs per trial" if use_gpu
                else f"{cpus:g} CPUs, {per_trial:g} per trial")
        raise SweepError(f"--concurrency {wanted} is more than the cluster can run at once ({capacity}: {what})")
    return TrialResources(
        use_gpu=use_gpu,
        cpus_per_worker=round(max(per_trial - TRIAL_FN_CPUS, 0.0), 3),
        concurrency=min(wanted, total_trials),
        gpus_per_worker=gpus_per_trial if use_gpu else 0.0,
        reason=reason,
    )
