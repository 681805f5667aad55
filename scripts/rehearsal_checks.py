"""The checks of the two-node cluster rehearsal (scripts/cluster_rehearsal.sh), one
subcommand each; each prints what it checked and exits non-zero when it does not hold.

MLflow is read through its REST API on the head's loopback (the rehearsal runs these
checks in the head's network namespace), as a user's browser or script would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from trainables import tracking_schema as schema

MLFLOW = "http://127.0.0.1:5000/api/2.0/mlflow"


class CheckFailed(Exception):
    pass


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ------------------------------------------------------------------------------ MLflow
def _get(endpoint: str, **params) -> dict:
    with urllib.request.urlopen(f"{MLFLOW}/{endpoint}?{urllib.parse.urlencode(params, doseq=True)}", timeout=30) as r:
        return json.load(r)


def _post(path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{MLFLOW}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def _runs(sweep: str) -> list[dict]:
    exp_id = _get("experiments/get-by-name", experiment_name=schema.DEFAULT_EXPERIMENT)["experiment"]["experiment_id"]
    return _post("runs/search", {"experiment_ids": [exp_id], "filter": schema.search_filter_sweep(sweep),
                                 "max_results": 200}).get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _artifacts(run_id: str, path: str = "") -> set[str]:
    files = _get("artifacts/list", run_id=run_id, **({"path": path} if path else {})).get("files", [])
    out = set()
    for f in files:
        out.add(f["path"])
        if f.get("is_dir"):
            out |= _artifacts(run_id, f["path"])
    return out


def wait_sweep(args) -> None:
    deadline = time.monotonic() + args.timeout
    start = time.monotonic()
    while time.monotonic() < deadline:
        try:
            parents = [r for r in _runs(args.sweep) if _tags(r).get(schema.TAG_ROLE) == schema.ROLE_PARENT]
        except OSError:
            parents = []
        if parents and parents[0]["info"]["status"] != "RUNNING":
            print(f"  sweep {args.sweep} ended after {time.monotonic() - start:.0f} s: {parents[0]['info']['status']}")
            ensure(parents[0]["info"]["status"] == "FINISHED", f"sweep {args.sweep} did not finish")
            return
        time.sleep(3)
    raise CheckFailed(f"sweep {args.sweep} did not end within {args.timeout} s")


def trials(args) -> None:
    runs = _runs(args.sweep)
    trial_runs = [r for r in runs if _tags(r).get(schema.TAG_ROLE) == schema.ROLE_TRIAL]
    ensure(len(trial_runs) == args.count, f"{args.sweep}: {len(trial_runs)} trial runs, expected {args.count}")
    for run in trial_runs:
        info, tags = run["info"], _tags(run)
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        artifacts = _artifacts(info["run_id"])
        print(f"  {info['run_name']}: {info['status']}, node {tags.get(schema.TAG_NODE_IP)}, device "
              f"{tags.get(schema.TAG_DEVICE)}, {sum(k.startswith(schema.TEST_PREFIX) for k in metrics)} test metrics, "
              f"{len(artifacts)} artifacts")
        ensure(info["status"] == "FINISHED", f"{info['run_name']} is {info['status']}")
        ensure(tags.get(schema.TAG_NODE_IP) == args.node,
               f"{info['run_name']} trained on {tags.get(schema.TAG_NODE_IP)}, not the worker {args.node}")
        ensure(tags.get(schema.TAG_NODE_IDS, "").count(",") == 0, f"{info['run_name']} ran on several nodes")
        ensure(tags.get(schema.TAG_DEVICE) == "cpu", f"{info['run_name']}: device {tags.get(schema.TAG_DEVICE)}")
        ensure(any(k.startswith(schema.TEST_PREFIX) for k in metrics), f"{info['run_name']} has no test metrics")
        for needed in (schema.ARTIFACT_PREDICTIONS_TEST, schema.ARTIFACT_DATA_REPORT, schema.ARTIFACT_SAMPLES_DIR):
            ensure(needed in artifacts, f"{info['run_name']} lacks the artifact {needed}")
    print(f"  {args.sweep}: {len(trial_runs)} trials, all on {args.node}, none on the head, with test metrics "
          "and artifacts")


# ------------------------------------------------------------------------- the driver
def sweep_log(args) -> None:
    text = Path(args.log).read_text()
    ensure("waiting for the cluster" in text, "the sweep did not wait for the worker (no 'waiting for the cluster')")
    ensure("cluster ready after" in text, "the sweep never saw its worker join")
    ensure(re.search(r"^(GPU|CPU) trials: ", text, re.M) is not None, "the sweep did not say what it decided")
    print("  the sweep waited for the worker, then said what it decided:",
          re.search(r"^(GPU|CPU) trials: .*$", text, re.M).group(0))


def failed_at_once(args) -> None:
    text = Path(args.log).read_text()
    ensure(args.cause in text, f"{args.log}: the failure does not say {args.cause!r}")
    ensure(f"node {args.node}" in text, f"{args.log}: the failure does not name the node {args.node}")
    ensure(re.search(r"\b1 failed\b", text) is not None, f"{args.log}: the trial did not end failed")
    line = next(line for line in text.splitlines() if args.cause in line or f"node {args.node}" in line)
    print(f"  failed at once, node named: {line.strip()[:160]}")


# ------------------------------------------------------------------ files on the nodes
def shared_caches(args) -> None:
    storage = Path(args.storage)
    for folder in ("features", "ea_classifier", "synthetic"):
        path = storage / "cache" / folder
        entries = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        ensure(bool(entries), f"nothing was built in the shared folder {path}")
        print(f"  {path}: {len(entries)} files")
    classifiers = [p for p in (storage / "cache" / "ea_classifier").iterdir() if p.is_dir()]
    ensure(len(classifiers) == 1, f"{len(classifiers)} EA classifiers in the shared folder, expected one")
    for copy in args.copies:
        for local in (".cache", "data/synthetic"):
            ensure(not (Path(copy) / local).exists(), f"{copy}/{local} exists: a cache was built on a node")
    print("  the feature cache, the EA classifier and the synthetic data: built once, in the shared folder only")
    left = list(Path(args.scratch).iterdir()) if Path(args.scratch).is_dir() else []
    ensure(not left, f"the worker's scratch {args.scratch} still holds {left}")
    print(f"  the worker's scratch folder {args.scratch}: empty after the trials")


def token_and_marker(args) -> None:
    tokens = [Path(t) for t in args.tokens]
    for token in tokens:
        mode = stat.S_IMODE(token.stat().st_mode)
        ensure(mode == 0o600, f"{token} has mode {mode:o}, not 600")
    ensure(len({t.read_bytes() for t in tokens}) == 1, "the nodes hold different tokens")
    marker = (Path(args.shared) / ".sevlm-cluster").read_text()
    digest = hashlib.sha256(tokens[0].read_bytes()).hexdigest()
    ensure(f"token_sha256={digest}" in marker, "the shared folder's marker is not this cluster's")
    print(f"  the token: the same on {len(tokens)} nodes, mode 600; the shared folder's marker: the head's")


def no_token(args) -> None:
    """From a machine that has no token: joining and driving the cluster both fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    ray = str(Path(sys.executable).with_name("ray"))
    attempts = {
        "ray start (no token)": ([ray, "start", f"--address={args.address}"], {**env, "RAY_AUTH_MODE": "token"}),
        "ray start (a wrong token)": ([ray, "start", f"--address={args.address}"],
                                      {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}),
        "a driver (ray.init)": ([sys.executable, "-c", f"import ray; ray.init(address={args.address!r}); "
                                 "print(ray.cluster_resources())"], {**env, "RAY_AUTH_MODE": "token",
                                                                     "RAY_AUTH_TOKEN": "0" * 32}),
    }
    for what, (cmd, cmd_env) in attempts.items():
        try:
            done = subprocess.run(cmd, env=cmd_env, capture_output=True, text=True, timeout=90)
            refused = done.returncode != 0
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            refused, detail = True, ["timed out without joining"]
        ensure(refused, f"{what} succeeded without the cluster's token")
        print(f"  {what}: refused ({detail[0][:110]})")


# ---------------------------------------------------------------------------- sockets
ADDRESS_KINDS = {"loopback": ("127.0.0.1", "[::1]"), "all interfaces": ("0.0.0.0", "*", "[::]")}
# What a listening process is, from its command line (the first pattern that matches).
WHAT = [
    ("sshd", r"^sshd|/sshd "),
    ("MLflow server", r"mlflow|uvicorn"),
    ("GCS", r"gcs_server"),
    ("raylet", r"/raylet "),
    ("dashboard", r"dashboard/dashboard\.py"),
    ("dashboard agent", r"dashboard/agent\.py|ray::DashboardAgent"),
    ("runtime-env agent", r"runtime_env/agent/main\.py|ray::RuntimeEnvAgent"),
    ("Ray client server", r"ray\.util\.client\.server|util/client/server"),
    ("autoscaler", r"autoscaler/.*monitor\.py"),
    ("Ray worker process", r"default_worker\.py|^ray::"),
]


def _port_table(readme: Path) -> list[dict[str, str]]:
    """The README's port table (between <!-- ports --> and <!-- /ports -->)."""
    text = readme.read_text()
    block = text.split("<!-- ports -->", 1)[1].split("<!-- /ports -->", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            for line in block.splitlines() if line.strip().startswith("|")]
    header = [h.lower() for h in rows[0]]
    return [dict(zip(header, r)) for r in rows[2:]]


def _what(pid: str) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    return next((name for name, pattern in WHAT if re.search(pattern, args)), f"? ({args[:80]})")


def _sockets(path: Path) -> list[tuple[str, str, str]]:
    """(what, address, port) of each listening socket in an `ss -ltnpH` listing."""
    out = []
    for line in path.read_text().splitlines():
        address, _, port = line.split()[3].rpartition(":")
        address = re.sub(r"%\w+$", "", address)
        address = re.sub(r"^\[::ffff:([0-9.]+)\]$", r"\1", address)  # an IPv4 address on a dual-stack socket
        pid = re.search(r"pid=(\d+)", line)
        out.append((_what(pid.group(1)) if pid else "?", address, port))
    return out


def _in_range(port: str, spec: str) -> bool:
    for part in spec.split(","):
        part = part.strip()
        if part == "any" or part == port:
            return True
        low, sep, high = part.partition("-")
        if sep and low.isdigit() and high.isdigit() and int(low) <= int(port) <= int(high):
            return True
    return False


def _row(table, node: str, what: str, address: str, port: str, node_ips: dict) -> dict | None:
    for row in table:
        if row["node"] not in (node, "every node") or row["what"] != what or not _in_range(port, row["port"]):
            continue
        allowed: list[str] = []
        for where in row["listens on"].split(","):
            where = where.strip()
            allowed += ADDRESS_KINDS.get(where, (node_ips[node],) if where == "the node's address" else ())
        if address in allowed:
            return row
    return None


def _http_probe(address: str, port: str) -> str:
    """What a machine without the token gets from an HTTP GET (run from the client)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=3) as r:
            return f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except Exception as exc:  # noqa: BLE001 - gRPC and other non-HTTP servers
        return f"no HTTP answer ({type(exc).__name__})"


def ports(args) -> None:
    table = _port_table(Path(args.readme))
    node_ips = {"head": args.head_ip, "worker": args.worker_ip}
    ok = True
    for spec in args.listings:
        node, _, listing = spec.partition("=")
        sockets = sorted(set(_sockets(Path(listing))))
        print(f"  {node}: {len(sockets)} listening sockets")
        for what, address, port in sockets:
            row = _row(table, node, what, address, port, node_ips)
            reachable = address not in ADDRESS_KINDS["loopback"]
            probe = _http_probe(node_ips[node] if address in ADDRESS_KINDS["all interfaces"] else address, port) \
                if reachable else "loopback"
            verdict = "ok" if row else "NOT IN THE README'S TABLE"
            if row and probe == "HTTP 200" and row["guarded by"].startswith("Ray's token"):
                verdict = "the table says the token guards it, but it answered HTTP 200 without one"
                row = None
            print(f"    {what:20} {address}:{port:6} {probe:38} {verdict}")
            ok = ok and row is not None
            if port in ("5000", "8265"):
                ensure(node == "head" and not reachable,
                       f"{node}: {what} listens on {address}:{port}: MLflow and the dashboard belong on the "
                       "head's loopback only")
    ensure(ok, "a listening socket is not what the README's port table says")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rehearsal_checks.py")
    sub = p.add_subparsers(dest="check", required=True)
    s = sub.add_parser("wait-sweep"); s.add_argument("sweep"); s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(fn=wait_sweep)
    s = sub.add_parser("trials"); s.add_argument("sweep"); s.add_argument("--count", type=int, required=True)
    s.add_argument("--node", required=True); s.set_defaults(fn=trials)
    s = sub.add_parser("sweep-log"); s.add_argument("log"); s.add_argument("--waited", action="store_true")
    s.set_defaults(fn=sweep_log)
    s = sub.add_parser("failed-at-once"); s.add_argument("log"); s.add_argument("--node", required=True)
    s.add_argument("--cause", required=True); s.set_defaults(fn=failed_at_once)
    s = sub.add_parser("shared-caches"); s.add_argument("storage"); s.add_argument("copies", nargs="+")
    s.add_argument("--scratch", required=True); s.set_defaults(fn=shared_caches)
    s = sub.add_parser("token-and-marker"); s.add_argument("shared"); s.add_argument("tokens", nargs="+")
    s.set_defaults(fn=token_and_marker)
    s = sub.add_parser("no-token"); s.add_argument("address"); s.set_defaults(fn=no_token)
    s = sub.add_parser("ports"); s.add_argument("readme"); s.add_argument("listings", nargs="+")
    s.add_argument("--head-ip", required=True); s.add_argument("--worker-ip", required=True)
    s.set_defaults(fn=ports)
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (CheckFailed, OSError, KeyError, ValueError) as exc:
        print(f"  FAILED ({args.check}): {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
