# shellcheck shell=bash
# Shared by infra/servers-up.sh, servers-down.sh and servers-status.sh (sourced, not run).
#
# The team servers run as plain processes, each with a pid file and a log, under one folder:
#
#   $EBMOPS_SERVERS_DIR (default <repo>/.ebmops-servers)
#     postgres/data        PostgreSQL 15 cluster (owned by the `postgres` user when run as root)
#     postgres/socket      its Unix socket (local admin only; clients use TCP on 127.0.0.1)
#     mlflow/artifacts     the MLflow server's artifact store (clients reach it over HTTP only)
#     mlflow/basic_auth.ini, mlflow/flask-secret   basic-auth configuration (mode 600)
#     worker-home/         EBMOPS_HOME and working folder of the Prefect worker
#     prefect/             PREFECT_HOME of the server and the worker
#     run/*.pid            one pid file per server (each process leads its own process group)
#     logs/*.log           one log per server
#     ports.env            the ports chosen on the first start (kept, so the URLs stay the same)
#     env.sh               the client exports (mode 600: it holds the admin password)
#
# Settings (environment, all optional): EBMOPS_SERVERS_DIR, EBMOPS_PG_PORT, EBMOPS_MLFLOW_PORT,
# EBMOPS_PREFECT_PORT (default: the saved ports, else free ones), EBMOPS_PG_USER / EBMOPS_PG_PASSWORD
# (the role owning the databases), EBMOPS_MLFLOW_ADMIN_USER / EBMOPS_MLFLOW_ADMIN_PASSWORD (MLflow's
# basic-auth admin, created on the first start), EBMOPS_MLFLOW_DEFAULT_PERMISSION (READ, EDIT,
# MANAGE or NO_PERMISSIONS for users without a grant; default READ), EBMOPS_MLFLOW_WORKERS (2),
# EBMOPS_WORK_POOL (ebmops), EBMOPS_SERVERS_TIMEOUT (seconds per readiness wait, 180),
# EBMOPS_SERVERS_NO_WORKER=1 (no Prefect worker), EBMOPS_VENV (<repo>/.venv), EBMOPS_PG_BIN
# (/usr/lib/postgresql/15/bin). The default passwords are for a laptop and tests: set real ones.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVERS_DIR="${EBMOPS_SERVERS_DIR:-$REPO_ROOT/.ebmops-servers}"
case "$SERVERS_DIR" in /*) ;; *) SERVERS_DIR="$PWD/$SERVERS_DIR" ;; esac
SERVERS_DIR="${SERVERS_DIR%/}"

VENV="${EBMOPS_VENV:-$REPO_ROOT/.venv}"
PG_BIN="${EBMOPS_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER="${EBMOPS_PG_USER:-ebmops}"
PG_PASSWORD="${EBMOPS_PG_PASSWORD:-ebmops-dev-password}"
MLFLOW_ADMIN_USER="${EBMOPS_MLFLOW_ADMIN_USER:-admin}"
MLFLOW_ADMIN_PASSWORD="${EBMOPS_MLFLOW_ADMIN_PASSWORD:-ebmops-admin-dev-password}"
MLFLOW_DEFAULT_PERMISSION="${EBMOPS_MLFLOW_DEFAULT_PERMISSION:-READ}"
MLFLOW_WORKERS="${EBMOPS_MLFLOW_WORKERS:-2}"
WORK_POOL="${EBMOPS_WORK_POOL:-ebmops}"
READY_TIMEOUT="${EBMOPS_SERVERS_TIMEOUT:-180}"
HOST=127.0.0.1

PGDATA_DIR="$SERVERS_DIR/postgres/data"
PGSOCK_DIR="$SERVERS_DIR/postgres/socket"
RUN_DIR="$SERVERS_DIR/run"
LOG_DIR="$SERVERS_DIR/logs"
MLFLOW_DIR="$SERVERS_DIR/mlflow"
ARTIFACTS_DIR="$MLFLOW_DIR/artifacts"
PREFECT_HOME_DIR="$SERVERS_DIR/prefect"
WORKER_HOME="$SERVERS_DIR/worker-home"
PORTS_FILE="$SERVERS_DIR/ports.env"
ENV_FILE="$SERVERS_DIR/env.sh"

log() { printf '[servers] %s\n' "$*" >&2; }
die() { printf '[servers] error: %s\n' "$*" >&2; exit 1; }

bin_of() {
    # A tool of the project's virtualenv, else the one on PATH.
    if [ -x "$VENV/bin/$1" ]; then printf '%s\n' "$VENV/bin/$1"
    elif command -v "$1" >/dev/null 2>&1; then command -v "$1"
    else die "'$1' not found in $VENV/bin or on PATH: run 'make team-install' first"
    fi
}

# PostgreSQL's tools refuse to run as root: run them as the `postgres` user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# The pid in run/$1.pid when that process is alive and is still the one started (its command line
# holds $2), so a stale pid file whose number was reused never points at an unrelated process.
read_pid() {
    local pid
    pid="$([ -f "$RUN_DIR/$1.pid" ] && tr -dc '0-9' <"$RUN_DIR/$1.pid" || true)"
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
        printf '%s\n' "$pid"
    fi
}

# 0 when something accepts TCP connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

free_ports() {
    # N distinct free loopback ports.
    "$(bin_of python)" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

urlquote() { "$(bin_of python)" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

load_ports() {
    # Ports: EBMOPS_*_PORT when set, else the ones saved on the first start, else free ones (saved).
    local saved_pg="" saved_mlflow="" saved_prefect=""
    if [ -f "$PORTS_FILE" ]; then
        saved_pg="$(sed -n 's/^PG_PORT=//p' "$PORTS_FILE")"
        saved_mlflow="$(sed -n 's/^MLFLOW_PORT=//p' "$PORTS_FILE")"
        saved_prefect="$(sed -n 's/^PREFECT_PORT=//p' "$PORTS_FILE")"
    fi
    PG_PORT="${EBMOPS_PG_PORT:-$saved_pg}"
    MLFLOW_PORT="${EBMOPS_MLFLOW_PORT:-$saved_mlflow}"
    PREFECT_PORT="${EBMOPS_PREFECT_PORT:-$saved_prefect}"
    if [ -z "$PG_PORT" ] || [ -z "$MLFLOW_PORT" ] || [ -z "$PREFECT_PORT" ]; then
        [ "${1:-}" = "--choose" ] || return 0
        local free
        read -r -a free <<<"$(free_ports 3)"
        PG_PORT="${PG_PORT:-${free[0]}}"
        MLFLOW_PORT="${MLFLOW_PORT:-${free[1]}}"
        PREFECT_PORT="${PREFECT_PORT:-${free[2]}}"
    fi
}

save_ports() {
    printf 'PG_PORT=%s\nMLFLOW_PORT=%s\nPREFECT_PORT=%s\n' "$PG_PORT" "$MLFLOW_PORT" "$PREFECT_PORT" >"$PORTS_FILE"
}

client_urls() {
    MLFLOW_URL="http://$HOST:$MLFLOW_PORT"
    PREFECT_API="http://$HOST:$PREFECT_PORT/api"
}

pg_running() { [ -f "$PGDATA_DIR/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1; }

# Stop the process group led by the pid in run/$1.pid (command line holding $2): TERM, then KILL
# after $3 seconds.
stop_group() {
    local name="$1" pattern="$2" grace="${3:-20}" pid
    pid="$(read_pid "$name" "$pattern")"
    if pid_alive "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local waited=0
        while pid_alive "$pid" && [ "$waited" -lt "$((grace * 4))" ]; do sleep 0.25; waited=$((waited + 1)); done
        if pid_alive "$pid"; then
            log "$name did not stop within ${grace}s: killing its process group"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        # The group's other members (uvicorn workers, flow-run subprocesses) go with it.
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN_DIR/$name.pid"
}
