"""End to end: backups of llm-chat (SQLite) on the sandbox's prod host (sandbox-1).

Real SSH, real Docker, the real CLI: `inv backup`, `inv restore`, `inv backups`,
`inv schedule-backup`, and cron firing on the host with no controller involved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shlex
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from backup_support import ROOT, BackupHost, Hosts, deploy_stack, inv_cli
from ferry.host import backup as hb

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-1")]
HOST = "sandbox-1"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def chat(sandbox, hosts, tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    deploy_stack(sandbox.inventory, "prod", ROOT / "stacks" / "llm-chat", dist)
    host = BackupHost(hosts, HOST, "llm-chat")
    host.dist = dist / "llm-chat-1.0.0"
    return host


def cli(sandbox, *args, **kw):
    return inv_cli(*args, "-i", str(sandbox.inventory), **kw)


def api(hosts, method: str, path: str, body=None):
    req = urllib.request.Request(f"http://{hosts.ip(HOST)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class Writer(threading.Thread):
    """Keeps POSTing conversations; ``acked`` holds the IDs the API acknowledged."""

    def __init__(self, hosts):
        super().__init__(daemon=True)
        self.hosts, self.acked, self.stop, self.errors = hosts, [], threading.Event(), 0

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.acked.append(api(self.hosts, "POST", "/api/conversations", {"title": f"row {i}"})["id"])
            except OSError:
                self.errors += 1
                time.sleep(0.05)


def test_restore_brings_back_every_row_acknowledged_before_the_backup(sandbox, hosts, chat):
    writer = Writer(hosts)
    writer.start()
    while len(writer.acked) < 50:
        time.sleep(0.05)
    acked_before = set(writer.acked)            # acknowledged before the backup started
    r = cli(sandbox, "backup", "--host", "prod")
    n_during = len(writer.acked)
    time.sleep(0.5)
    writer.stop.set()
    writer.join()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MB/s" in r.stdout and "stored at /var/backups/ferry/llm-chat/" in r.stdout
    assert len(writer.acked) > len(acked_before) and writer.errors == 0     # writes went on throughout
    backup_id = r.stdout.split("backup llm-chat-")[1].split(":")[0]
    backup_id = "llm-chat-" + backup_id
    m = chat.manifest(backup_id)
    assert m.fields["stack"] == "llm-chat" and m.fields["release"] and m.tools["sqlite"]
    assert m.kinds() == {"sqlite", "data", "config"}
    for member in m.members:
        got = chat.sh(f"tar -xOf {chat.dir}/{backup_id}.ferry-backup.tar {member['name']} | sha256sum").split()[0]
        assert got == member["sha256"] and len(got) == 64
    # secrets keep 0600 inside the archive's config tar; the archive itself is 0600
    listing = chat.sh(f"tar -xOf {chat.dir}/{backup_id}.ferry-backup.tar config.tar.gz | tar -tvzf -")
    env_line = [l for l in listing.splitlines() if l.endswith("/.env")][0]
    assert env_line.startswith("-rw-------")
    assert [l for l in listing.splitlines() if l.endswith("secrets.json")][0].startswith("-rw-------")
    assert chat.sh(f"stat -c %a {chat.dir}/{backup_id}.ferry-backup.tar").strip() == "600"

    # wipe: the stack down, the data dir gone
    chat.sh("cd /opt/ferry/stacks/llm-chat/current && docker compose -p llm-chat down && "
            "rm -rf /opt/ferry/stacks/llm-chat/data/db")
    r = cli(sandbox, "restore", "--host", "prod", "--backup", backup_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks passed" in r.stdout and "FAILED" not in r.stdout
    rows = {c["id"] for c in api(hosts, "GET", "/api/conversations")}
    assert acked_before <= rows                                      # every acknowledged row is back
    assert len(rows) <= n_during + 1
    ok = chat.sh("docker exec llm-chat-backend-1 python3 -c \"import sqlite3; "
                 "print(sqlite3.connect('/app/db/chat.db').execute('PRAGMA integrity_check').fetchone()[0])\"")
    assert ok.strip() == "ok"
    v = cli(sandbox, "verify", "--host", "prod")
    assert v.returncode == 0, v.stdout + v.stderr
    # the restore kept the state before it as a safety backup
    assert any(i.endswith("-prerestore") for i in chat.good_ids())


def test_a_flipped_byte_is_refused_naming_the_member_and_nothing_changes(sandbox, chat):
    r = cli(sandbox, "backup", "--host", "prod")
    assert r.returncode == 0, r.stdout + r.stderr
    backup_id = [i for i in chat.good_ids() if not i.endswith("-prerestore")][-1]
    path = f"{chat.dir}/{backup_id}.ferry-backup.tar"
    member = "data/db.tar.gz"
    chat.sh(f"python3 -c \"import tarfile,sys; t=tarfile.open('{path}'); m=t.getmember('{member}'); "
            f"off=m.offset_data + m.size // 2; f=open('{path}','r+b'); f.seek(off); c=f.read(1); f.seek(off); "
            f"f.write(bytes([c[0] ^ 0x01])); f.close()\"")
    before = chat.state()
    r = cli(sandbox, "restore", "--host", "prod", "--backup", backup_id)
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and f"member {member} is damaged" in err, err
    assert chat.state() == before                       # no container touched, no safety backup, no file
    verify = chat.run(f"{chat.script} verify {backup_id}")
    assert verify.rc == 3 and member in verify.err
    chat.sh(f"rm -f {path} {path}.sha256")


def test_a_stopped_service_fails_clearly_and_the_stack_stays_as_it_was(sandbox, chat):
    chat.sh("docker stop llm-chat-backend-1 >/dev/null")
    try:
        before = chat.state()
        r = cli(sandbox, "backup", "--host", "prod")
        assert r.returncode == 1
        assert "service backend of llm-chat is not running" in r.stderr and "nothing was changed" in r.stderr
        assert chat.state() == before
        status = hb.parse_status(chat.sh("cat /opt/ferry/stacks/llm-chat/backup-status/last-run.tsv"))
        assert status["result"] == "failed" and "not running" in status["error"]
    finally:
        chat.sh("docker start llm-chat-backend-1 >/dev/null")
        chat.wait_healthy()


def test_too_little_free_disk_fails_clearly_and_the_stack_stays_as_it_was(sandbox, chat):
    before = chat.state()
    r = cli(sandbox, "backup", "--host", "prod", "--set", f"backup_min_free_bytes={10 ** 15}")
    assert r.returncode == 1
    assert "not enough free disk in /var/backups/ferry/llm-chat" in r.stderr, r.stderr
    after = chat.state()
    assert after == before and all(c[2] == "running" for c in after[0].values())


def test_retention_keeps_exactly_what_the_flags_say_and_never_touches_other_files(sandbox, chat):
    r = cli(sandbox, "backup", "--host", "prod")
    assert r.returncode == 0, r.stderr
    seed = [i for i in chat.good_ids() if not i.endswith("-prerestore")][-1]
    # older backups on other days and weeks: copies of a real archive under Ferry's names
    stamps = ["20260101T010000Z", "20260101T020000Z", "20260102T010000Z", "20260105T010000Z",
              "20260106T010000Z", "20260112T010000Z", "20260120T010000Z", "20260120T030000Z"]
    for s in stamps:
        chat.sh(f"cd {chat.dir} && cp {seed}.ferry-backup.tar llm-chat-{s}.ferry-backup.tar && "
                f"sed 's/{seed}/llm-chat-{s}/' {seed}.ferry-backup.tar.sha256 > llm-chat-{s}.ferry-backup.tar.sha256")
    foreign = ["notes.txt", "llm-chat-manual.tar", "llm-chat-20260101T000000Z.ferry-backup.tar.bak"]
    chat.sh(f"cd {chat.dir} && touch {' '.join(foreign)} && cp {seed}.ferry-backup.tar "
            "llm-chat-20250101T000000Z.ferry-backup.tar")       # unverified (no sidecar): not Ferry's to judge
    for policy in ([("--keep-last", 3), ("--keep-daily", 4), ("--keep-weekly", 3)],
                   [("--keep-last", 2), ("--keep-daily", 0), ("--keep-weekly", 2)],
                   [("--keep-last", 1), ("--keep-daily", 0), ("--keep-weekly", 0)]):
        existing = chat.good_ids()
        r = cli(sandbox, "backup", "--host", "prod", *[str(x) for kv in policy for x in kv])
        assert r.returncode == 0, r.stdout + r.stderr
        new = (set(chat.good_ids()) | set(existing)) - set(existing)
        assert len(new) == 1
        expected = chat.retention_expected(existing + list(new), *(v for _, v in policy))
        assert set(chat.good_ids()) == expected, (policy, chat.good_ids(), expected)
        assert new <= expected                                    # the newest good one is always kept
        files = chat.files()
        assert all(f in files for f in foreign) and "llm-chat-20250101T000000Z.ferry-backup.tar" in files
    assert len(chat.good_ids()) == 1
    chat.sh(f"cd {chat.dir} && rm -f {' '.join(foreign)} llm-chat-20250101T000000Z.ferry-backup.tar")


def test_fetch_checks_sha256_and_restore_from_a_local_file(sandbox, hosts, chat, tmp_path):
    r = cli(sandbox, "backup", "--host", "prod", "--fetch", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    local = sorted(tmp_path.glob("*.ferry-backup.tar"))[0]
    side = (tmp_path / (local.name + ".sha256")).read_text().split()[0]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == side
    assert "(sha256 checked)" in r.stdout
    listing = cli(sandbox, "backups", "--host", "prod")
    assert listing.returncode == 0 and local.name[:20] in listing.stdout
    # the archive is gone from the host: restore it from the controller's copy
    chat.sh(f"rm -f {chat.dir}/{local.name} {chat.dir}/{local.name}.sha256")
    api(hosts, "POST", "/api/conversations", {"title": "after the fetched backup"})
    r = cli(sandbox, "restore", "--host", "prod", "--from", str(local))
    assert r.returncode == 0, r.stdout + r.stderr
    titles = {c["title"] for c in api(hosts, "GET", "/api/conversations")}
    assert "after the fetched backup" not in titles
    assert local.name in chat.files()


def test_cron_fires_on_its_own_and_a_cron_backup_never_runs_with_a_deploy(sandbox, chat):
    host_now = dt.datetime.strptime(chat.sh("date -u +%Y%m%dT%H%M%S").strip(), "%Y%m%dT%H%M%S")
    fire = host_now + dt.timedelta(minutes=2 if host_now.second > 45 else 1)
    cron = f"{fire.minute} {fire.hour} * * *"
    before = set(chat.good_ids())
    r = cli(sandbox, "schedule-backup", "--host", "prod", "--cron", cron, "--keep", "20")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "next run" in r.stdout
    entry = chat.sh("cat /etc/cron.d/ferry-backup-llm-chat")
    assert f"{cron} root {chat.script} backup --scheduled --keep-last 20" in entry and "flock" not in entry
    status_file = "/opt/ferry/stacks/llm-chat/backup-status/last-scheduled.tsv"
    chat.sh(f"rm -f {status_file}")
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and not chat.run(f"test -s {status_file}").ok:
        time.sleep(3)
    status = hb.parse_status(chat.sh(f"cat {status_file}"))
    assert status["result"] == "ok" and status["scheduled"] == "yes", status
    new = set(chat.good_ids()) - before
    assert len(new) == 1
    (new_id,) = new
    assert chat.manifest(new_id).fields["scheduled"] == "yes"
    assert chat.run(f"{chat.script} verify {new_id}").rc == 0
    assert f"id={new_id}" in chat.sh("cat /var/log/ferry/backup-llm-chat.log")
    audit = chat.sh("tail -n 3 /opt/ferry/audit.log")
    assert f'"task": "backup"' in audit and f"scheduled: {new_id}" in audit
    shown = cli(sandbox, "backups", "--host", "prod")
    assert f"schedule: '{cron}' keep-last 20" in shown.stdout and "next run 20" in shown.stdout
    assert "last scheduled run:" in shown.stdout

    # the cron command while a deploy holds the stack's lock: it waits, then runs
    command = entry.strip().splitlines()[-1].split(" root ", 1)[1]
    deploy = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "--host", "prod", "--bundle", str(chat.dist),
         "--set", "client_max_body_size=11m", "-i", str(sandbox.inventory)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    chat.sh("for i in $(seq 600); do grep -q '\"task\": \"deploy\"' /opt/ferry/locks/llm-chat/info.json 2>/dev/null "
            "&& exit 0; sleep 0.1; done; exit 1")
    chat.sh(f"sh -c {shlex.quote(command)}")
    out, err = deploy.communicate(timeout=600)
    assert deploy.returncode == 0, out + err
    status = hb.parse_status(chat.sh(f"cat {status_file}"))
    assert status["result"] == "ok" and int(status["lock_waited"]) >= 1, status
    deploy_done = [json.loads(l) for l in chat.sh("cat /opt/ferry/audit.log").splitlines()
                   if '"task": "deploy"' in l][-1]["time"]
    started = dt.datetime.strptime(status["started"], "%Y-%m-%dT%H:%M:%SZ")
    assert started + dt.timedelta(seconds=int(status["lock_waited"])) >= \
        dt.datetime.strptime(deploy_done, "%Y-%m-%dT%H:%M:%SZ") - dt.timedelta(seconds=1)
    # and a deploy while a cron backup holds the lock is refused, naming it (300 MB of
    # random data keep the backup busy long enough for the deploy to reach the lock)
    chat.sh("mkdir -p /opt/ferry/stacks/llm-chat/data/bulk && "
            "head -c 300000000 /dev/urandom > /opt/ferry/stacks/llm-chat/data/bulk/big.bin")
    chat.sh(f"nohup sh -c {shlex.quote(command)} >/dev/null 2>&1 &")
    chat.sh("for i in $(seq 600); do grep -q 'backup (scheduled)' /opt/ferry/locks/llm-chat/info.json 2>/dev/null "
            "&& exit 0; sleep 0.1; done; exit 1")
    r = cli(sandbox, "deploy", "--host", "prod", "--bundle", str(chat.dist))
    assert r.returncode == 1 and "is locked" in r.stderr and "backup (scheduled)" in r.stderr, r.stderr
    chat.sh("for i in $(seq 600); do [ -e /opt/ferry/locks/llm-chat ] || exit 0; sleep 0.2; done; exit 1")
    assert hb.parse_status(chat.sh(f"cat {status_file}"))["result"] == "ok"
    chat.sh("rm -rf /opt/ferry/stacks/llm-chat/data/bulk")

    r = cli(sandbox, "unschedule-backup", "--host", "prod")
    assert r.returncode == 0 and "schedule removed" in r.stdout
    assert not chat.run("test -e /etc/cron.d/ferry-backup-llm-chat").ok
