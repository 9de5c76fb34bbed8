"""Pure parts of backups: retention (Python and the script's bash agree), parsers, the
cron entry, the stack.yml `backup` key, the script's variables."""

import datetime as dt
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ferry import backup as b
from ferry.errors import FerryError
from ferry.model.compose import parse_model
from ferry.controller.inventory import merge_vars
from ferry.model.paths import HostPaths
from ferry.roles import DEPLOY_ROLES, all_role_defaults
from ferry.model.stack import load_stack
from ferry.controller.composecli import resolver
from ferry.model.render import render_release, template_context

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc


def at(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def ids(*stamps: str) -> list[tuple[str, dt.datetime]]:
    return [(f"s-{x}", at(x)) for x in stamps]


# -- retention -------------------------------------------------------------------------

def test_keep_last_keeps_exactly_the_n_newest_in_any_input_order():
    backups = ids("20261101T000000Z", "20261103T000000Z", "20261102T000000Z", "20261104T000000Z")
    kept = b.retention(backups, keep_last=2)
    assert kept == {"s-20261104T000000Z": ["last"], "s-20261103T000000Z": ["last"]}


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days_that_have_backups():
    backups = ids("20261110T230000Z", "20261110T010000Z", "20261108T120000Z", "20261108T020000Z",
                  "20261105T000000Z")
    kept = b.retention(backups, keep_daily=2)
    # Nov 9 has no backup: it does not use up a day (restic counts days *with* backups)
    assert set(kept) == {"s-20261110T230000Z", "s-20261108T120000Z"}


def test_keep_weekly_uses_iso_weeks_and_reasons_accumulate():
    # 2026-11-22 is a Sunday (ISO week 47), 2026-11-23 a Monday (week 48)
    backups = ids("20261123T010000Z", "20261122T010000Z", "20261116T010000Z", "20261115T010000Z")
    kept = b.retention(backups, keep_last=1, keep_weekly=3)
    assert kept == {"s-20261123T010000Z": ["last", "weekly"], "s-20261122T010000Z": ["weekly"],
                    "s-20261115T010000Z": ["weekly"]}


def test_empty_policy_keeps_everything_and_the_newest_is_always_kept():
    backups = ids("20261101T000000Z", "20261102T000000Z")
    assert set(b.retention(backups)) == {"s-20261101T000000Z", "s-20261102T000000Z"}
    assert b.retention([], keep_last=3) == {}
    with pytest.raises(ValueError):
        b.retention(backups, keep_last=-1)


def test_retention_never_keeps_zero_of_a_non_empty_list():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 12)
        backups = [(f"s-{i}", dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(hours=rng.randint(0, 2000)))
                   for i in range(n)]
        kept = b.retention(backups, rng.randint(0, 3), rng.randint(0, 3), rng.randint(0, 3))
        newest = max(backups, key=lambda x: (x[1], x[0]))[0]
        assert kept and newest in kept


def _script(tmp_path: Path, stack_dir: Path) -> Path:
    stack = load_stack(stack_dir)
    paths = HostPaths("/opt/ferry", stack.name, "")
    v = merge_vars(all_role_defaults(DEPLOY_ROLES + ["backup"]), stack.defaults)
    release = render_release(stack, template_context(v, stack, paths.for_templates(),
                                                     {k: "x" for k in stack.generated_secrets}, "h"), "h", resolver())
    path = tmp_path / "ferry-backup"
    path.write_bytes(b.render_script(b.script_context(stack, release.model, v, paths, "h")))
    return path


def test_the_scripts_bash_retention_agrees_with_the_python_reference(tmp_path):
    """The host applies retention in bash (no Python there); both must pick the same set."""
    script = _script(tmp_path, ROOT / "stacks" / "llm-chat")
    rng = random.Random(11)
    for _ in range(40):
        base = dt.datetime(2026, 1, 1, tzinfo=UTC)
        stamps = sorted({(base + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 90))).strftime("%Y%m%dT%H%M%SZ")
                         for _ in range(rng.randint(1, 25))}, reverse=True)
        backups = [(f"llm-chat-{s}", at(s)) for s in stamps]
        kl, kd, kw = rng.randint(0, 4), rng.randint(0, 5), rng.randint(0, 4)
        out = subprocess.run(["bash", str(script), "retention-keep", str(kl), str(kd), str(kw)],
                             input="\n".join(i for i, _ in backups) + "\n", capture_output=True, text=True, check=True)
        assert set(out.stdout.split()) == set(b.retention(backups, kl, kd, kw)), (kl, kd, kw, stamps)


def test_backup_ids_and_archive_names():
    assert b.backup_time("llm-chat-20261122T020000Z", "llm-chat") == dt.datetime(2026, 11, 22, 2, tzinfo=UTC)
    assert b.backup_time("llm-chat-20261122T020000Z-prerestore", "llm-chat").hour == 2
    for bad in ("llm-chat-2026", "other-20261122T020000Z", "llm-chat-20261122T020000Z-Bad"):
        with pytest.raises(ValueError):
            b.backup_time(bad, "llm-chat")
    assert not b.archive_re("llm-chat").match("llm-chat-20261122T020000Z.ferry-backup.tar.partial")
    assert not b.archive_re("llm-chat").match("notes.txt")


# -- parsers ---------------------------------------------------------------------------

def test_parse_backup_list_and_kv_and_script_error():
    text = ("s-20261122T020000Z\t20480\t1\t20261122T010000Z-1.0.0\t8203\t2026-11-22T02:00:00Z\n"
            "s-20261121T020000Z\t100\t0\t-\t0\t\n\n")
    items = b.parse_backup_list(text)
    assert [i.id for i in items] == ["s-20261122T020000Z", "s-20261121T020000Z"]
    assert items[0].good and items[0].size == 20480 and items[0].source_bytes == 8203
    assert not items[1].good and items[1].release == "-" and items[1].created == ""
    assert b.parse_kv("id=x\nsize=10\nnoise line\nBad=1\narchive=/a=b\n") == {"id": "x", "size": "10", "archive": "/a=b"}
    err = "ferry-backup: backing up\nferry-backup: error: service backend of llm-chat is not running\n"
    assert b.script_error(err, 1) == "service backend of llm-chat is not running"
    assert b.script_error("", 75) == "exit status 75"
    assert b.script_error("tar: oops\n", 2) == "tar: oops"


# -- cron ------------------------------------------------------------------------------

def test_cron_entry_runs_the_script_under_flock_and_round_trips():
    text = b.cron_entry("0 2 * * *", "/opt/ferry/stacks/llm-chat/ferry-backup", "/run/lock/l.lock",
                        "/var/log/ferry/backup-llm-chat.log", 7, 3, 2)
    line = [l for l in text.splitlines() if l.startswith("0 2 * * * root ")][0]
    assert "flock -n -E 75 /run/lock/l.lock" in line
    assert "/opt/ferry/stacks/llm-chat/ferry-backup backup --scheduled --keep-last 7 --keep-daily 3 --keep-weekly 2" in line
    assert ">> /var/log/ferry/backup-llm-chat.log 2>&1" in line and "%" not in line
    s = b.parse_cron_entry(text)
    assert (s.cron, s.keep_last, s.keep_daily, s.keep_weekly) == ("0 2 * * *", 7, 3, 2)
    assert b.parse_cron_entry("").cron is None


@pytest.mark.parametrize("bad", ["0 2 * *", "0 2 * * * rm -rf /", "0 2 * * $(id)", "@sometimes", ""])
def test_cron_entry_refuses_what_is_not_a_schedule(bad):
    with pytest.raises(FerryError, match="cron"):
        b.cron_entry(bad, "/s", "/l", "/log", 1)


def test_cron_entry_quotes_paths():
    text = b.cron_entry("@daily", "/opt/my dir/ferry-backup", "/run/lock/l", "/var/log/x y.log", 1)
    assert "'/opt/my dir/ferry-backup' backup" in text and ">> '/var/log/x y.log'" in text


# -- stack.yml `backup` ----------------------------------------------------------------

def _stack(tmp_path: Path, backup) -> Path:
    d = tmp_path / "s"
    shutil.copytree(ROOT / "stacks" / "llm-chat", d, ignore=shutil.ignore_patterns("images"))
    data = yaml.safe_load((d / "stack.yml").read_text())
    data["backup"] = backup
    (d / "stack.yml").write_text(yaml.safe_dump(data))
    return d


@pytest.mark.parametrize("backup, key", [
    ({"sqlite": [{"service": "nope", "file": "db/x.db"}]}, "backup.sqlite[0].service"),
    ({"sqlite": [{"service": "backend"}]}, "backup.sqlite[0].file"),
    ({"sqlite": [{"service": "backend", "file": "../etc/passwd"}]}, "backup.sqlite[0].file"),
    ({"mysql": [{"service": "backend", "password_env": "A;rm"}]}, "backup.mysql[0].password_env"),
    ({"redis": [{"service": "backend", "extra": 1}]}, "backup.redis[0].extra"),
    ({"volumes": ["bad name"]}, "backup.volumes[0]"),
    ({"stop": ["ghost"]}, "backup.stop[0]"),
    ({"stop": ["backend"], "sqlite": [{"service": "backend", "file": "db/c.db"}]}, "backup.stop"),
    ({"tarball": []}, "backup.tarball"),
    ([1], "backup"),
])
def test_backup_key_errors_name_file_and_key(tmp_path, backup, key):
    d = _stack(tmp_path, backup)
    with pytest.raises(FerryError) as exc:
        load_stack(d)
    assert str(d / "stack.yml") in str(exc.value) and f"key '{key}'" in str(exc.value)


def test_llm_chat_declares_its_sqlite_and_the_script_finds_it_in_the_container(tmp_path):
    stack = load_stack(ROOT / "stacks" / "llm-chat")
    assert stack.backup.sqlite == [{"service": "backend", "file": "db/chat.db"}]
    text = _script(tmp_path, ROOT / "stacks" / "llm-chat").read_text()
    assert "SQLITE=('backend|db/chat.db|/app/db/chat.db' )" in text
    assert "DATA_DIRS=(db )" in text and "BACKUP_DIR=/var/backups/ferry/llm-chat" in text
    assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0


def test_sqlite_container_path_takes_the_longest_bind_mount():
    services = parse_model({"name": "p", "services": {"app": {"volumes": [
        {"type": "bind", "source": "/d/data", "target": "/srv"},
        {"type": "bind", "source": "/d/data/db", "target": "/var/db"},
        {"type": "volume", "source": "named", "target": "/x"}]}}})
    assert b.sqlite_container_path(services, "/d/data", "app", "db/a.db") == "/var/db/a.db"
    assert b.sqlite_container_path(services, "/d/data", "app", "other/a.db") == "/srv/other/a.db"
    with pytest.raises(FerryError, match="not inside a bind mount"):
        b.sqlite_container_path(services, "/elsewhere", "app", "a.db")


def test_script_quotes_every_value_from_the_inventory(tmp_path):
    stack = load_stack(ROOT / "stacks" / "llm-chat")
    paths = HostPaths("/opt/ferry", stack.name, "")
    v = merge_vars(all_role_defaults(DEPLOY_ROLES + ["backup"]), stack.defaults,
                   {"backup_dir": "/srv/b'; touch /tmp/pwned; '", "backup_compress": "$(id)"})
    release = render_release(stack, template_context(v, stack, paths.for_templates(), {"SECRET_KEY": "k"}, "h"), "h",
                             resolver())
    text = b.render_script(b.script_context(stack, release.model, v, paths, "h")).decode()
    assert "BACKUP_DIR='/srv/b'\"'\"'; touch /tmp/pwned; '\"'\"'/llm-chat'" in text
    assert "COMPRESS_PREF='$(id)'" in text
