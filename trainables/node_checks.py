"""What a trial checks on the node that runs it, before it trains.

The sweep's driver checks paths and weights on its own machine; a cluster node may lack
what the driver has (a data folder that is not on the shared mount, a held-out set copied
to the head only, a GPU whose driver is missing). Retrying on that node cannot help, so
such a trial fails at once, once, with one message that names the node and the cause:
:class:`NodeSetupError`, which neither Ray Train (:class:`NoRetryOnNodeSetup`) nor Tune
(``trainables.trial.run_trial``) retries.

No torch at import: the Tune trial process and the Ray Train controller import this module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

# Marks the message of a NodeSetupError wherever Ray wraps it (a RayTaskError's text
# carries the original message; its class may not survive the trip between processes).
MARKER = "[sevlm node set-up]"
# Tests only: ray.cluster_utils.Cluster's fake GPU resources train on the CPU instead of
# failing the CUDA check (set where the test's Ray nodes start).
FAKE_GPUS_ENV = "SEVLM_FAKE_GPUS"


class NodeSetupError(RuntimeError):
    """This node cannot run the trial; retrying on it would fail the same way."""

    def __init__(self, message: str):
        # Unpickling (Ray sends the error between processes) calls this with the marked text.
        super().__init__(f"{MARKER} {message.removeprefix(MARKER).strip()}")


def node_label() -> str:
    """``<ip> (<hostname>)``: how every message names a node."""
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray (a unit test): the host name alone
        ip = "?"
    return f"{ip} ({socket.gethostname()})"


def is_node_setup_failure(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps: Ray Train's worker-group error, a Ray task
    error) is a NodeSetupError."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, NodeSetupError) or MARKER in str(err):
            return True
        stack.extend([getattr(err, "cause", None), err.__cause__, err.__context__])
        stack.extend(getattr(err, "worker_failures", {}).values())
    return False


def setup_message(error: BaseException) -> str:
    """The NodeSetupError's own message inside ``error``'s text (one line per problem)."""
    text = str(error)
    start = text.find(MARKER)
    if start < 0:
        return text
    lines = text[start + len(MARKER):].strip().splitlines()
    message = []
    for line in lines:  # up to the traceback Ray appends
        if line.startswith(("Traceback", "\tat ", "  File ")) or line.strip().startswith("ray.exceptions"):
            break
        message.append(line)
    return "\n".join(message).strip()


def error_summary(text: str, limit: int = 800) -> str:
    """A failed trial's error in a few words: a node set-up failure's whole message (node,
    cause, fix), else the last line of the error (Ray ends its traceback text with it)."""
    text = text.strip()
    if not text:
        return "error"
    summary = setup_message(text) if MARKER in text else text.splitlines()[-1]
    return summary[:limit]


def check_paths(paths: Mapping[str, str]) -> None:
    """Every path (by configuration key or flag) exists on this node."""
    missing = [f"{key} = {path}" for key, path in paths.items() if not Path(path).expanduser().exists()]
    if missing:
        raise NodeSetupError(
            f"node {node_label()} lacks what the trial reads (the driver's machine has it):\n  "
            + "\n  ".join(missing)
            + "\nPut it on the shared folder every node mounts (or copy it to every node) and resume the sweep.")


def check_cuda() -> dict[str, str]:
    """Ray gave this trial a GPU: torch must be able to use it. Returns the device torch
    will train on and the GPU's name, for the trial's MLflow run."""
    if os.environ.get(FAKE_GPUS_ENV) == "1":
        return {"device": "cpu", "gpu_name": f"none: a fake GPU ({FAKE_GPUS_ENV}=1)"}
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if torch.version.cuda is None:
        cause = f"its torch {torch.__version__} is a CPU build: install the CUDA build of that version"
    elif not torch.cuda.is_available():
        try:
            torch.cuda.init()
            cause = "torch.cuda.is_available() is False"
        except Exception as exc:  # noqa: BLE001 - its text is the diagnosis
            cause = f"{type(exc).__name__}: {exc}"
        cause += ("\nLikely cause: the NVIDIA driver is missing or older than torch's CUDA "
                  f"{torch.version.cuda} needs (nvidia-smi on the node says which)")
    else:
        return {"device": "cuda", "gpu_name": torch.cuda.get_device_name(0)}
    raise NodeSetupError(
        f"node {node_label()} advertises a GPU to Ray (CUDA_VISIBLE_DEVICES={visible}) but torch cannot use "
        f"CUDA there: {cause}.\nFix the node, or start its Ray with --num-gpus=0 (no GPU trials).")


def no_retry_failure_policy(failure_config):
    """Ray Train's default failure policy, except that a node set-up failure is final."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

    class NoRetryOnNodeSetup(DefaultFailurePolicy):
        def _is_retryable_error(self, training_failed_error) -> bool:
            if is_node_setup_failure(training_failed_error):
                return False
            return super()._is_retryable_error(training_failed_error)

    return NoRetryOnNodeSetup(failure_config)
