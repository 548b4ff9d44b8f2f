#!/usr/bin/env bash
# Start the team servers on this machine (idempotent: what already runs is kept):
#   PostgreSQL 15 -> MLflow tracking server (basic auth, proxied artifacts) -> Prefect server -> a
#   Prefect process worker on the work pool `ebmops`.
# Everything binds to 127.0.0.1. Progress goes to stderr; stdout gets only the client exports, so
#   eval "$(infra/servers-up.sh)"
# points the current shell at the servers. The same lines are kept in $EBMOPS_SERVERS_DIR/env.sh.
# Settings: see infra/servers-lib.sh. Stop with infra/servers-down.sh.
source "$(dirname "${BASH_SOURCE[0]}")/servers-lib.sh"

MLFLOW_BIN="$(bin_of mlflow)"
PREFECT_BIN="$(bin_of prefect)"
PYTHON_BIN="$(bin_of python)"
[ -x "$PG_BIN/pg_ctl" ] || die "PostgreSQL's tools are not in $PG_BIN (set EBMOPS_PG_BIN; Debian: apt-get install postgresql-15)"
"$PYTHON_BIN" -c 'import psycopg2' 2>/dev/null \
    || die "psycopg2 is missing from $VENV (the MLflow server's PostgreSQL driver): run 'make team-install'"
"$PYTHON_BIN" -c 'import flask_wtf' 2>/dev/null \
    || die "Flask-WTF is missing from $VENV (mlflow[auth], needed by MLflow's basic-auth app): run 'make team-install'"
"$PYTHON_BIN" -c 'import asyncpg' 2>/dev/null \
    || die "asyncpg is missing from $VENV (the Prefect server's PostgreSQL driver): run 'make team-install'"
[ "${#MLFLOW_ADMIN_PASSWORD}" -ge 12 ] || die "EBMOPS_MLFLOW_ADMIN_PASSWORD must have at least 12 characters (MLflow's rule)"
case "$MLFLOW_DEFAULT_PERMISSION" in READ|EDIT|MANAGE|NO_PERMISSIONS) ;;
    *) die "EBMOPS_MLFLOW_DEFAULT_PERMISSION must be READ, EDIT, MANAGE or NO_PERMISSIONS, not '$MLFLOW_DEFAULT_PERMISSION'" ;;
esac

mkdir -p "$SERVERS_DIR" "$RUN_DIR" "$LOG_DIR" "$ARTIFACTS_DIR" "$PREFECT_HOME_DIR" "$WORKER_HOME"
chmod 711 "$SERVERS_DIR"
exec 9>"$SERVERS_DIR/.lock"
flock -w 300 9 || die "another servers-up/down has held $SERVERS_DIR/.lock for 300 s"

load_ports --choose
save_ports
client_urls
PG_PASSWORD_Q="$(urlquote "$PG_PASSWORD")"
PG_USER_Q="$(urlquote "$PG_USER")"
db_uri() { printf '%s://%s:%s@%s:%s/%s' "$1" "$PG_USER_Q" "$PG_PASSWORD_Q" "$HOST" "$PG_PORT" "$2"; }

tail_log() { [ -f "$1" ] && tail -n 25 "$1" | sed 's/^/    | /' >&2 || true; }

# wait_ready NAME LOG PID CHECK...: run CHECK until it succeeds; fail naming the log when the
# process exits or READY_TIMEOUT passes.
wait_ready() {
    local name="$1" logfile="$2" pid="$3"; shift 3
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            tail_log "$logfile"
            die "$name exited during startup; see $logfile"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail_log "$logfile"
            die "$name not ready after ${READY_TIMEOUT}s (EBMOPS_SERVERS_TIMEOUT); see $logfile"
        fi
        sleep 1
    done
}

check_port_free() {
    # $1 name, $2 port, $3 env var that sets it
    if port_busy "$2"; then
        die "$1: port $HOST:$2 is taken by another process; set $3 to a free port (or stop that process)"
    fi
}

# start_process NAME LOG COMMAND...: a new session (the process leads its group), stdin closed.
start_process() {
    local name="$1" logfile="$2"; shift 2
    : >>"$logfile"
    printf '\n=== %s start %s ===\n' "$name" "$(date -u +%FT%TZ)" >>"$logfile"
    setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    echo "$!" >"$RUN_DIR/$name.pid"
    STARTED_PID="$!"
}

# --- PostgreSQL ---------------------------------------------------------------------------------
start_postgres() {
    local pglog="$LOG_DIR/postgres.log"
    mkdir -p "$SERVERS_DIR/postgres"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (PostgreSQL's tools refuse root)"
        chown postgres:postgres "$SERVERS_DIR/postgres"
        runuser -u postgres -- test -x "$SERVERS_DIR/postgres" \
            || die "the postgres user cannot enter $SERVERS_DIR/postgres: put EBMOPS_SERVERS_DIR under folders every user may traverse (chmod o+x on each parent)"
        touch "$pglog" && chown postgres:postgres "$pglog"
    fi
    chmod 700 "$SERVERS_DIR/postgres"
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        log "initdb $PGDATA_DIR"
        as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >>"$pglog" 2>&1 \
            || { tail_log "$pglog"; die "initdb failed; see $pglog"; }
    fi
    as_pg mkdir -p "$PGSOCK_DIR"
    as_pg chmod 700 "$PGSOCK_DIR"
    if pg_running; then
        log "postgres already running (port $PG_PORT)"
    else
        check_port_free postgres "$PG_PORT" EBMOPS_PG_PORT
        log "starting postgres on $HOST:$PG_PORT"
        as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -l "$pglog" -w -t "$READY_TIMEOUT" \
            -o "-p $PG_PORT -k $PGSOCK_DIR -c listen_addresses=$HOST" >/dev/null 9>&- \
            || { tail_log "$pglog"; die "postgres did not start; see $pglog"; }
    fi
    head -n 1 "$PGDATA_DIR/postmaster.pid" >"$RUN_DIR/postgres.pid"
    wait_ready postgres "$pglog" "" as_pg "$PG_BIN/pg_isready" -q -h "$PGSOCK_DIR" -p "$PG_PORT"
    # The role (password refreshed on every start) and its databases.
    as_pg "$PG_BIN/psql" -X -q -h "$PGSOCK_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -v role="$PG_USER" -v pw="$PG_PASSWORD" >>"$pglog" 2>&1 <<'SQL' || { tail_log "$pglog"; die "creating the role and databases failed; see $pglog"; }
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', d, :'role') FROM unnest(ARRAY['mlflow', 'mlflow_auth', 'prefect']) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \gexec
SQL
}

# --- MLflow -------------------------------------------------------------------------------------
mlflow_ready() { curl -fsS --max-time 5 "$MLFLOW_URL/health"; }

start_mlflow() {
    local mlog="$LOG_DIR/mlflow.log" pid
    pid="$(read_pid mlflow "mlflow server")"
    if [ -n "$pid" ]; then
        log "mlflow already running (pid $pid, $MLFLOW_URL)"
        wait_ready "mlflow server" "$mlog" "$pid" mlflow_ready
        return
    fi
    check_port_free "mlflow server" "$MLFLOW_PORT" EBMOPS_MLFLOW_PORT
    chmod 700 "$MLFLOW_DIR"
    local secret_file="$MLFLOW_DIR/flask-secret"
    if [ ! -s "$secret_file" ]; then
        (umask 077 && "$PYTHON_BIN" -c 'import secrets; print(secrets.token_hex(32))' >"$secret_file")
    fi
    # configparser reads '%' as interpolation: the URL-quoted password doubles it.
    local auth_db
    auth_db="$(db_uri postgresql+psycopg2 mlflow_auth | sed 's/%/%%/g')"
    (umask 077 && cat >"$MLFLOW_DIR/basic_auth.ini" <<INI)
[mlflow]
default_permission = $MLFLOW_DEFAULT_PERMISSION
database_uri = $auth_db
admin_username = $MLFLOW_ADMIN_USER
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    log "starting mlflow server on $MLFLOW_URL (artifacts: $ARTIFACTS_DIR)"
    start_process mlflow "$mlog" env -u MLFLOW_TRACKING_URI -u MLFLOW_TRACKING_USERNAME -u MLFLOW_TRACKING_PASSWORD \
        MLFLOW_AUTH_CONFIG_PATH="$MLFLOW_DIR/basic_auth.ini" \
        MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_ADMIN_USER" \
        MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_ADMIN_PASSWORD" \
        MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$secret_file")" \
        "$MLFLOW_BIN" server \
        --backend-store-uri "$(db_uri postgresql+psycopg2 mlflow)" \
        --artifacts-destination "$ARTIFACTS_DIR" --serve-artifacts \
        --host "$HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
        --app-name basic-auth
    wait_ready "mlflow server" "$mlog" "$STARTED_PID" mlflow_ready
}

# --- Prefect server and worker -------------------------------------------------------------------
prefect_ready() { curl -fsS --max-time 5 "$PREFECT_API/health"; }

start_prefect() {
    local plog="$LOG_DIR/prefect-server.log" pid
    pid="$(read_pid prefect-server "prefect server start")"
    if [ -n "$pid" ]; then
        log "prefect server already running (pid $pid, $PREFECT_API)"
        wait_ready "prefect server" "$plog" "$pid" prefect_ready
        return
    fi
    check_port_free "prefect server" "$PREFECT_PORT" EBMOPS_PREFECT_PORT
    log "starting prefect server on $PREFECT_API"
    start_process prefect-server "$plog" env -u PREFECT_API_URL -u PREFECT_API_KEY \
        PREFECT_HOME="$PREFECT_HOME_DIR" \
        PREFECT_API_DATABASE_CONNECTION_URL="$(db_uri postgresql+asyncpg prefect)" \
        PREFECT_SERVER_ANALYTICS_ENABLED=false \
        PREFECT_UI_API_URL="$PREFECT_API" \
        "$PREFECT_BIN" server start --host "$HOST" --port "$PREFECT_PORT"
    wait_ready "prefect server" "$plog" "$STARTED_PID" prefect_ready
}

WORKER_NAME="ebmops-worker-$(hostname -s 2>/dev/null || echo local)"

worker_online() {
    curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' -d '{}' \
        "$PREFECT_API/work_pools/$WORK_POOL/workers/filter" | grep -q "\"$WORKER_NAME\""
}

start_worker() {
    local wlog="$LOG_DIR/prefect-worker.log" pid
    pid="$(read_pid prefect-worker "prefect worker start")"
    if [ -n "$pid" ]; then
        log "prefect worker already running (pid $pid, pool $WORK_POOL)"
        wait_ready "prefect worker" "$wlog" "$pid" worker_online
        return
    fi
    log "starting prefect worker '$WORKER_NAME' on pool '$WORK_POOL' (EBMOPS_HOME=$WORKER_HOME)"
    # Flow runs of the deployments (`ebmops deploy`) run in subprocesses of this worker, from this
    # checkout, against the same servers (as the MLflow admin unless EBMOPS_WORKER_MLFLOW_USER is set).
    start_process prefect-worker "$wlog" env -C "$WORKER_HOME" \
        PATH="$VENV/bin:$PATH" \
        PREFECT_HOME="$PREFECT_HOME_DIR" \
        PREFECT_API_URL="$PREFECT_API" \
        MLFLOW_TRACKING_URI="$MLFLOW_URL" \
        MLFLOW_TRACKING_USERNAME="${EBMOPS_WORKER_MLFLOW_USER:-$MLFLOW_ADMIN_USER}" \
        MLFLOW_TRACKING_PASSWORD="${EBMOPS_WORKER_MLFLOW_PASSWORD:-$MLFLOW_ADMIN_PASSWORD}" \
        EBMOPS_HOME="$WORKER_HOME" \
        "$PREFECT_BIN" worker start --pool "$WORK_POOL" --type process --name "$WORKER_NAME"
    wait_ready "prefect worker" "$wlog" "$STARTED_PID" worker_online
}

write_env() {
    (umask 077 && {
        printf 'export MLFLOW_TRACKING_URI=%q\n' "$MLFLOW_URL"
        printf 'export MLFLOW_TRACKING_USERNAME=%q\n' "$MLFLOW_ADMIN_USER"
        printf 'export MLFLOW_TRACKING_PASSWORD=%q\n' "$MLFLOW_ADMIN_PASSWORD"
        printf 'export PREFECT_API_URL=%q\n' "$PREFECT_API"
    } >"$ENV_FILE")
}

start_postgres
start_mlflow
start_prefect
if [ "${EBMOPS_SERVERS_NO_WORKER:-0}" != 1 ]; then start_worker; fi
write_env

log "ready: postgres $HOST:$PG_PORT | mlflow $MLFLOW_URL | prefect $PREFECT_API | pool '$WORK_POOL'"
log "logs in $LOG_DIR; stop with infra/servers-down.sh (make servers-down)"
log "point a shell at them: eval \"\$(make -s servers-env)\"  or  source $ENV_FILE"
cat "$ENV_FILE"
