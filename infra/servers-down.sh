#!/usr/bin/env bash
# Stop the team servers that infra/servers-up.sh started (idempotent: nothing running is fine):
# the Prefect worker, the Prefect server, the MLflow server, then PostgreSQL. Their data stays in
# $EBMOPS_SERVERS_DIR; `--purge` deletes that folder too (databases, artifacts, logs).
source "$(dirname "${BASH_SOURCE[0]}")/servers-lib.sh"

purge=0
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        *) die "unknown option '$arg' (only --purge)" ;;
    esac
done

if [ ! -d "$SERVERS_DIR" ]; then
    log "nothing to stop: $SERVERS_DIR does not exist"
    exit 0
fi
exec 9>"$SERVERS_DIR/.lock"
flock -w 300 9 || die "another servers-up/down has held $SERVERS_DIR/.lock for 300 s"

stop_group prefect-worker "prefect worker start" 10
stop_group prefect-server "prefect server start" 20
stop_group mlflow "mlflow server" 10
if pg_running; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null \
        || die "postgres did not stop; see $LOG_DIR/postgres.log"
fi
rm -f "$RUN_DIR/postgres.pid"

if [ "$purge" = 1 ]; then
    exec 9>&-
    rm -rf "$SERVERS_DIR"
    log "stopped; removed $SERVERS_DIR"
else
    log "stopped; data and logs kept in $SERVERS_DIR (--purge removes them)"
fi
