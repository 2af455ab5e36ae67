#!/usr/bin/env bash
# .ci/postgres.sh — provide a local PostgreSQL server for the clipcleaner test-suite.
#
# HOW CI USES IT (run as root, no stdin needed):
#
#     bash .ci/postgres.sh && . .ci/pg.env && .venv/bin/python -m pytest
#
# or, equivalently, in one line:
#
#     eval "$(bash .ci/postgres.sh)"
#
# What it does (idempotent — safe to run any number of times):
#   1. installs the Debian `postgresql` package with apt-get if no server binaries exist;
#   2. creates a cluster if none exists and starts it on 127.0.0.1:$PGPORT (default 5432);
#   3. creates (or resets the password of) role $PGUSER_TEST and database $PGDB_TEST;
#   4. writes `export CLIPCLEANER_TEST_PG_URL=...` to .ci/pg.env and prints that same line
#      on stdout (all progress messages go to stderr).
#
# Overridable via environment: PGPORT (5432), PGUSER_TEST (clipcleaner), PGPASS_TEST
# (clipcleaner), PGDB_TEST (clipcleaner_test). The credentials are for a throw-away,
# localhost-only test server; never point this at a real database.
#
# Run it with bash, do not `source` it: it uses `set -euo pipefail`, which would leak
# into (and could terminate) the calling shell.

set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PGPORT="${PGPORT:-5432}"
PGUSER_TEST="${PGUSER_TEST:-clipcleaner}"
PGPASS_TEST="${PGPASS_TEST:-clipcleaner}"
PGDB_TEST="${PGDB_TEST:-clipcleaner_test}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_FILE="$HERE/pg.env"

log() { echo "[postgres.sh] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs packages and controls the cluster)"; exit 1
fi

# 1. install if missing -------------------------------------------------------------------
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql with apt-get"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends postgresql postgresql-client >&2
fi
PGVER="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
log "PostgreSQL major version $PGVER"

# 2. cluster: create if needed, start if down ----------------------------------------------
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}' | grep -qx "$PGVER/main"; then
    log "creating cluster $PGVER/main on port $PGPORT"
    pg_createcluster --port "$PGPORT" "$PGVER" main >&2
fi
CLUSTER_PORT="$(pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="main" {print $3}')"
if [ "$CLUSTER_PORT" != "$PGPORT" ]; then
    log "cluster $PGVER/main uses port $CLUSTER_PORT (PGPORT=$PGPORT requested); using $CLUSTER_PORT"
    PGPORT="$CLUSTER_PORT"
fi
STATUS="$(pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="main" {print $4}')"
if [ "$STATUS" != "online" ]; then
    log "starting cluster $PGVER/main"
    # pg_ctlcluster needs the socket directory; in fresh containers /run may be empty.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    pg_ctlcluster "$PGVER" main start >&2
fi

# wait until it accepts connections (max ~30 s)
for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PGPORT"; then break; fi
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$PGPORT" >&2

# 3. role + database (idempotent) --------------------------------------------------------
psql_admin() { (cd / && su postgres -s /bin/sh -c "psql -X -q -v ON_ERROR_STOP=1 -p $PGPORT $*"); }

psql_admin "-d postgres" >&2 <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${PGUSER_TEST}') THEN
        CREATE ROLE "${PGUSER_TEST}" LOGIN PASSWORD '${PGPASS_TEST}';
    ELSE
        ALTER ROLE "${PGUSER_TEST}" LOGIN PASSWORD '${PGPASS_TEST}';
    END IF;
END
\$\$;
SQL
if ! psql_admin "-d postgres -tA -c \"SELECT 1 FROM pg_database WHERE datname = '${PGDB_TEST}'\"" | grep -q 1; then
    log "creating database $PGDB_TEST"
    psql_admin "-d postgres -c 'CREATE DATABASE \"${PGDB_TEST}\" OWNER \"${PGUSER_TEST}\"'" >&2
fi

# 4. publish the URL ------------------------------------------------------------------------
URL="postgresql+psycopg://${PGUSER_TEST}:${PGPASS_TEST}@127.0.0.1:${PGPORT}/${PGDB_TEST}"
# sanity check over TCP with password auth, the way the tests will connect
PGPASSWORD="$PGPASS_TEST" psql -X -q -h 127.0.0.1 -p "$PGPORT" -U "$PGUSER_TEST" -d "$PGDB_TEST" \
    -tA -c "SELECT 1" >/dev/null
LINE="export CLIPCLEANER_TEST_PG_URL='${URL}'"
printf '%s\n' "$LINE" > "$ENV_FILE"
log "ready; wrote $ENV_FILE"
printf '%s\n' "$LINE"
