#!/bin/sh
# Stand-in for the official mysql image's entrypoint, on Debian's MariaDB.
# Environment: MYSQL_ROOT_PASSWORD (required), MYSQL_DATABASE (optional), TZ.
set -eu
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) [entrypoint] $*" >&2; }

if [ "${1:-mariadbd}" != "mariadbd" ] && [ "${1:-}" != "mysqld" ]; then
    exec "$@"
fi
if [ -z "${MYSQL_ROOT_PASSWORD:-}" ]; then
    log "error: database is uninitialized and MYSQL_ROOT_PASSWORD is not set; refusing to start"
    exit 1
fi
mkdir -p /run/mysqld "$DATADIR"
SERVER="mariadbd --no-defaults --user=root --datadir=$DATADIR --socket=$SOCKET
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci"

if [ ! -d "$DATADIR/mysql" ]; then
    log "initializing database in $DATADIR"
    mariadb-install-db --no-defaults --user=root --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    $SERVER --skip-networking &
    pid=$!
    i=0
    until mariadb --no-defaults --socket="$SOCKET" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 120 ]; then log "error: temporary server did not start"; exit 1; fi
        sleep 0.5
    done
    pw=$(printf '%s' "$MYSQL_ROOT_PASSWORD" | sed "s/'/''/g")
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';"
        echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$pw';"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --no-defaults --socket="$SOCKET" -uroot
    kill "$pid"
    wait "$pid" || true
    log "database initialized"
fi
log "starting mariadbd on 0.0.0.0:3306"
exec $SERVER --bind-address=0.0.0.0 --port=3306
