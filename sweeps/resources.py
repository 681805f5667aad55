"""What each trial gets and how many run at once, from what the cluster has.

A trial is a Tune function (``TRIAL_FN_CPUS``, it only waits) plus one Ray Train worker:
one GPU (and ``--cpus-per-trial`` CPUs if given) on a GPU cluster, else CPUs. Decided
twice: before Ray starts, from what a local ``ray.init()`` would see (so that a bad flag
fails at once), and again from the cluster Ray reports.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from sweeps import SweepError
from trainables.trial import TRIAL_FN_CPUS


@dataclass(frozen=True)
class TrialResources:
    use_gpu: bool
    cpus_per_worker: float  # CPUs of the training worker (0 on a GPU: Ray's default)
    concurrency: int

    def describe(self) -> str:
        return "one GPU" if self.use_gpu else f"{self.cpus_per_worker + TRIAL_FN_CPUS:g} CPU"


def cluster_capacity(resources: dict[str, float], use_gpu: bool, cpus_per_trial: float | None) -> int:
    """How many trials fit at once."""
    cpus = float(resources.get("CPU", 0))
    if use_gpu:
        gpus = int(resources.get("GPU", 0) + 1e-9)
        worker_cpus = (cpus_per_trial - TRIAL_FN_CPUS) if cpus_per_trial else 0.0
        by_cpu = int((cpus + 1e-9) // (TRIAL_FN_CPUS + worker_cpus)) if cpus else 0
        return min(gpus, by_cpu)
    return int((cpus + 1e-9) // (cpus_per_trial or 1.0))


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
    resources: dict[str, float],
    *,
    gpu: str | None,
    cpus_per_trial: float | None,
    concurrency: int | None,
    total_trials: int,
) -> TrialResources:
    """GPU or CPU trials, CPUs per worker and concurrency (by default as many trials as the
    cluster fits, never more than there are); raises SweepError if the cluster cannot run
    what the flags ask for."""
    gpu = gpu or "auto"
    has_gpu = resources.get("GPU", 0) >= 1
    if gpu == "on" and not has_gpu:
        raise SweepError("--gpu on, but the cluster has no GPU")
    use_gpu = has_gpu if gpu == "auto" else gpu == "on"
    cpus = float(resources.get("CPU", 0))
    if not use_gpu and cpus < 1:
        raise SweepError(f"the cluster has {cpus:g} CPUs; a CPU trial needs at least 1")
    wanted = concurrency
    if wanted is None:
        fits = cluster_capacity(resources, use_gpu, cpus_per_trial or (None if use_gpu else 1.0))
        wanted = max(1, min(fits, total_trials))
    if use_gpu:
        per_trial = cpus_per_trial or 0.0
    else:
        per_trial = cpus_per_trial or max(1.0, math.floor(cpus / wanted))
    capacity = cluster_capacity(resources, use_gpu, per_trial or None)
    if wanted > capacity:
        what = (f"{int(resources.get('GPU', 0))} GPU(s), one per trial" if use_gpu
                else f"{cpus:g} CPUs, {per_trial:g} per trial")
        raise SweepError(f"--concurrency {wanted} is more than the cluster can run at once ({capacity}: {what})")
    return TrialResources(
        use_gpu=use_gpu,
        cpus_per_worker=round(max(per_trial - TRIAL_FN_CPUS, 0.0), 3) if per_trial else 0.0,
        concurrency=min(wanted, total_trials),
    )
