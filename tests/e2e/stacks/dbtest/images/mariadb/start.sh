#!/bin/sh
# Initialise /var/lib/mysql on first start, then run mariadbd in the foreground.
set -e
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
chown mysql:mysql /var/lib/mysql
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
fi
exec mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=0.0.0.0 --skip-name-resolve
