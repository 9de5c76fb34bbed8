"""End to end: backups of MariaDB and Redis (the test stack tests/e2e/stacks/dbtest,
images built from Debian's packages) on a staging host (sandbox-2), while a loop on
the host keeps writing to both."""

from __future__ import annotations

import pytest

from backup_support import DBTEST, BackupHost, Hosts, deploy_stack, inv_cli
from ferry.host import backup as hb

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-2")]
HOST = "sandbox-2"
WRITER = ("i=0; while [ ! -e /root/stop-writer ]; do i=$((i+1)); "
          "docker exec dbtest-mariadb-1 mariadb -e \"INSERT INTO app.t (id, v) VALUES ($i, 'row $i')\" && "
          "docker exec dbtest-redis-1 redis-cli SET key:$i v$i >/dev/null && echo $i >> /root/acked; done")


@pytest.fixture(scope="module")
def db(sandbox, tmp_path_factory):
    deploy_stack(sandbox.inventory, HOST, DBTEST, tmp_path_factory.mktemp("dist"))
    host = BackupHost(Hosts(sandbox.inventory), HOST, "dbtest")
    yield host
    host.run("touch /root/stop-writer")          # a writer loop left by a failed test ends


def cli(sandbox, *args):
    return inv_cli(*args, "--stack", str(DBTEST), "-i", str(sandbox.inventory))


def test_mariadb_dump_and_redis_rdb_come_back_after_a_wipe(sandbox, db):
    db.sh("docker exec dbtest-mariadb-1 mariadb -e 'CREATE DATABASE IF NOT EXISTS app; "
          "CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB'")
    db.sh("docker exec dbtest-redis-1 sh -c 'echo upload > /uploads/u.txt'; "
          "echo kept > /opt/ferry/stacks/dbtest/data/files/f.txt; rm -f /root/acked /root/stop-writer")
    db.hosts.t(HOST).run(["sh", "-c", "nohup sh -c \"$0\" >/dev/null 2>&1 &", WRITER])
    db.sh("for i in $(seq 300); do [ \"$(wc -l < /root/acked 2>/dev/null || echo 0)\" -ge 20 ] && exit 0; "
          "sleep 0.2; done; exit 1")
    acked_before = set(db.sh("cat /root/acked").split())
    r = cli(sandbox, "backup", "--host", HOST)
    during = set(db.sh("cat /root/acked").split())
    db.sh("touch /root/stop-writer; sleep 2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(during) > len(acked_before)                      # the loop kept writing during the backup
    backup_id = [i for i in db.good_ids() if not i.endswith("-prerestore")][-1]
    m = db.manifest(backup_id)
    assert m.kinds() == {"mysql", "redis", "data", "volume", "config"}
    assert "mariadb-dump" in m.tools["mysqldump"] and m.tools["redis"].startswith("7.")
    dump = db.sh(f"tar -xOf {db.dir}/{backup_id}.ferry-backup.tar mysql/mariadb.sql.gz | gunzip")
    assert "-- Dump completed" in dump and "CREATE TABLE `t`" in dump

    # the dump loads into a scratch MariaDB server as it is
    db.sh(f"tar -xOf {db.dir}/{backup_id}.ferry-backup.tar mysql/mariadb.sql.gz | gunzip > /root/dump.sql; "
          "docker rm -f scratch-mariadb >/dev/null 2>&1; docker run -d --name scratch-mariadb ferry-test/mariadb:10.11 >/dev/null; "
          "for i in $(seq 60); do docker exec scratch-mariadb mariadb-admin ping --silent 2>/dev/null && break; sleep 1; done")
    try:
        n = db.sh("docker exec -i scratch-mariadb mariadb < /root/dump.sql && "
                  "docker exec scratch-mariadb mariadb -N -e 'SELECT COUNT(*) FROM app.t'").strip()
        assert int(n) >= len(acked_before)
    finally:
        db.sh("docker rm -f scratch-mariadb >/dev/null")

    # wipe: containers, named volumes (database, redis, uploads) and the data dir
    db.sh("cd /opt/ferry/stacks/dbtest/current && docker compose -p dbtest down -v && "
          "rm -rf /opt/ferry/stacks/dbtest/data/files && docker volume ls -q | grep -c dbtest_ || true")
    r = cli(sandbox, "restore", "--host", HOST, "--backup", backup_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks passed" in r.stdout
    rows = set(db.sh("docker exec dbtest-mariadb-1 mariadb -N -e 'SELECT id FROM app.t'").split())
    assert acked_before <= rows and rows <= during | {str(max(map(int, during)) + 1)}
    keys = set(db.sh("docker exec dbtest-redis-1 redis-cli --scan --pattern 'key:*'").split())
    assert {f"key:{i}" for i in acked_before} <= keys
    assert db.sh("docker exec dbtest-redis-1 redis-cli GET key:1").strip() == "v1"
    assert db.sh("docker exec dbtest-redis-1 cat /uploads/u.txt").strip() == "upload"
    assert db.sh("cat /opt/ferry/stacks/dbtest/data/files/f.txt").strip() == "kept"
    check = db.sh("docker exec dbtest-mariadb-1 mariadb -N -e 'CHECK TABLE app.t'")
    assert check.split()[-1] == "OK"
    v = inv_cli("verify", "--host", HOST, "--stack", str(DBTEST), "-i", str(sandbox.inventory))
    assert v.returncode == 0, v.stdout + v.stderr


def test_services_declared_to_stop_start_again_even_when_the_backup_is_killed(sandbox, db):
    """`worker` is declared in `backup.stop`: stopped while the files are copied, started
    again when the run ends, here by SIGTERM in the middle of the copy."""
    db.sh("head -c 300000000 /dev/urandom > /opt/ferry/stacks/dbtest/data/files/big.bin")
    try:
        before_files = db.files()
        assert db.containers()["worker"][2] == "running"
        db.sh("nohup /opt/ferry/stacks/dbtest/ferry-backup backup > /root/killed.log 2>&1 &")
        stopped = db.sh("for i in $(seq 300); do "
                        "[ \"$(docker inspect -f '{{.State.Status}}' dbtest-worker-1)\" = exited ] && echo stopped && break; "
                        "sleep 0.1; done").strip()
        assert stopped == "stopped"
        db.sh("pkill -TERM -f '^/bin/bash /opt/ferry/stacks/dbtest/ferry-backup backup'; "
              "for i in $(seq 120); do pgrep -f '^/bin/bash /opt/ferry/stacks/dbtest/ferry-backup' >/dev/null || exit 0; "
              "sleep 0.5; done; exit 1")
        log = db.sh("cat /root/killed.log")
        assert "starting worker again" in log, log
        assert db.containers()["worker"][2] == "running"
        assert db.files() == before_files                     # no archive, no partial, no work dir
        status = hb.parse_status(db.sh("cat /opt/ferry/stacks/dbtest/backup-status/last-run.tsv"))
        assert status["result"] == "failed" and status["error"] == "interrupted by a signal" and status["id"] == ""
    finally:
        db.sh("rm -f /opt/ferry/stacks/dbtest/data/files/big.bin")
    db.wait_healthy()
