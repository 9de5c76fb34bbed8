"""End to end: what a backup covers with nothing declared, on sandbox-3.

The test stack tests/e2e/stacks/pgtest runs Debian's real PostgreSQL 15 (a named volume,
nothing under ``backup:``) with ``pull_policy: always`` on an offline host, and an app
container with a ``./uploads`` data dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from backup_support import ROOT, BackupHost, Hosts, deploy_stack, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-3")]
HOST = "sandbox-3"
PGTEST = ROOT / "tests" / "e2e" / "stacks" / "pgtest"


@pytest.fixture(scope="module")
def pg(sandbox, tmp_path_factory):
    deploy_stack(sandbox.inventory, HOST, PGTEST, tmp_path_factory.mktemp("dist"))
    return BackupHost(Hosts(sandbox.inventory), HOST, "pgtest")


def cli(sandbox, *args, stack=PGTEST):
    return inv_cli(*args, "--stack", str(stack), "-i", str(sandbox.inventory))


def psql(pg, sql: str) -> str:
    return pg.sh(f"docker exec -u postgres pgtest-postgres-1 psql -X -q -At -c \"{sql}\"").strip()


def test_postgres_is_dumped_by_default_and_restored_offline_with_row_counts(sandbox, pg):
    psql(pg, "CREATE DATABASE app")
    pg.sh("docker exec -u postgres pgtest-postgres-1 psql -X -q -d app -c "
          "\"CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1234) g\"")
    pg.sh("mkdir -p /opt/ferry/stacks/pgtest/data/uploads && echo kept > /opt/ferry/stacks/pgtest/data/uploads/u.txt")
    r = cli(sandbox, "backup", "--host", HOST)
    assert r.returncode == 0, r.stdout + r.stderr
    backup_id = [i for i in pg.good_ids() if not i.endswith("-prerestore")][-1]
    m = pg.manifest(backup_id)
    assert m.kinds() == {"postgres", "data", "config"}, m.members      # pgdata left out: the dump covers it
    assert "PostgreSQL" in m.tools["pg_dumpall"]
    # wipe everything: containers, the database volume, the data dir
    pg.sh("cd /opt/ferry/stacks/pgtest/current && docker compose -p pgtest down -v && "
          "rm -rf /opt/ferry/stacks/pgtest/data/uploads")
    r = cli(sandbox, "restore", "--host", HOST, "--backup", backup_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--pull never" in r.stdout and "checks passed" in r.stdout
    assert pg.sh("docker exec -u postgres pgtest-postgres-1 psql -X -At -d app -c 'SELECT count(*) FROM t'").strip() \
        == "1234"
    assert pg.sh("cat /opt/ferry/stacks/pgtest/data/uploads/u.txt").strip() == "kept"


def test_a_damaged_archive_makes_backups_exit_1_and_verify_names_the_member(sandbox, pg):
    r = cli(sandbox, "backup", "--host", HOST)
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli(sandbox, "backups", "--host", HOST).returncode == 0
    backup_id = [i for i in pg.good_ids() if not i.endswith("-prerestore")][-1]
    path = f"{pg.dir}/{backup_id}.ferry-backup.tar"
    member = "postgres/postgres.sql.gz"
    pg.sh(f"python3 -c \"import tarfile; t=tarfile.open('{path}'); m=t.getmember('{member}'); "
          f"off=m.offset_data + m.size // 2; f=open('{path}','r+b'); f.seek(off); c=f.read(1); f.seek(off); "
          f"f.write(bytes([c[0] ^ 0x01])); f.close()\"")
    r = cli(sandbox, "backups", "--host", HOST, "--verify")
    assert r.returncode == 1
    assert f"{backup_id}: damaged:" in r.stderr and f"member {member} is damaged" in r.stderr, r.stderr
    r = cli(sandbox, "backups", "--host", HOST, "--verify", "--json")
    [listing] = json.loads(r.stdout)
    states = {b["id"]: (b["state"], b["good"]) for b in listing["backups"]}
    assert r.returncode == 1 and states[backup_id][1] is False and member in states[backup_id][0]
    assert listing["host"] == HOST and listing["problems"] and listing["schedule"]["cron"] is None
    pg.sh(f"rm -f {path}.sha256")                           # no sidecar: unverified
    r = cli(sandbox, "backups", "--host", HOST)
    assert r.returncode == 1 and f"{backup_id}: unverified" in r.stderr, r.stderr
    pg.sh(f"rm -f {path}")
    assert cli(sandbox, "backups", "--host", HOST).returncode == 0


def test_a_bad_cron_expression_is_refused_in_one_line_before_any_connection(sandbox, pg):
    r = cli(sandbox, "schedule-backup", "--host", HOST, "--cron", "61 * * * *")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: --cron '61 * * * *': not a valid cron schedule: [61 * * * *] is not acceptable, out of range"]
    assert not pg.run("test -e /etc/cron.d/ferry-backup-pgtest").ok


def _variant(tmp_path, backup, images=None, name="pgtest"):
    d = tmp_path / name
    shutil.copytree(PGTEST, d, ignore=shutil.ignore_patterns("images"))
    doc = yaml.safe_load((d / "stack.yml").read_text())
    if backup is not None:
        doc["backup"] = backup
    doc["images"].update(images or {})
    (d / "stack.yml").write_text(yaml.safe_dump(doc))
    return d


def test_backup_none_archives_the_config_only(sandbox, pg, tmp_path):
    r = cli(sandbox, "backup", "--host", HOST, stack=_variant(tmp_path, "none"))
    assert r.returncode == 0, r.stdout + r.stderr
    backup_id = [i for i in pg.good_ids() if not i.endswith("-prerestore")][-1]
    assert pg.manifest(backup_id).kinds() == {"config"}
    pg.sh(f"rm -f {pg.dir}/{backup_id}.ferry-backup.tar*")


def test_a_running_database_ferry_cannot_dump_is_refused_with_a_clear_message(sandbox, pg, tmp_path):
    """An image Ferry knows as a database without a dump (here Debian's PostgreSQL under an
    etcd tag): its volume is never tarred live; nothing changes."""
    subprocess.run(["docker", "tag", "ferry-test/postgres:15", "ferry-test/etcd:3"], check=True)
    d = _variant(tmp_path, None, {"postgres": "ferry-test/etcd:3"}, "pgtest")
    deploy_stack(sandbox.inventory, HOST, d, tmp_path / "dist")
    before = pg.state()
    r = cli(sandbox, "backup", "--host", HOST, stack=d)
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert ("service postgres runs ferry-test/etcd:3, a database Ferry cannot dump; copying volume pgtest_pgdata "
            "while it runs would give a torn copy") in err and "(nothing was changed)" in err
    assert pg.state() == before
    deploy_stack(sandbox.inventory, HOST, PGTEST, tmp_path / "dist2")
