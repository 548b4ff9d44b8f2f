#!/usr/bin/env bash
# Which team servers run, where, and where their logs are. Exit 0 when all four run, 1 otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/servers-lib.sh"

[ -d "$SERVERS_DIR" ] || { log "no servers folder at $SERVERS_DIR (start with infra/servers-up.sh)"; exit 1; }
load_ports
client_urls
all=0
show() {  # name, pid, where
    if [ -n "$2" ]; then printf '%-15s running  pid %-8s %s\n' "$1" "$2" "$3"
    else printf '%-15s stopped                %s\n' "$1" "$3"; all=1; fi
}
pg_pid=""
if pg_running; then pg_pid="$(head -n 1 "$PGDATA_DIR/postmaster.pid")"; fi
show postgres "$pg_pid" "$HOST:${PG_PORT:-?}  log $LOG_DIR/postgres.log"
show mlflow "$(read_pid mlflow "mlflow server")" "$MLFLOW_URL  log $LOG_DIR/mlflow.log"
show prefect-server "$(read_pid prefect-server "prefect server start")" "$PREFECT_API  log $LOG_DIR/prefect-server.log"
show prefect-worker "$(read_pid prefect-worker "prefect worker start")" "pool ${WORK_POOL}  log $LOG_DIR/prefect-worker.log"
[ "$all" = 0 ] && [ -f "$ENV_FILE" ] && log "client settings: source $ENV_FILE"
exit "$all"
