#!/bin/sh
# Initialise the data directory on first start, then run postgres in the foreground as
# the postgres user (setpriv: no su process in between, signals reach postgres).
set -e
export PATH=/usr/lib/postgresql/15/bin:$PATH
D=${PGDATA:-/var/lib/postgresql/data}
mkdir -p "$D" /run/postgresql
chown -R postgres:postgres "$D" /run/postgresql
chmod 0700 "$D"
if [ ! -s "$D/PG_VERSION" ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups initdb -D "$D" -U postgres \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "listen_addresses = '*'" >> "$D/postgresql.conf"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$D/pg_hba.conf"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$D"
