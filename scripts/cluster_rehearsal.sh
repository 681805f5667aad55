#!/usr/bin/env bash
# The real `ray up cluster.yaml` against this machine (`make cluster-rehearsal`; root).
#
# An ssh server from Debian's packages listens on 127.0.0.1 only, with a key made for the
# rehearsal; cluster.yaml is used as shipped except the addresses (the head is 127.0.0.1,
# no workers), the ssh user and the key. Then: `ray up` (the head's setup, start and
# MLflow commands as written), a short alpha search submitted with `ray exec`, a quick
# ablation sweep submitted detached with `ray exec --tmux`, every trial of both checked
# through the MLflow server's REST API, `ray down`, and no Ray or MLflow process may be left.
#
# Everything runs in private network, process, mount and /tmp namespaces: `ray stop`
# (which `ray up` and `ray down` run) ends every Ray process it can see, and must not see
# other Ray sessions on this machine; ports 22, 5000 and 6379 are the namespace's own.
# root's home directory is a temporary folder there (a private /etc/passwd), so nothing
# is written to the real home. The machine keeps only the two Debian packages.
#
# The head's `make install` would build a second 2.3 GB virtualenv without network: the
# copy's .venv is a link to this checkout's (installed first by the Makefile target).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "cluster_rehearsal: $*" >&2; exit 1; }
say() { echo "== $*"; }

if [[ "${1:-}" != "--inside" ]]; then
    [[ "$(id -u)" == 0 ]] || die "needs root (namespaces, an ssh server)"
    # The head's `make install` must find the linked .venv up to date: run from the copy it
    # would point this checkout's editable install at the temporary copy.
    make -q -C "$REPO" install || die "run 'make install' first (or 'make cluster-rehearsal')"
    missing=()
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    command -v rsync >/dev/null || missing+=(rsync)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
    fi
    work="$(mktemp -d /var/tmp/sevlm-rehearsal.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    set +e
    unshare --pid --net --mount --fork --mount-proc bash "${BASH_SOURCE[0]}" --inside "$work"
    rc=$?
    set -e
    [[ $rc == 0 ]] && echo "REHEARSAL PASSED" || echo "REHEARSAL FAILED (exit $rc)"
    exit $rc
fi

# ---------------------------------------------------------------- inside the namespaces
work="$2"
start=$SECONDS
ip link set lo up
mount -t tmpfs tmpfs /tmp  # Ray's /tmp/ray, the launcher's cluster state
home="$work/home"
mkdir -p "$home/.ssh" "$work/client"
sed -E "s#^(root:[^:]*:0:0:[^:]*:)[^:]*:#\1$home:#" /etc/passwd >"$work/passwd"
mount --bind "$work/passwd" /etc/passwd

say "ssh server on 127.0.0.1:22 with a test key"
ssh-keygen -q -t ed25519 -N '' -C rehearsal -f "$work/id_test"
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
cp "$work/id_test.pub" "$home/.ssh/authorized_keys"
chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys"
mkdir -p /run/sshd
cat >"$work/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port 22
HostKey $work/host_key
PidFile $work/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF
/usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"

say "cluster.yaml with loopback addresses"
"$REPO/.venv/bin/python" - "$REPO/cluster.yaml" "$work/cluster.yaml" "$work/id_test" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
config["min_workers"] = config["max_workers"] = 0
config["auth"] = {"ssh_user": "root", "ssh_private_key": sys.argv[3]}
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
EOF
mkdir -p "$home/sevlm-sweeps"
ln -s "$REPO/.venv" "$home/sevlm-sweeps/.venv"

export HOME="$work/client" RAY_USAGE_STATS_ENABLED=0
ray="$REPO/.venv/bin/ray"
cd "$REPO"  # file_mounts: "." is the project
status=0
say "ray up"
"$ray" up -y --no-config-cache "$work/cluster.yaml" 2>&1 | tail -n 25 || status=1
[[ -s "$home/.ray/auth_token" ]] || { echo "no Ray auth token on the head"; status=1; }

say "a short alpha search, submitted with ray exec"
sets=""
for kv in data.synthetic_paintings=40 eval.max_eval_paintings=6 eval.use_meteor=false eval.max_new_tokens=8 \
          train.batch_size=4 train.log_every_steps=1 train.eval_every_steps=2 train.warmup_steps=0 train.max_steps=4; do
    sets+=" --set $kv"
done
"$ray" exec "$work/cluster.yaml" "cd sevlm-sweeps && .venv/bin/python sweeps/alpha_search.py \
    --address auto --storage ~/rehearsal/ray_results --tracking-uri http://127.0.0.1:5000 \
    --num-trials 2 --concurrency 1 --name rehearsal --progress-interval 60 $sets" 2>&1 | tail -n 30 || status=1

say "a quick ablation sweep, submitted with ray exec --tmux (the driver outlives the connection)"
"$ray" exec --tmux "$work/cluster.yaml" "cd sevlm-sweeps && .venv/bin/python sweeps/ablations.py \
    --quick --variants baseline,full --seeds 1 --address auto --storage ~/rehearsal/ray_results \
    --tracking-uri http://127.0.0.1:5000 --name rehearsal-ablations --progress-interval 60" 2>&1 | tail -n 5 \
    || status=1
"$REPO/.venv/bin/python" - <<'EOF' || status=1
import json, sys, time, urllib.parse, urllib.request
from trainables import tracking_schema as schema

base = "http://127.0.0.1:5000/api/2.0/mlflow"
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(5)
    try:
        query = urllib.parse.urlencode({"experiment_name": schema.DEFAULT_EXPERIMENT})
        with urllib.request.urlopen(f"{base}/experiments/get-by-name?{query}", timeout=30) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id], "filter": schema.search_filter_parent("rehearsal-ablations"),
                           "max_results": 5}).encode()
        request = urllib.request.Request(f"{base}/runs/search", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            parents = json.load(r).get("runs", [])
    except OSError:
        continue
    if parents and parents[0]["info"]["status"] != "RUNNING":
        print(f"  the detached sweep ended: {parents[0]['info']['status']}")
        sys.exit(0)
print("  the detached sweep did not end within 10 minutes")
sys.exit(1)
EOF

say "every trial through the MLflow server's REST API"
"$REPO/.venv/bin/python" - <<'EOF' || status=1
import json, sys, urllib.parse, urllib.request
from trainables import tracking_schema as schema

base = "http://127.0.0.1:5000/api/2.0/mlflow"
query = urllib.parse.urlencode({"experiment_name": schema.DEFAULT_EXPERIMENT})
with urllib.request.urlopen(f"{base}/experiments/get-by-name?{query}", timeout=30) as r:
    exp_id = json.load(r)["experiment"]["experiment_id"]
role = lambda run: {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get(schema.TAG_ROLE)
ok = True
for sweep in ("rehearsal", "rehearsal-ablations"):  # two trials each
    body = json.dumps({"experiment_ids": [exp_id], "filter": schema.search_filter_sweep(sweep),
                       "max_results": 100}).encode()
    request = urllib.request.Request(f"{base}/runs/search", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        runs = json.load(r).get("runs", [])
    trials = [r for r in runs if role(r) == schema.ROLE_TRIAL]
    for run in trials:
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        print(f"  {run['info']['run_name']}: {run['info']['status']}, {len(metrics)} metrics, "
              f"test metrics: {any(k.startswith(schema.TEST_PREFIX) for k in metrics)}")
    complete = len(trials) == 2 and all(r["info"]["status"] == "FINISHED" for r in trials) \
        and len([r for r in runs if role(r) == schema.ROLE_PARENT]) == 1
    print(f"  {sweep}: {len(trials)} trial runs and their parent: {'ok' if complete else 'MISSING'}")
    ok = ok and complete
sys.exit(0 if ok else 1)
EOF

say "ray down"
"$ray" down -y "$work/cluster.yaml" 2>&1 | tail -n 5 || status=1
sleep 3
left="$(ps -eo pid,args | grep -E 'raylet|gcs_server|ray::|dashboard|mlflow|uvicorn|default_worker|log_monitor' | grep -v grep || true)"
if [[ -n "$left" ]]; then
    echo "left behind after ray down:"; echo "$left"; status=1
else
    echo "  no Ray or MLflow process left"
fi
[[ ! -e "$home/sevlm-mlflow/mlflow.pid" ]] || { echo "MLflow pidfile still there"; status=1; }

kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
echo "rehearsal took $((SECONDS - start)) s"
exit $status
