"""The backup and restore roles as fixtures: facts in (what the host answers), exact
commands out (pyinfra-style), against the fake transport."""

import hashlib
import io
import json
import tarfile

import pytest

from ferry.errors import HostError
from ferry.host import backup as hb
from ferry.host.transport.fake import FakeTransport
from ferry.model.backup import BackupRequest, RestoreRequest, parse_settings
from ferry.roles import load_role

RELEASE = "20261122T020000.000Z-1.0.0"
SD = "/opt/ferry/stacks/llm-chat"
SCRIPT = f"{SD}/ferry-backup"
SETTINGS = f"{SD}/backup-settings/{RELEASE}.tsv"
CRON = "/etc/cron.d/ferry-backup-llm-chat"
MODEL = {"name": "llm-chat", "services": {
    "backend": {"image": "llm-chat-backend:1.0.0", "volumes": [{"type": "bind", "source": f"{SD}/data/db",
                                                               "target": "/app/db"}]},
    "nginx": {"image": "nginx:1.22", "volumes": [{"type": "volume", "source": "cache", "target": "/var/cache/nginx"}]}},
    "volumes": {"cache": {"name": "llm-chat_cache"}}}


def _tar(found: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in found.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Host:
    """Plays a host: ``installed`` files (absolute paths), answers by command."""

    def __init__(self, installed=None, listing="", program_result=(0, "", "")):
        self.installed = dict(installed or {})
        self.listing, self.program_result = listing, program_result

    def __call__(self, argv, data):
        if argv == hb.current_release_command(PATHS):
            return 0, f"releases/{RELEASE}\n", ""
        if argv == hb.installed_command(PATHS):
            return 0, _tar({k.lstrip("/"): v for k, v in self.installed.items()}), ""
        if argv == hb.compose_config_command("llm-chat", f"{SD}/releases/{RELEASE}"):
            return 0, json.dumps(MODEL), ""
        if argv[0] == "sh" and "cat > " in argv[-1]:
            return 0, "", ""
        if argv == hb.list_command(SCRIPT):
            return 0, self.listing, ""
        if argv[0] == SCRIPT:
            return self.program_result
        if argv[0] == "sh" and "backup-settings" in argv[-1] or argv[:2] == ["mkdir", "-p"]:
            return 0, "", ""
        raise AssertionError(f"unexpected command {argv}")


PATHS = None


@pytest.fixture(autouse=True)
def _paths(make_ctx):
    global PATHS
    PATHS = make_ctx(FakeTransport(lambda a, d: (0, "", ""))).paths


def program() -> bytes:
    return load_role("backup").program()


def writes(t):
    """``(path, mode, bytes)`` of every file written (files.write_file commands)."""
    out = []
    for c in t.calls:
        if c.argv[0] == "sh" and "cat > " in c.argv[-1]:
            script = c.argv[-1]
            out.append((script.split("mv -f ")[1].split()[1].strip("'"), script.split("chmod ")[1].split()[0], c.input))
    return out


def test_install_on_a_fresh_host_writes_program_and_settings_from_composes_model(make_ctx):
    t = FakeTransport(Host())
    ctx = make_ctx(t)
    result = load_role("backup").install(ctx)
    assert result.changed and result.summary == f"installed the backup program, settings ({RELEASE})"
    assert t.commands()[:3] == [hb.current_release_command(ctx.paths), hb.installed_command(ctx.paths),
                                hb.compose_config_command("llm-chat", f"{SD}/releases/{RELEASE}")]
    (p1, m1, d1), (p2, m2, d2) = writes(t)
    assert (p1, m1, d1) == (SCRIPT, "0700", program())
    assert (p2, m2) == (SETTINGS, "0600")
    s = parse_settings(d2)
    assert s["release"] == [[RELEASE]] and s["volume"] == [["cache", "llm-chat_cache"]]
    assert s["sqlite"] == [["backend", "db/chat.db", "/app/db/chat.db"]] and s["lock_dir"] == [["/opt/ferry/locks/llm-chat"]]
    assert s["backup_dir"] == [["/var/backups/ferry/llm-chat"]] and "dump" not in s
    assert ctx.state.backup_plan.sqlite == [("backend", "db/chat.db", "/app/db/chat.db")]
    assert t.commands()[-1][0] == "sh" and "backup-settings" in t.commands()[-1][-1]    # old releases' settings pruned


def test_install_again_is_a_noop_without_compose_config(make_ctx):
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    settings = writes(first)[1][2]
    t = FakeTransport(Host({SCRIPT: program(), SETTINGS: settings}))
    ctx = make_ctx(t)
    result = load_role("backup").install(ctx)
    assert not result.changed and "up to date" in result.summary
    assert t.commands() == [hb.current_release_command(ctx.paths), hb.installed_command(ctx.paths)]


def test_a_changed_variable_rewrites_the_settings_only(make_ctx):
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    settings = writes(first)[1][2]
    t = FakeTransport(Host({SCRIPT: program(), SETTINGS: settings}))
    load_role("backup").install(make_ctx(t, backup_dir="/srv/backups"))
    [(path, mode, data)] = writes(t)
    assert path == SETTINGS and parse_settings(data)["backup_dir"] == [["/srv/backups/llm-chat"]]


def test_a_cron_file_of_an_older_ferry_is_rewritten_with_the_same_schedule(make_ctx):
    old = ("# ferry-schedule: 0 2 * * * keep-last=7 keep-daily=3 keep-weekly=0\n"
           f"0 2 * * * root flock -n -E 75 /run/lock/ferry-backup-llm-chat.lock env X=1 {SCRIPT} backup --scheduled\n")
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    t = FakeTransport(Host({SCRIPT: program(), SETTINGS: writes(first)[1][2], CRON: old.encode()}))
    result = load_role("backup").install(make_ctx(t))
    [(path, mode, data)] = writes(t)
    assert path == CRON and mode == "0644" and result.summary.startswith("installed the backup cron file")
    line = data.decode().splitlines()[-1]
    assert line == (f"0 2 * * * root {SCRIPT} backup --scheduled --keep-last 7 --keep-daily 3 --keep-weekly 0 "
                    ">> /var/log/ferry/backup-llm-chat.log 2>&1") and "flock" not in data.decode()


def test_check_mode_writes_nothing(make_ctx):
    t = FakeTransport(Host())
    result = load_role("backup").run(make_ctx(t, check=True))
    assert result.changed and result.summary == "would install the backup program, settings" and writes(t) == []


def test_not_deployed_is_refused(make_ctx):
    t = FakeTransport(lambda argv, data: (0, "", ""))
    with pytest.raises(HostError, match="'llm-chat' is not deployed here"):
        load_role("backup").run(make_ctx(t))


def test_a_backup_request_runs_the_program_under_the_held_lock(make_ctx):
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    host = Host({SCRIPT: program(), SETTINGS: writes(first)[1][2]},
                program_result=(0, "id=llm-chat-20261122T020000Z\nsize=100\nsource_bytes=400\npruned=1\nkept=2\n", ""))
    t = FakeTransport(host)
    ctx = make_ctx(t)
    ctx.state.backup_request = BackupRequest(keep_last=2, keep_daily=1, locked_by="tok")
    result = load_role("backup").run(ctx)
    assert t.commands()[-1] == [SCRIPT, "backup", "--keep-last", "2", "--keep-daily", "1", "--keep-weekly", "0",
                                "--locked-by", "tok"]
    assert result.metrics["id"] == "llm-chat-20261122T020000Z" and result.metrics["pruned"] == "1"
    host.program_result = (1, "", "ferry-backup: backing up\nferry-backup: error: service qdrant runs qdrant/qdrant:1, "
                                  "a database Ferry cannot dump; ... (nothing was changed)\n")
    with pytest.raises(HostError, match="backup failed: service qdrant runs qdrant/qdrant:1, a database Ferry cannot"):
        load_role("backup").run(ctx)


def test_restore_role_resolves_latest_and_runs_the_program(make_ctx):
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    listing = ("llm-chat-20261122T030000Z-prerestore\t1\tok\tr\t0\t-\n"
               "llm-chat-20261122T020000Z\t1\tdamaged: member data/db.tar.gz is damaged\tr\t0\t-\n"
               "llm-chat-20261121T020000Z\t1\tok\tr\t0\t-\n")
    host = Host({SCRIPT: program(), SETTINGS: writes(first)[1][2]}, listing,
                (0, "safety=llm-chat-20261123T000000Z-prerestore\nrestored=llm-chat-20261121T020000Z\nrelease=r\n", ""))
    t = FakeTransport(host)
    ctx = make_ctx(t)
    ctx.state.restore_request = RestoreRequest("latest", locked_by="tok")
    result = load_role("restore").run(ctx)
    assert t.commands()[-2:] == [hb.list_command(SCRIPT),
                                 [SCRIPT, "restore", "llm-chat-20261121T020000Z", "--locked-by", "tok"]]
    assert result.metrics["safety"] == "llm-chat-20261123T000000Z-prerestore"
    ctx.state.restore_request = RestoreRequest("nope")
    with pytest.raises(HostError, match="no backup 'nope'"):
        load_role("restore").run(ctx)
    host.program_result = (3, "", "ferry-backup: error: x.tar: member data/db.tar.gz is damaged (sha256 a, manifest says b)\n")
    ctx.state.restore_request = RestoreRequest("llm-chat-20261122T020000Z", safety=False)
    with pytest.raises(HostError, match="restore failed: .*member data/db.tar.gz is damaged"):
        load_role("restore").run(ctx)
    assert t.commands()[-1] == [SCRIPT, "restore", "llm-chat-20261122T020000Z", "--no-safety-backup"]


def test_restore_from_a_local_archive_uploads_and_imports_it(make_ctx, tmp_path):
    first = FakeTransport(Host())
    load_role("backup").install(make_ctx(first))
    local = tmp_path / "llm-chat-20261121T020000Z.ferry-backup.tar"
    local.write_bytes(b"archive bytes" * 100)
    (tmp_path / (local.name + ".sha256")).write_text(hashlib.sha256(local.read_bytes()).hexdigest() + "  x\n")
    calls = []

    def host(argv, data):
        if len(argv) > 1 and argv[1] == "import":
            calls.append(argv)
            return 0, "id=llm-chat-20261121T020000Z\n", ""
        return Host({SCRIPT: program(), SETTINGS: writes(first)[1][2]},
                    program_result=(0, "restored=llm-chat-20261121T020000Z\nrelease=r\n", ""))(argv, data)
    t = FakeTransport(host)
    ctx = make_ctx(t)
    ctx.state.restore_request = RestoreRequest(local=local, locked_by="tok")
    load_role("restore").run(ctx)
    sent = [c for c in t.calls if c.streamed]
    assert len(sent) == 1 and sent[0].input == local.read_bytes()
    assert calls[0][:2] == [SCRIPT, "import"] and calls[0][-2:] == ["--locked-by", "tok"]
    assert t.commands()[-1] == [SCRIPT, "restore", "llm-chat-20261121T020000Z", "--locked-by", "tok"]


def test_fetch_checks_the_sha256_on_arrival(make_ctx, tmp_path):
    archive = b"tar bytes" * 1000
    served = {"sidecar": hashlib.sha256(archive).hexdigest()}

    def host(argv, data):
        if argv[1].endswith(".sha256"):
            return 0, f"{served['sidecar']}  x.ferry-backup.tar\n", ""
        return 0, archive, ""
    t = FakeTransport(host)
    local = hb.fetch(t, "/var/backups/ferry/llm-chat", "llm-chat-20261122T020000Z", tmp_path)
    assert local.read_bytes() == archive and oct(local.stat().st_mode)[-3:] == "600"
    served["sidecar"] = "0" * 64
    with pytest.raises(HostError, match="sha256 mismatch on arrival"):
        hb.fetch(t, "/var/backups/ferry/llm-chat", "llm-chat-20261122T020000Z", tmp_path / "other")
    assert not list((tmp_path / "other").iterdir())


def test_schedule_status_reads_cron_file_status_and_host_time(make_ctx):
    ctx = make_ctx(FakeTransport(lambda a, d: (0, "", "")))
    sd = hb.status_dir(ctx.paths).lstrip("/")
    out = b"2026-11-23T20:30:00+0800\n" + _tar({
        CRON.lstrip("/"): b"# ferry-schedule: 0 2 * * * keep-last=7 keep-daily=0 keep-weekly=0\n",
        f"{sd}/last-scheduled.tsv": b"result\tfailed\nerror\tstack llm-chat is locked: held by alice\n",
        f"{sd}/last-run.json": b'{"result": "ok", "archive": "/b/x"}'})
    st = hb.parse_schedule_status(out, ctx.paths, "/var/log/ferry/backup-llm-chat.log")
    assert st.schedule.cron == "0 2 * * *" and st.host_now.utcoffset().total_seconds() == 8 * 3600
    assert st.last_scheduled["error"].startswith("stack llm-chat is locked") and st.last_run["archive"] == "/b/x"
    assert hb.schedule_status_command(ctx.paths)[-1].startswith("date +%Y-%m-%dT%H:%M:%S%z; cd / ")
