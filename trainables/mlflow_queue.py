"""The sweep driver's MLflow writes, queued on disk so that a tracking server that is down
or slow never stalls the sweep and nothing is lost.

Every write of the driver (``trainables.sweep_tracking``: the parent run and the trial
runs; create, status, metrics/params/tags, artifacts) is appended to a journal file (JSON
lines) and then sent in order by :meth:`WriteQueue.drain`, which the driver calls from
its Tune hooks: one short attempt per call (a few seconds of timeout, no urllib3
retries), and after a failure none until a back-off has passed (up to
``backoff_max_s``), so the Tune event loop goes on while the server is away. When it
is back, everything queued is written in order. What is left when the sweep ends stays in
the journal and ``--resume`` writes it first.

Replaying is safe: a run is created only when a search by its tags finds none (no
duplicate runs, even when a create timed out after the server did it); metric timestamps
are fixed when a write is queued, and MLflow drops an exact duplicate metric; a param
logged again with its value and a tag set again are no-ops.

Journal lines: ``{"seq": n, "op": ...}`` (a write), ``{"done": n}`` (written),
``{"key": k, "run_id": id}`` (a queued run creation that has its id). A line cut short by
a crash is ignored. The file is emptied whenever the queue is.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from trainables.mlflow_store import MAX_PARAMS_PER_BATCH, error_line, http_limits, param_text

log = logging.getLogger(__name__)

RUN_KEY_PREFIX = "queued:"  # a run referred to before it exists (its creation is queued)
QUEUE_FILE = "mlflow_queue.jsonl"  # in the sweep's directory: writes not yet sent
QUEUE_ARTIFACTS = "mlflow_queue_artifacts"  # files of queued artifact writes, until sent
END_DRAIN_S = 60.0  # how long the end of a sweep waits for a tracking server that is away


class QueueFull(RuntimeError):
    pass


def _refused(exc: BaseException) -> bool:
    """A 4xx answer (a changed param value, a deleted run): the server is there and says no."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status not in (408, 429)


def quick_http():
    """One attempt per call: a dead server fails in seconds, not after urllib3's ~4 minutes."""
    return http_limits(timeout_s=5, max_retries=0)


class WriteQueue:
    """A FIFO of MLflow writes kept in ``path`` (see the module docstring)."""

    def __init__(self, client, path: str | os.PathLike, *, max_pending: int = 20_000,
                 backoff_max_s: float = 30.0):
        self.client = client
        self.path = Path(path)
        self.max_pending = max_pending
        self.backoff_max_s = backoff_max_s
        self._pending: deque[dict[str, Any]] = deque()
        self._run_ids: dict[str, str] = {}
        self._seq = 0
        self._failures = 0
        self._retry_at = 0.0
        self._load()

    # ---- queueing
    def create_run(self, key: str, experiment_id: str, tags: dict[str, str], run_name: str,
                   search_filter: str) -> str:
        """Queue a run's creation; returns the name later writes use for it."""
        ref = RUN_KEY_PREFIX + key
        if ref not in self._run_ids:
            self._put({"op": "create_run", "ref": ref, "experiment_id": experiment_id, "tags": tags,
                       "run_name": run_name, "filter": search_filter})
        return ref

    def log_batch(self, run: str, metrics=(), params=(), tags: dict[str, str] | None = None) -> None:
        metrics = [[m.key, m.value, m.timestamp, m.step] for m in metrics]
        params = [[p.key, p.value] for p in params]
        tags = [[k, str(v)] for k, v in (tags or {}).items()]
        if metrics or params or tags:
            self._put({"op": "log_batch", "run": run, "metrics": metrics, "params": params, "tags": tags})

    def log_new_params(self, run: str, params: dict[str, Any], logged: set[str]) -> None:
        """Queue the params whose keys are not in ``logged`` (the keys the run has or has
        queued: MLflow refuses to change a param's value), in batches; adds their keys to it."""
        from mlflow.entities import Param

        new = [Param(k, param_text(v)) for k, v in sorted(params.items()) if k not in logged]
        for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
            self.log_batch(run, params=new[i:i + MAX_PARAMS_PER_BATCH])
        logged.update(p.key for p in new)

    def set_status(self, run: str, status: str, terminated: bool = False) -> None:
        self._put({"op": "set_terminated" if terminated else "update_run", "run": run, "status": status})

    def log_artifacts(self, run: str, local_path: str, artifact_path: str | None = None) -> None:
        """``local_path`` (file or folder) must stay until the write is done."""
        self._put({"op": "log_artifacts", "run": run, "local": str(local_path), "artifact_path": artifact_path})

    def run_id(self, run: str) -> str | None:
        """The MLflow id of ``run`` (an id, or a queued run once created)."""
        return self._run_ids.get(run) if run.startswith(RUN_KEY_PREFIX) else run

    def __len__(self) -> int:
        return len(self._pending)

    # ---- sending
    def drain(self, budget_s: float = 0.0) -> bool:
        """Send queued writes in order until the queue is empty or one fails; after a
        failure, try again (after the back-off) only while ``budget_s`` lasts. The default
        budget 0 never waits: during a back-off it returns at once. True when empty."""
        deadline = time.monotonic() + budget_s
        while self._pending:
            now = time.monotonic()
            if now < self._retry_at:
                if now + min(self._retry_at - now, 1.0) > deadline:
                    return False
                time.sleep(min(self._retry_at - now, 1.0))
                continue
            op = self._pending[0]
            try:
                with quick_http():
                    self._send(op)
            except Exception as exc:  # noqa: BLE001 - the server is away or busy: later
                if _refused(exc):  # the write itself is wrong: sending it again cannot help
                    log.error("MLflow refused a queued write (%s): %s", exc, json.dumps(op)[:500])
                    self._pending.popleft()
                    self._journal({"done": op["seq"], "refused": str(exc)[:500]})
                    continue
                self._failures += 1
                delay = min(self.backoff_max_s, 0.5 * 2 ** min(self._failures, 10))
                self._retry_at = time.monotonic() + delay
                if self._failures == 1 or self._failures % 10 == 0:
                    log.warning("MLflow unreachable (%s); %d writes queued in %s, next try in %.0f s",
                                error_line(exc),
                                len(self._pending), self.path, delay)
                if time.monotonic() > deadline:
                    return False
                continue
            self._failures = 0
            self._retry_at = 0.0
            self._pending.popleft()
            self._journal({"done": op["seq"]})
        if not self._pending:
            self._truncate()
        return not self._pending

    def _send(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind = op["op"]
        if kind == "create_run":
            if op["ref"] in self._run_ids:
                return
            found = self.client.search_runs([op["experiment_id"]], filter_string=op["filter"], max_results=1)
            run_id = found[0].info.run_id if found else self.client.create_run(
                op["experiment_id"], tags=op["tags"], run_name=op["run_name"]).info.run_id
            self._run_ids[op["ref"]] = run_id
            self._journal({"key": op["ref"], "run_id": run_id})
            return
        run_id = self.run_id(op["run"])
        if run_id is None:
            raise RuntimeError(f"run {op['run']} was never created")  # cannot happen in FIFO order
        if kind == "log_batch":
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), int(t), int(s)) for k, v, t, s in op["metrics"]],
                                  params=[Param(k, v) for k, v in op["params"]],
                                  tags=[RunTag(k, v) for k, v in op["tags"]])
        elif kind == "update_run":
            self.client.update_run(run_id, status=op["status"])
        elif kind == "set_terminated":
            self.client.set_terminated(run_id, status=op["status"])
        elif kind == "log_artifacts":
            local = Path(op["local"])
            if not local.exists():
                log.error("artifact %s of run %s is gone; not logged", local, run_id)
            elif local.is_dir():
                self.client.log_artifacts(run_id, str(local), op["artifact_path"])
            else:
                self.client.log_artifact(run_id, str(local), op["artifact_path"])
        else:
            raise ValueError(f"unknown queued MLflow write {kind!r}")

    # ---- the journal
    def _put(self, op: dict[str, Any]) -> None:
        if len(self._pending) >= self.max_pending:
            # Bounded: wait for the server rather than lose writes or fill the disk.
            if not self.drain(budget_s=self.backoff_max_s * 4):
                raise QueueFull(f"{len(self._pending)} MLflow writes queued in {self.path} and the "
                                "tracking server does not take them")
        self._seq += 1
        op = {"seq": self._seq, **op}
        self._journal(op)
        self._pending.append(op)

    def _journal(self, line: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def _truncate(self) -> None:
        # Resolved run keys stay useful to later writes of this driver, not to a new one:
        # a new driver finds its runs by their tags.
        if self.path.exists() and self.path.stat().st_size:
            self.path.write_text("")

    def _load(self) -> None:
        if not self.path.exists():
            return
        ops: dict[int, dict[str, Any]] = {}
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # cut short by a crash
            if "seq" in entry:
                ops[entry["seq"]] = entry
                self._seq = max(self._seq, entry["seq"])
            elif "done" in entry:
                ops.pop(entry["done"], None)
            elif "key" in entry:
                self._run_ids[entry["key"]] = entry["run_id"]
        self._pending.extend(ops[seq] for seq in sorted(ops))
        if self._pending:
            log.warning("%d MLflow writes left by an earlier driver in %s are written first",
                        len(self._pending), self.path)


def queue_path(sweep_path: str, sweep_name: str) -> Path:
    """The write queue's journal: next to Tune's state (where ``--resume`` looks), or in
    the temp folder when the sweep's storage is a bucket."""
    if "://" in sweep_path:
        return Path(tempfile.gettempdir()) / f"sevlm-{sweep_name}-{QUEUE_FILE}"
    return Path(sweep_path) / QUEUE_FILE

