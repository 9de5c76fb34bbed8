"""The backup role and ferry.backup's host operations against a fake transport."""

import hashlib
import io
import tarfile

import pytest

from ferry import backup as b
from ferry.errors import HostError
from ferry.roles import load_role
from ferry.controller.composecli import config_json, resolver
from ferry.model.render import render, template_context
from ferry.host.transport.fake import FakeTransport


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def compose(make_ctx):
    """The current release's files as rendered for the context's host."""
    def make(ctx):
        return render(ctx.stack, template_context(ctx.vars, ctx.stack, ctx.paths.for_templates(),
                                                  {"SECRET_KEY": "k"}, ctx.host), ctx.host, resolver())
    return make


class Host:
    """A host holding the current compose file and maybe an installed script."""

    def __init__(self, compose=None, script=None):
        self.files = {}
        self.release = compose or {}
        if compose is not None:
            self.files["current/compose.yml"] = compose["compose.yml"]
        if script is not None:
            self.files["ferry-backup"] = script
        self.written = {}

    def __call__(self, argv, data):
        script = argv[-1]
        if argv[0] == "sh" and "tar -chf" in script:
            return 0, _tar(self.files), ""
        if argv[:2] == ["docker", "compose"] and "config" in argv:     # Compose itself answers
            current = argv[argv.index("--project-directory") + 1]
            return 0, config_json(self.release, argv[argv.index("-p") + 1], current), ""
        if argv[0] == "sh" and "cat > " in script:
            path = script.split("mv -f ")[1].split()[1].strip("'")
            self.written[path] = (data, script.split("chmod ")[1].split()[0])
            return 0, "", ""
        raise AssertionError(argv)


def _target(ctx):
    return b.Target(ctx.t, ctx.stack, ctx.paths, ctx.vars)


def test_role_installs_the_rendered_script_0700_then_is_a_noop(make_ctx, compose):
    host = Host()
    t = FakeTransport(host)
    ctx = make_ctx(t)
    host.release = compose(ctx)
    host.files["current/compose.yml"] = host.release["compose.yml"]
    result = load_role("backup").run(ctx)
    assert result.changed
    data, mode = host.written["/opt/ferry/stacks/llm-chat/ferry-backup"]
    assert mode == "0700" and data.startswith(b"#!/bin/bash") and b"/app/db/chat.db" in data
    host.files["ferry-backup"] = data
    t2 = FakeTransport(host)
    again = load_role("backup").run(make_ctx(t2))
    assert not again.changed and "up to date" in again.summary
    assert not any("cat > " in c.argv[-1] for c in t2.calls)


def test_role_check_mode_writes_nothing(make_ctx, compose):
    host = Host()
    t = FakeTransport(host)
    ctx = make_ctx(t, check=True)
    host.release = compose(ctx)
    host.files["current/compose.yml"] = host.release["compose.yml"]
    result = load_role("backup").run(ctx)
    assert result.changed and result.summary.startswith("would install") and host.written == {}


def test_role_refuses_a_stack_that_is_not_deployed(make_ctx):
    with pytest.raises(HostError, match="not deployed here"):
        load_role("backup").run(make_ctx(FakeTransport(Host())))


def test_run_backup_passes_counts_and_reports_the_scripts_error_line(make_ctx):
    calls = []

    def host(argv, data):
        calls.append(argv)
        if "--min-free" in argv:
            return 1, "", ("ferry-backup: backing up\nferry-backup: error: not enough free disk in "
                           "/var/backups/ferry/llm-chat: 10 bytes free, need 99 (nothing was changed)\n")
        return 0, "id=llm-chat-20261122T020000Z\nsize=100\nsource_bytes=400\npruned=1\nkept=2\n", ""
    ctx = make_ctx(FakeTransport(host))
    out = b.run_backup(_target(ctx), keep_last=2, keep_daily=1)
    assert calls[0] == ["/opt/ferry/stacks/llm-chat/ferry-backup", "backup", "--keep-last", "2",
                        "--keep-daily", "1", "--keep-weekly", "0"]
    assert out["id"] == "llm-chat-20261122T020000Z" and out["pruned"] == "1"
    line = b.summary_line("h", out, 2.0)
    assert "100 B archive from 400 B" in line and "(0.0 MB/s)" in line and "pruned 1" in line
    with pytest.raises(HostError, match="backup failed: not enough free disk"):
        b.run_backup(_target(ctx), min_free=99)


def test_restore_failure_names_the_damaged_member(make_ctx):
    def host(argv, data):
        return 3, "", "ferry-backup: error: x.tar: member data/db.tar.gz is damaged (sha256 a, manifest says b)\n"
    with pytest.raises(HostError, match="restore failed: .*member data/db.tar.gz is damaged"):
        b.restore(_target(make_ctx(FakeTransport(host))), "latest")


def test_resolve_latest_skips_unverified_and_safety_backups(make_ctx):
    listing = ("llm-chat-20261122T030000Z-prerestore\t1\t1\tr\t0\t\n"
               "llm-chat-20261122T020000Z\t1\t0\tr\t0\t\n"
               "llm-chat-20261121T020000Z\t1\t1\tr\t0\t\n")
    target = _target(make_ctx(FakeTransport(lambda argv, data: (0, listing, ""))))
    assert b.resolve_id(target, "latest") == "llm-chat-20261121T020000Z"
    with pytest.raises(HostError, match="no backup 'nope'"):
        b.resolve_id(target, "nope")


def test_fetch_checks_the_sha256_on_arrival(make_ctx, tmp_path):
    archive = b"tar bytes" * 1000
    good = hashlib.sha256(archive).hexdigest()
    served = {"sidecar": good}

    def host(argv, data):
        if argv[1].endswith(".sha256"):
            return 0, f"{served['sidecar']}  x.ferry-backup.tar\n", ""
        return 0, archive, ""
    target = _target(make_ctx(FakeTransport(host)))
    local = b.fetch(target, "llm-chat-20261122T020000Z", tmp_path)
    assert local.read_bytes() == archive and oct(local.stat().st_mode)[-3:] == "600"
    served["sidecar"] = "0" * 64
    with pytest.raises(HostError, match="sha256 mismatch on arrival"):
        b.fetch(target, "llm-chat-20261122T020000Z", tmp_path / "other")
    assert not list((tmp_path / "other").iterdir())


def test_schedule_writes_the_cron_file_and_status_reads_it_back(make_ctx):
    files = {}

    def host(argv, data):
        if argv[0] == "sh" and "cat > " in argv[-1]:
            files["etc/cron.d/ferry-backup-llm-chat"] = data
            return 0, "", ""
        if argv[0] == "sh" and "tar -chf" in argv[-1]:
            files["opt/ferry/stacks/llm-chat/backup-status/last-scheduled.json"] = (
                b'{"result": "failed", "error": "service backend of llm-chat is not running", "finished": "T"}')
            return 0, _tar(files), ""
        return 0, "", ""
    target = _target(make_ctx(FakeTransport(host)))
    text = b.schedule(target, "*/5 * * * *", 3)
    assert "*/5 * * * * root flock -n" in text
    status = b.schedule_status(target)
    assert status["schedule"].cron == "*/5 * * * *" and status["schedule"].keep_last == 3
    lines = b.status_lines(status)
    assert lines[0].startswith("schedule: '*/5 * * * *' keep-last 3")
    assert lines[1] == "last scheduled run: T FAILED: service backend of llm-chat is not running"
