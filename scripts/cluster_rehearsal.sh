#!/usr/bin/env bash
# A two-machine cluster rehearsed on this machine (`make cluster-rehearsal`; root):
# the real `ray up cluster.yaml` with a head and a worker, sweeps on them, `ray down`.
#
# Each node is a machine of its own as far as Ray can tell: its own network namespace
# (a veth pair on a bridge, addresses 10.10.0.0/24 that exist inside these namespaces
# only, never on the machine's own network), its own process namespace (`ray stop` on one
# node cannot see the other's processes), its own root filesystem (a copy-on-write view of
# this machine's, with a private /tmp, /dev/shm, /run and home, and the checkout hidden)
# and its own sshd. They share one folder, bind-mounted at /shared on both: the cluster's
# NFS in cluster.yaml. The machine that runs `ray up` (this script) is a third namespace
# on the same bridge, with a home of its own.
#
# cluster.yaml is used as shipped except the addresses, the ssh user and the key. The
# rehearsal then shows, and fails when it does not:
#   - a sweep submitted with `ray exec --tmux` right after `ray up` waits for the worker,
#     runs every trial there (each trial's MLflow run names its node) and none on the head;
#   - every trial has its test metrics and its artifacts in MLflow (the driver reads them
#     from the shared folder: it cannot see the worker's disk), the worker's scratch
#     folders are gone, and the feature cache and the EA classifier were built once, in
#     the shared folder, not in either node's copy of the project;
#   - the shared folder's marker and the token (mode 0600 on both nodes);
#   - a machine without the token can neither join nor run work;
#   - a trial on a node that advertises a GPU without CUDA, and one that reads a path only
#     the head has, fail at once with the node named;
#   - what listens on each node is what the README's port table says;
#   - `ray job submit` through `ray dashboard cluster.yaml`'s tunnel runs a quick sweep;
#   - after `ray down`, no Ray, MLflow or sshd process is left on either node.
#
# The nodes' Python environment is a copy-on-write view of this checkout's .venv (the
# nodes have no network to build theirs): `make install` on a node finds it up to date,
# and its editable install points at the node's own copy of the project (~/sevlm-sweeps).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$REPO/scripts/cluster_rehearsal.sh"
die() { echo "cluster_rehearsal: $*" >&2; exit 1; }
say() { echo "== $*"; }
SUBNET=10.10.0
declare -A NODE_IP=([head]=$SUBNET.1 [worker]=$SUBNET.2)
CLIENT_IP=$SUBNET.254
# Every node's ssh user is root (cluster.yaml's auth, rewritten below): its home there.
NODE_HOME=/root

# ------------------------------------------------------------- on this machine, as root
if [[ "${1:-}" != --inside && "${1:-}" != --node ]]; then
    [[ "$(id -u)" == 0 ]] || die "needs root (namespaces, mounts, ssh servers)"
    make -q -C "$REPO" install || die "run 'make install' first (or 'make cluster-rehearsal')"
    missing=()
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v tmux >/dev/null || missing+=(tmux)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
    fi
    work="$(mktemp -d /var/tmp/sevlm-rehearsal.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    set +e
    unshare --pid --net --mount --uts --fork --kill-child --mount-proc bash "$SELF" --inside "$work"
    rc=$?
    set -e
    [[ $rc == 0 ]] && echo "REHEARSAL PASSED" || echo "REHEARSAL FAILED (exit $rc)"
    exit $rc
fi

# ------------------------------------------------------------- a node: its init process
if [[ "$1" == --node ]]; then
    name="$2" root="$3"
    hostname "rehearsal-$name"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/dev/shm"
    # The node's init: starts its sshd, then reaps what its processes leave behind.
    exec chroot "$root" /bin/bash -c '/usr/sbin/sshd -f /etc/ssh/rehearsal_sshd_config -E /var/log/rehearsal_sshd.log
        trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'
fi

# ------------------------------------------------------------- inside: the client machine
work="$2"
start=$SECONDS
status=0
check() { "$@" || { status=1; echo "  FAILED: $*"; }; }
hostname rehearsal-client
ip link set lo up
mount --make-rprivate /
# A checkout under /tmp stays visible at its own path under this namespace's private /tmp.
mkdir -p "$work/repo"
mount --bind "$REPO" "$work/repo"
mount -t tmpfs tmpfs /tmp  # the launcher's state (/tmp/ray), ssh control sockets
mkdir -p "$REPO"
mount --bind "$work/repo" "$REPO"
mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
ns="$work/ns"
mkdir -p "$ns" "$work/shared" "$work/client/.ssh" && mount -t tmpfs tmpfs "$ns"
# ssh reads the home directory from the password database: the client's is its own.
sed -E "s#^(root:[^:]*:0:0:[^:]*:)[^:]*:#\1$work/client:#" /etc/passwd >"$work/passwd"
mount --bind "$work/passwd" /etc/passwd
export HOME="$work/client" RAY_USAGE_STATS_ENABLED=0
ssh-keygen -q -t ed25519 -N '' -C rehearsal -f "$work/client/.ssh/id_rehearsal"
PY="$REPO/.venv/bin/python"
RAY="$REPO/.venv/bin/ray"
CHECKS=("$PY" "$REPO/scripts/rehearsal_checks.py")

ip link add br0 type bridge
ip addr add "$CLIENT_IP/24" dev br0
ip link set br0 up
site_packages="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

declare -A NODE_PID
for name in head worker; do
    say "node $name at ${NODE_IP[$name]}: its own network, processes, filesystem and sshd"
    root="$ns/$name/root"
    mkdir -p "$ns/$name"/{upper,work,root,venv-upper,venv-work}
    mount -t overlay overlay -o "lowerdir=/,upperdir=$ns/$name/upper,workdir=$ns/$name/work" "$root"
    mount -t tmpfs tmpfs "$root/tmp"           # before the checkout's view: it may be under /tmp
    mount -t tmpfs tmpfs "$root/run"
    mkdir -p "$root/run/sshd"
    mkdir -p "$root$work" "$root$REPO"       # under the node's new /tmp, a checkout in /tmp is gone
    mount -t tmpfs tmpfs "$root$work"          # the rehearsal's files, the other node's included
    mount -t tmpfs tmpfs "$root$REPO"          # the checkout: a node has only its ray up copy
    mkdir -p "$root$REPO/.venv"
    mount -t overlay overlay -o "lowerdir=$REPO/.venv,upperdir=$ns/$name/venv-upper,workdir=$ns/$name/venv-work" \
        "$root$REPO/.venv"
    sed -i "s#'$REPO/#'$NODE_HOME/sevlm-sweeps/#g" "$root$site_packages"/__editable___*_finder.py
    rm -rf "$root$NODE_HOME/.ray" "$root$NODE_HOME/.ssh" "$root$NODE_HOME/sevlm-sweeps" "$root$NODE_HOME/.cache/sevlm-sweeps"
    mkdir -p "$root$NODE_HOME/.ssh" "$root$NODE_HOME/sevlm-sweeps" "$root/shared"
    ln -s "$REPO/.venv" "$root$NODE_HOME/sevlm-sweeps/.venv"
    mount --bind "$work/shared" "$root/shared"
    cp "$work/client/.ssh/id_rehearsal.pub" "$root$NODE_HOME/.ssh/authorized_keys"
    ssh-keygen -q -t ed25519 -N '' -f "$root/etc/ssh/rehearsal_host_key"
    cat >"$root/etc/ssh/rehearsal_sshd_config" <<EOF
ListenAddress ${NODE_IP[$name]}
Port 22
HostKey /etc/ssh/rehearsal_host_key
PidFile /run/rehearsal_sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF
    ip netns add "$name"
    ip link add "v-$name" type veth peer name eth0 netns "$name"
    ip link set "v-$name" master br0 up
    ip -n "$name" link set lo up
    ip -n "$name" addr add "${NODE_IP[$name]}/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" route add default via "$CLIENT_IP"
    ip netns exec "$name" unshare --pid --uts --mount --fork --kill-child bash "$SELF" --node "$name" "$root" &
    NODE_PID[$name]=$!
done
for name in head worker; do
    for _ in $(seq 50); do ip netns exec "$name" ss -ltn | grep -q ":22 " && break; sleep 0.2; done
done
node_procs() {  # the processes of a node, its init and the init's sleep aside
    ip netns pids "$1" | while read -r pid; do
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        [[ -z "$args" || "$args" == "/bin/bash -c /usr/sbin/sshd"* || "$args" == "sleep 1 " \
           || "$args" == "unshare "* || "$args" == "bash $SELF --node"* ]] || echo "$pid $args"
    done
}

say "cluster.yaml with the rehearsal's addresses, ssh user and key"
"$PY" - "$REPO/cluster.yaml" "$work/cluster.yaml" "$work/client/.ssh/id_rehearsal" "${NODE_IP[head]}" "${NODE_IP[worker]}" <<'EOF'
import sys, yaml
src, dst, key, head, worker = sys.argv[1:]
config = yaml.safe_load(open(src))
config["provider"].update(head_ip=head, worker_ips=[worker])
config["min_workers"] = config["max_workers"] = 1
config["auth"] = {"ssh_user": "root", "ssh_private_key": key}
yaml.safe_dump(config, open(dst, "w"), sort_keys=False)
EOF
cd "$REPO"  # file_mounts: "." is the project

say "ray up"
t0=$SECONDS
"$RAY" up -y --no-config-cache "$work/cluster.yaml" >"$work/ray_up.log" 2>&1 || { tail -n 40 "$work/ray_up.log"; die "ray up failed"; }
echo "  ray up returned after $((SECONDS - t0)) s"

STORAGE=/shared/sevlm/ray_results
MLFLOW=http://127.0.0.1:5000
say "a quick ablation sweep, submitted with ray exec --tmux as soon as ray up returns"
"$RAY" exec --tmux "$work/cluster.yaml" "cd sevlm-sweeps && .venv/bin/python sweeps/ablations.py \
    --quick --variants baseline,full --seeds 1 --address auto --storage $STORAGE --tracking-uri $MLFLOW \
    --name rehearsal-ablations --gpu off --progress-interval 30 > ~/rehearsal-ablations.log 2>&1" >/dev/null
on_head() { ip netns exec head "$@"; }
check on_head "${CHECKS[@]}" wait-sweep rehearsal-ablations --timeout 420
echo "  the driver's output (on the head):"
sed 's/^/    | /' "$ns/head/root$NODE_HOME/rehearsal-ablations.log" | grep -v '^    | *$' | head -n 40
check "${CHECKS[@]}" sweep-log "$ns/head/root$NODE_HOME/rehearsal-ablations.log" --waited
check on_head "${CHECKS[@]}" trials rehearsal-ablations --count 2 --node "${NODE_IP[worker]}"
check "${CHECKS[@]}" shared-caches "$work/shared/sevlm/ray_results" \
    "$ns/head/root$NODE_HOME/sevlm-sweeps" "$ns/worker/root$NODE_HOME/sevlm-sweeps" \
    --scratch "$ns/worker/root$NODE_HOME/.cache/sevlm-sweeps/trials/rehearsal-ablations"

say "the shared folder's marker and the token on each node"
check "${CHECKS[@]}" token-and-marker "$work/shared/sevlm" "$ns/head/root$NODE_HOME/.ray/auth_token" \
    "$ns/worker/root$NODE_HOME/.ray/auth_token"

say "a machine without the token (this one, ${CLIENT_IP}) can neither join nor run work"
check unshare --pid --fork --mount-proc env -u RAY_AUTH_MODE -u RAY_AUTH_TOKEN -u RAY_AUTH_TOKEN_PATH \
    "${CHECKS[@]}" no-token "${NODE_IP[head]}:6379"

say "trials that this worker cannot run fail at once, with the node named"
"$PY" -m sevlm.data.synthetic_emoset "$ns/head/root$NODE_HOME/emoset-on-head-only" --images-per-emotion 2 >/dev/null
quick_sets="--set data.synthetic_paintings=40 --set eval.max_eval_paintings=4 --set eval.use_meteor=false \
--set eval.max_new_tokens=6 --set train.batch_size=4 --set train.max_steps=2 --set train.eval_every_steps=2"
"$RAY" exec "$work/cluster.yaml" "cd sevlm-sweeps && .venv/bin/python sweeps/alpha_search.py --num-trials 1 \
    --address auto --storage $STORAGE --tracking-uri $MLFLOW --name rehearsal-no-cuda --gpu auto $quick_sets" \
    >"$work/no-cuda.log" 2>&1 || true
check "${CHECKS[@]}" failed-at-once "$work/no-cuda.log" --node "${NODE_IP[worker]}" --cause "cannot use CUDA"
"$RAY" exec "$work/cluster.yaml" "cd sevlm-sweeps && .venv/bin/python sweeps/alpha_search.py --num-trials 1 \
    --address auto --storage $STORAGE --tracking-uri $MLFLOW --name rehearsal-head-only-path --gpu off \
    --heldout emoset:$NODE_HOME/emoset-on-head-only $quick_sets" >"$work/head-only.log" 2>&1 || true
check "${CHECKS[@]}" failed-at-once "$work/head-only.log" --node "${NODE_IP[worker]}" \
    --cause "--heldout = $NODE_HOME/emoset-on-head-only"

say "what listens on each node (ss -ltnp), against the README's port table"
for name in head worker; do
    ip netns exec "$name" ss -ltnpH >"$work/ports-$name.txt"
done
check "${CHECKS[@]}" ports "$REPO/README.md" head="$work/ports-head.txt" worker="$work/ports-worker.txt" \
    --head-ip "${NODE_IP[head]}" --worker-ip "${NODE_IP[worker]}"

say "ray job submit through ray dashboard's tunnel"
setsid "$RAY" dashboard "$work/cluster.yaml" >"$work/dashboard.log" 2>&1 &
tunnel=$!  # its own process group: the ssh it starts goes with it
for _ in $(seq 60); do "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8265', timeout=2)" 2>/dev/null && break; sleep 1; done
"$RAY" rsync-down "$work/cluster.yaml" "~/.ray/auth_token" "$work/client/head_token" >/dev/null 2>&1
t0=$SECONDS
RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$work/client/head_token" "$RAY" job submit --address http://127.0.0.1:8265 \
    -- bash -lc "cd ~/sevlm-sweeps && .venv/bin/python sweeps/ablations.py --quick --variants baseline --seeds 1 \
    --address auto --storage $STORAGE --tracking-uri $MLFLOW --name rehearsal-job --gpu off" \
    >"$work/job.log" 2>&1 || { status=1; echo "  FAILED: ray job submit"; }
echo "  the job took $((SECONDS - t0)) s; its last lines:"
grep -v '^\s*$' "$work/job.log" | tail -n 4 | sed 's/^/    | /'
check grep -q "Job 'raysubmit_.*' succeeded" "$work/job.log"
check on_head "${CHECKS[@]}" trials rehearsal-job --count 1 --node "${NODE_IP[worker]}"
kill -- "-$tunnel" 2>/dev/null || true

say "ray down"
"$RAY" down -y "$work/cluster.yaml" >"$work/ray_down.log" 2>&1 || { status=1; tail -n 20 "$work/ray_down.log"; }
sleep 3
for name in head worker; do  # the rehearsal's own sshd: the one daemon it started there
    for pid in $(ip netns pids "$name"); do
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == sshd ]] && kill "$pid" 2>/dev/null || true
    done
done
sleep 1
for name in head worker; do
    left="$(node_procs "$name")"
    ours="$(grep -E 'ray|gcs_server|mlflow|uvicorn|gunicorn|sshd|default_worker' <<<"$left" | grep -v '^[0-9]* tmux ' || true)"
    if [[ -n "$ours" ]]; then
        echo "  FAILED: left behind on $name after ray down:"; echo "$ours" | sed 's/^/    /'; status=1
    else
        echo "  $name: no Ray, MLflow or sshd process left"
    fi
    others="$(grep -v -F -x -f <(printf '%s\n' "$ours") <<<"$left" | grep -v '^$' || true)"
    if [[ -n "$others" ]]; then
        echo "  also left on $name (ray exec --tmux keeps its tmux session and shell; ray down does not end it):"
        echo "$others" | cut -c1-100 | sed 's/^/    /'
    fi
done
for name in head worker; do kill "${NODE_PID[$name]}" 2>/dev/null || true; done
echo "rehearsal took $((SECONDS - start)) s"
exit $status
