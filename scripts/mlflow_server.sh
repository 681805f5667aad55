#!/usr/bin/env bash
# The MLflow tracking server of a cluster's head node: start, stop, restart, status.
#
#   scripts/mlflow_server.sh start|stop|restart|status
#
# Only the sweep driver (on the head) talks to this server, so it listens on loopback by
# default; a browser reaches the UI through `ray attach cluster.yaml -p 5000` or
# `ssh -L 5000:127.0.0.1:5000 HEAD` (see the README). The server is started in a session
# of its own and its id goes to a pidfile: `stop` ends that process group and nothing
# else (never `pkill -f` by name: the pattern also matches the shell running the command).
#
# Settings (environment):
#   SEVLM_MLFLOW_DIR    state: mlflow.db, artifacts/, mlflow.pid, server.log
#                       (default ~/sevlm-mlflow)
#   SEVLM_MLFLOW_HOST   address to listen on (default 127.0.0.1; a cluster-internal address
#                       if workers must reach it, never 0.0.0.0)
#   SEVLM_MLFLOW_PORT   port (default 5000)
#   SEVLM_MLFLOW_ALLOWED_HOSTS
#                       Host headers accepted (MLflow's DNS-rebinding protection); default:
#                       this host and port, localhost and 127.0.0.1 on any port (what an
#                       ssh tunnel's browser sends)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SEVLM_MLFLOW_DIR:-$HOME/sevlm-mlflow}"
HOST="${SEVLM_MLFLOW_HOST:-127.0.0.1}"
PORT="${SEVLM_MLFLOW_PORT:-5000}"
ALLOWED="${SEVLM_MLFLOW_ALLOWED_HOSTS:-$HOST:$PORT,localhost:*,127.0.0.1:*}"
PIDFILE="$STATE/mlflow.pid"
LOG="$STATE/server.log"
MLFLOW="$REPO/.venv/bin/mlflow"
PYTHON="$REPO/.venv/bin/python"

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }

# The recorded pid, if that process is still our MLflow server (a pid can be reused).
running_pid() {
    [[ -s "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow" || return 1
    echo "$pid"
}

healthy() {
    "$PYTHON" - "$HOST" "$PORT" <<'EOF'
import sys, urllib.request
host, port = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError:
    sys.exit(1)
EOF
}

start() {
    [[ -x "$MLFLOW" ]] || die "$MLFLOW not found: run 'make install' in $REPO first"
    [[ "$HOST" != "0.0.0.0" && "$HOST" != "::" ]] || \
        die "SEVLM_MLFLOW_HOST=$HOST would expose the unauthenticated server on every interface"
    if pid="$(running_pid)"; then
        echo "MLflow server already running (pid $pid) on http://$HOST:$PORT"
        return 0
    fi
    mkdir -p "$STATE/artifacts"
    # setsid: a session (and process group) of its own, whose id is the server's pid, so
    # that `stop` ends the server and the uvicorn worker it spawns, and a closing ssh
    # session does not. Job execution off: 2 processes instead of ~16.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" server \
        --backend-store-uri "sqlite:///$STATE/mlflow.db" \
        --artifacts-destination "$STATE/artifacts" \
        --host "$HOST" --port "$PORT" --workers 1 \
        --allowed-hosts "$ALLOWED" \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local pid
    pid="$(cat "$PIDFILE")"
    for _ in $(seq 1 120); do
        if healthy; then
            echo "MLflow server running (pid $pid) on http://$HOST:$PORT, store $STATE/mlflow.db"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$LOG" >&2; rm -f "$PIDFILE"; die "the server exited (log: $LOG)"; }
        sleep 1
    done
    tail -n 20 "$LOG" >&2
    die "no answer on http://$HOST:$PORT/health after 120 s (log: $LOG)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        echo "MLflow server not running"
        return 0
    fi
    # The whole process group (the server and its uvicorn worker), until none is left.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "MLflow server stopped (pid $pid)"
}

status() {
    if pid="$(running_pid)"; then
        echo "MLflow server running (pid $pid) on http://$HOST:$PORT"
    else
        echo "MLflow server not running"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) die "usage: $0 start|stop|restart|status" ;;
esac
