"""Backups, pure parts and the host program itself.

The host program (``files/ferry-backup``) is run here for real, on this machine, for
everything that needs no Docker: retention (its one implementation), listing, deep
verification, pruning, archives of the earlier format, the shared lock, settings read as
data. The plan, settings, manifest and schedule functions are pure.
"""

import datetime as dt
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from ferry.errors import FerryError
from ferry.host import backup as hb
from ferry.model import backup as mb
from ferry.model.compose import parse_model
from ferry.model.stack import load_stack

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "files" / "ferry-backup"
UTC = dt.timezone.utc


def test_the_host_program_passes_shellcheck():
    """Issue 9's acceptance: `ferry-backup` passes shellcheck (Debian's package, installed
    by scripts/bootstrap from debian-packages.txt)."""
    assert shutil.which("shellcheck"), "shellcheck missing: run scripts/bootstrap (debian-packages.txt)"
    res = subprocess.run(["shellcheck", "--severity=style", str(PROGRAM)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


# -- retention: the program's one implementation, against its specification ------------

def keep(ids: list[str], last: int, daily: int, weekly: int) -> set[str]:
    res = subprocess.run(["bash", str(PROGRAM), "retention-keep", str(last), str(daily), str(weekly)],
                         input="\n".join(ids) + "\n", capture_output=True, text=True, check=True)
    return set(res.stdout.split())


def spec(ids: list[str], last: int, daily: int, weekly: int) -> set[str]:
    """restic's rule stated as sets: the N newest; the newest of each of the D most recent
    days that have a backup; the same for W ISO weeks; all if every count is 0; and the
    newest always."""
    when = {i: dt.datetime.strptime(i.rsplit("-", 1)[-1] if i[-1] == "Z" else i.split("-")[-2], "%Y%m%dT%H%M%SZ")
            for i in ids}
    newest_first = sorted(ids, key=lambda i: (when[i], i), reverse=True)
    if last == daily == weekly == 0:
        return set(ids)
    out = set(newest_first[:last]) | {newest_first[0]}
    for count, bucket in ((daily, lambda d: d.date()), (weekly, lambda d: d.isocalendar()[:2])):
        seen = []
        for i in newest_first:
            b = bucket(when[i])
            if b not in seen and len(seen) < count:
                seen.append(b)
                out.add(i)
    return out


def test_retention_hand_cases():
    ids = ["s-20261101T000000Z", "s-20261103T000000Z", "s-20261102T000000Z", "s-20261104T000000Z"]
    assert keep(ids, 2, 0, 0) == {"s-20261104T000000Z", "s-20261103T000000Z"}
    days = ["s-20261110T230000Z", "s-20261110T010000Z", "s-20261108T120000Z", "s-20261108T020000Z",
            "s-20261105T000000Z"]
    # Nov 9 has no backup: it does not use up a day (restic counts days that have backups)
    assert keep(days, 0, 2, 0) == {"s-20261110T230000Z", "s-20261108T120000Z"}
    # 2026-11-22 is a Sunday (ISO week 47), 2026-11-23 a Monday (week 48)
    weeks = ["s-20261123T010000Z", "s-20261122T010000Z", "s-20261116T010000Z", "s-20261115T010000Z"]
    assert keep(weeks, 1, 0, 3) == {"s-20261123T010000Z", "s-20261122T010000Z", "s-20261115T010000Z"}
    assert keep(ids, 0, 0, 0) == set(ids)
    assert keep(["my-app-2-20261101T000000Z-prerestore", "my-app-2-20261102T000000Z"], 1, 0, 0) == \
        {"my-app-2-20261102T000000Z"}


def test_retention_matches_its_specification_on_random_histories():
    rng = random.Random(11)
    base = dt.datetime(2026, 1, 1)
    for _ in range(60):
        stamps = {(base + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 90))).strftime("%Y%m%dT%H%M%SZ")
                  for _ in range(rng.randint(1, 25))}
        ids = [f"llm-chat-{s}" for s in stamps]
        rng.shuffle(ids)
        counts = rng.randint(0, 4), rng.randint(0, 5), rng.randint(0, 4)
        got = keep(ids, *counts)
        assert got == spec(ids, *counts), (counts, sorted(ids))
        assert got                                                  # never empty


def test_backup_ids_and_archive_names():
    assert mb.backup_time("llm-chat-20261122T020000Z", "llm-chat") == dt.datetime(2026, 11, 22, 2, tzinfo=UTC)
    assert mb.backup_time("llm-chat-20261122T020000Z-prerestore", "llm-chat").hour == 2
    for bad in ("llm-chat-2026", "other-20261122T020000Z", "llm-chat-20261122T020000Z-Bad"):
        with pytest.raises(ValueError):
            mb.backup_time(bad, "llm-chat")
    assert not mb.archive_re("llm-chat").match("llm-chat-20261122T020000Z.ferry-backup.tar.partial")


# -- the program on a local backup dir (no Docker needed) ------------------------------

class Host:
    """A fake stack dir and backup dir on this machine, with the real program."""

    def __init__(self, tmp: Path, stack: str = "s"):
        self.stack, self.tmp = stack, tmp
        self.stack_dir = tmp / "stacks" / stack
        self.backups = tmp / "backups" / stack
        self.lock = tmp / "locks" / stack
        (self.stack_dir / "releases" / "r1").mkdir(parents=True)
        (self.stack_dir / "releases" / "r1" / "compose.yml").write_text("services: {}\n")
        (self.stack_dir / "current").symlink_to("releases/r1")
        shutil.copy(PROGRAM, self.stack_dir / "ferry-backup")
        plan = mb.BackupPlan(stack, stack, "r1", str(self.stack_dir), str(self.stack_dir / "data"), "",
                             str(self.stack_dir / "backup-status"), str(self.lock), str(tmp / "audit.log"))
        plan.backup_dir = str(self.backups)
        (self.stack_dir / "backup-settings").mkdir()
        (self.stack_dir / "backup-settings" / "r1.tsv").write_bytes(mb.settings_text(plan))
        self.backups.mkdir(parents=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.stack_dir / "ferry-backup"), *args], capture_output=True, text=True)

    def archive(self, bid: str, members: dict[str, bytes], legacy: bool = False, sidecar: bool = True) -> Path:
        """An archive as the program writes it (format 2), or as the rendered script before
        it did (format 1, manifest.json)."""
        rows = [(n, "data", "", n.split("/")[-1].split(".")[0], len(d), hashlib.sha256(d).hexdigest())
                for n, d in members.items()]
        if legacy:
            lines = ["{", '  "format": 1,', f'  "id": "{bid}",', f'  "stack": "{self.stack}",', '  "release": "r0",',
                     '  "created": "2026-01-01T00:00:00Z",', '  "source_bytes": 7,', '  "tools": {"bash": "5"},',
                     '  "members": [']
            lines += [f'    {{"name": "{n}", "kind": "{k}", "service": "{s}", "target": "{t}", "size": {z}, '
                      f'"sha256": "{h}"}}' + ("," if i < len(rows) - 1 else "") for i, (n, k, s, t, z, h) in enumerate(rows)]
            manifest = ("manifest.json", ("\n".join(lines) + "\n  ]\n}\n").encode())
        else:
            text = "".join("\t".join(r) + "\n" for r in [("format", "2"), ("id", bid), ("stack", self.stack),
                                                          ("release", "r1"), ("created", "2026-01-01T00:00:00Z"),
                                                          ("source_bytes", "7")])
            text += "".join("\t".join(["member", n, k, s or "-", t, str(z), h]) + "\n" for n, k, s, t, z, h in rows)
            manifest = ("manifest.tsv", text.encode())
        path = self.backups / f"{bid}{mb.ARCHIVE_SUFFIX}"
        with tarfile.open(path, "w") as tar:
            for name, data in [manifest, *members.items()]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if sidecar:
            (path.parent / (path.name + ".sha256")).write_text(
                f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
        return path


def flip(path: Path, member: str) -> None:
    with tarfile.open(path) as tar:
        m = tar.getmember(member)
        off = m.offset_data + m.size // 2
    with open(path, "r+b") as f:
        f.seek(off)
        c = f.read(1)
        f.seek(off)
        f.write(bytes([c[0] ^ 1]))


def test_list_reports_ok_unverified_and_damaged_and_verify_names_the_member(tmp_path):
    h = Host(tmp_path)
    h.archive("s-20260101T000000Z", {"data/a.tar.gz": b"a" * 100})
    h.archive("s-20260102T000000Z", {"data/a.tar.gz": b"b" * 100}, sidecar=False)
    bad = h.archive("s-20260103T000000Z", {"data/a.tar.gz": b"c" * 100, "data/b.tar.gz": b"d" * 100})
    flip(bad, "data/b.tar.gz")
    (h.backups / "notes.txt").write_text("not ours")
    res = h.run("list")
    assert res.returncode == 0, res.stderr
    items = hb.parse_backup_list(res.stdout)
    assert [(i.id, i.state) for i in items] == [("s-20260103T000000Z", "ok"), ("s-20260102T000000Z", "unverified"),
                                                ("s-20260101T000000Z", "ok")]
    assert items[0].release == "r1" and items[0].source_bytes == 7
    deep = {i.id: i.state for i in hb.parse_backup_list(h.run("list", "--verify").stdout)}
    assert deep["s-20260103T000000Z"].startswith("damaged: s-20260103T000000Z.ferry-backup.tar: member data/b.tar.gz "
                                                 "is damaged (sha256 ")
    assert deep["s-20260101T000000Z"] == "ok"
    v = h.run("verify", "s-20260103T000000Z")
    assert v.returncode == mb.EXIT_DAMAGED and "member data/b.tar.gz is damaged" in v.stderr
    assert len(v.stderr.strip().splitlines()) == 1


def test_archives_of_the_earlier_format_stay_listable_and_verifiable(tmp_path):
    h = Host(tmp_path)
    h.archive("s-20250101T000000Z", {"data/db.tar.gz": b"x" * 50, "config.tar.gz": b"y" * 10}, legacy=True)
    items = hb.parse_backup_list(h.run("list", "--verify").stdout)
    assert [(i.id, i.state, i.release, i.source_bytes) for i in items] == [("s-20250101T000000Z", "ok", "r0", 7)]
    assert h.run("verify", "s-20250101T000000Z").returncode == 0
    flip(h.backups / f"s-20250101T000000Z{mb.ARCHIVE_SUFFIX}", "data/db.tar.gz")
    v = h.run("verify", "s-20250101T000000Z")
    assert v.returncode == 3 and "member data/db.tar.gz is damaged" in v.stderr


def test_prune_keeps_what_retention_says_and_never_touches_other_files(tmp_path):
    h = Host(tmp_path)
    ids = [f"s-2026010{d}T0{hh}0000Z" for d in (1, 2, 3) for hh in (1, 2)]
    for i in ids:
        h.archive(i, {"data/a.tar.gz": i.encode()})
    h.archive("s-20251231T000000Z", {"data/a.tar.gz": b"u"}, sidecar=False)      # unverified: not judged
    (h.backups / "s-20260101T000000Z.ferry-backup.tar.bak").write_text("x")
    res = h.run("prune", "--keep-last", "1", "--keep-daily", "2")
    assert res.returncode == 0, res.stderr
    left = sorted(p.name for p in h.backups.iterdir())
    assert [n for n in left if n.endswith(".sha256")] == [
        "s-20260102T020000Z.ferry-backup.tar.sha256", "s-20260103T020000Z.ferry-backup.tar.sha256"]
    assert "s-20251231T000000Z.ferry-backup.tar" in left and "s-20260101T000000Z.ferry-backup.tar.bak" in left
    assert "pruned=4" in res.stdout and not h.lock.exists()


def test_the_program_takes_the_stacks_shared_lock_and_refuses_a_held_one(tmp_path):
    h = Host(tmp_path)
    h.archive("s-20260101T000000Z", {"data/a.tar.gz": b"a"})
    h.lock.mkdir(parents=True)
    (h.lock / "info.json").write_text(json.dumps({"who": "alice@laptop", "task": "deploy", "version": "1.2.0",
                                                  "since_iso": "2026-01-01T00:00:00Z", "token": "abc123"}))
    res = h.run("prune", "--keep-last", "1")
    assert res.returncode == mb.EXIT_LOCKED
    assert "stack s is locked: held by alice@laptop since 2026-01-01T00:00:00Z (deploy 1.2.0)" in res.stderr
    # the holder's own run passes its token and goes ahead; the lock stays the holder's
    archive = str(h.backups / f"s-20260101T000000Z{mb.ARCHIVE_SUFFIX}")
    assert h.run("import", archive, "--locked-by", "wrong").returncode == 1
    res = h.run("import", archive, "--locked-by", "abc123")
    assert res.returncode == 0 and "id=s-20260101T000000Z" in res.stdout, res.stderr
    assert (h.lock / "info.json").exists()
    # a host-side run still working for a controller that went away (ferry-activate, or
    # ferry-backup itself) holds <lock>.activating: the holder's own run waits for it too
    import fcntl
    with open(str(h.lock) + ".activating", "a") as busy:
        fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = h.run("import", archive, "--locked-by", "abc123")
        assert res.returncode == 1 and "another host-side run of s (ferry-activate or ferry-backup)" in res.stderr
    # ...but a run started by the run that holds it (restore's safety backup) inherits that
    # open file as fd 8: the flock is its own, it goes ahead
    # (the parent shell stays alive around it, as ferry-backup restore does: no exec of the last command)
    res = subprocess.run(["bash", "-c", 'exec 8>>"$1.activating" && flock -n 8 || exit 99; "$2" import "$3" '
                          '--locked-by abc123; rc=$?; flock -n 8 || exit 98; exit "$rc"', "-", str(h.lock),
                          str(h.stack_dir / "ferry-backup"), archive],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "id=s-20260101T000000Z" in res.stdout, res.stderr
    shutil.rmtree(h.lock)
    assert h.run("prune", "--keep-last", "1").returncode == 0 and not h.lock.exists()


def test_settings_are_read_as_data_never_run(tmp_path):
    h = Host(tmp_path)
    settings = h.stack_dir / "backup-settings" / "r1.tsv"
    settings.write_text(settings.read_text() + "exclude\t$(touch pwned)`touch pwned2`;rm -rf /\n")
    res = h.run("list")
    assert res.returncode == 0, res.stderr
    assert not (Path.cwd() / "pwned").exists() and not (Path.cwd() / "pwned2").exists()
    settings.write_text(settings.read_text() + "evil\tx\n")
    res = h.run("list")
    assert res.returncode == 1 and "unknown setting 'evil'" in res.stderr


# -- the plan --------------------------------------------------------------------------

PATHS = {"stack_dir": "/opt/ferry/stacks/app", "data": "/opt/ferry/stacks/app/data",
         "lock_dir": "/opt/ferry/locks/app", "audit_log": "/opt/ferry/audit.log"}


def stack_with(tmp_path: Path, images: dict[str, str], backup=None, data_dirs=None):
    d = tmp_path / "app"
    (d / "templates").mkdir(parents=True, exist_ok=True)
    (d / "templates" / "compose.yml.j2").write_text("services: {}\n")
    doc = {"name": "app", "version": "1", "images": images,
           "templates": [{"src": "compose.yml.j2", "dest": "compose.yml"}], "data_dirs": data_dirs or []}
    if backup is not None:
        doc["backup"] = backup
    (d / "stack.yml").write_text(yaml.safe_dump(doc))
    return load_stack(d)


def vol(source, target):
    return {"type": "volume", "source": source, "target": target}


def bind(source, target):
    return {"type": "bind", "source": source, "target": target}


def test_plan_covers_every_volume_and_dumps_databases_recognised_by_image(tmp_path):
    images = {"db": "mariadb:11", "cache": "docker.io/library/redis:7-alpine", "pg": "postgres:16@sha256:ab",
              "app": "ghcr.io/acme/app:1", "mongo": "mongo:7"}
    stack = stack_with(tmp_path, images, data_dirs=["uploads"])
    model = {"name": "app", "services": {
        "db": {"image": images["db"], "volumes": [vol("dbdata", "/var/lib/mysql")]},
        "cache": {"image": images["cache"], "volumes": [bind("/opt/ferry/stacks/app/data/redis", "/data")]},
        "pg": {"image": images["pg"], "volumes": [vol("pgdata", "/var/lib/postgresql/data")]},
        "app": {"image": images["app"], "volumes": [vol("files", "/files"),
                                                    bind("/opt/ferry/stacks/app/data/uploads", "/up")]},
        "mongo": {"image": images["mongo"], "volumes": [vol("mongodata", "/data/db")]}},
        "volumes": {"dbdata": {"name": "app_dbdata"}, "pgdata": {"name": "app_pgdata"}, "files": {"name": "app_files"},
                    "mongodata": {"name": "custom-mongo", "external": True}}}
    plan = mb.plan_backup(stack, parse_model(model), "r1", PATHS, {"backup_dir": "/b"})
    assert plan.volumes == [("dbdata", "app_dbdata"), ("files", "app_files"), ("mongodata", "custom-mongo"),
                            ("pgdata", "app_pgdata")]
    assert sorted(plan.dumps) == [("mongo", "mongo", "", ""), ("mysql", "db", "", ""), ("postgres", "pg", "", ""),
                                  ("redis", "cache", "", "")]
    assert sorted(plan.at_rest) == [("cache", "data", "redis"), ("db", "volume", "app_dbdata"),
                                    ("mongo", "volume", "custom-mongo"), ("pg", "volume", "app_pgdata")]
    assert plan.refuse == [] and plan.backup_dir == "/b/app" and plan.scope == "all"
    assert "volume app_files" in plan.coverage() and "volume app_dbdata" not in plan.coverage()


def test_plan_refuses_an_undumpable_database_unless_it_is_stopped_during_the_copy(tmp_path):
    images = {"vec": "qdrant/qdrant:v1.9", "app": "app:1"}
    model = {"services": {"vec": {"image": images["vec"], "volumes": [
        vol("qd", "/qdrant/storage"), bind("/opt/ferry/stacks/app/data/snap", "/snap")]}, "app": {"image": "app:1"}},
        "volumes": {"qd": {"name": "app_qd"}}}
    plan = mb.plan_backup(stack_with(tmp_path, images), parse_model(model), "r1", PATHS, {})
    assert plan.refuse == [("vec", "qdrant/qdrant:v1.9", "volume app_qd"), ("vec", "qdrant/qdrant:v1.9", "data dir snap")]
    stopped = mb.plan_backup(stack_with(tmp_path, images, {"stop": ["vec"]}), parse_model(model), "r1", PATHS, {})
    assert stopped.refuse == [] and stopped.stop == ["vec"]


def test_plan_declared_entries_and_backup_none(tmp_path):
    images = {"backend": "llm-chat-backend:1", "db": "ferry-test/mariadb:10.11", "worker": "redis:7"}
    model = {"services": {"backend": {"image": images["backend"], "volumes": [
        bind("/opt/ferry/stacks/app/data/db", "/app/db")]}, "db": {"image": images["db"]},
        "worker": {"image": images["worker"]}}, "volumes": {}}
    stack = stack_with(tmp_path, images, {"sqlite": [{"service": "backend", "file": "db/chat.db"}],
                                          "mysql": [{"service": "db", "user": "backup", "password_env": "PW"}],
                                          "stop": ["worker"]})
    plan = mb.plan_backup(stack, parse_model(model), "r1", PATHS, {})
    assert plan.sqlite == [("backend", "db/chat.db", "/app/db/chat.db")]
    assert plan.dumps == [("mysql", "db", "backup", "PW")]          # worker is stopped: its files are at rest
    none = mb.plan_backup(stack_with(tmp_path, images, "none"), parse_model(model), "r1", PATHS, {})
    assert none.scope == "config" and not none.volumes and not none.dumps
    assert none.coverage() == ["backup: none in stack.yml: config and secrets only, no data"]
    with pytest.raises(FerryError, match=r"backup.volumes.*'ghost' is not a volume"):
        mb.plan_backup(stack_with(tmp_path, images, {"volumes": ["ghost"]}), parse_model(model), "r1", PATHS, {})
    with pytest.raises(FerryError, match=r"backup.sqlite\[0\].file.*not inside a bind mount"):
        mb.plan_backup(stack_with(tmp_path, images, {"sqlite": [{"service": "db", "file": "x.db"}]}), parse_model(model), "r1",
                       PATHS, {})


def test_settings_are_written_as_data_and_refuse_control_characters(tmp_path):
    stack = stack_with(tmp_path, {"app": "app:1"})
    plan = mb.plan_backup(stack, parse_model({"services": {}, "volumes": {"v": {"name": "app_v"}}}), "r1",
                          {**PATHS, "stack_dir": "/opt/my dir/stacks/app"}, {"backup_dir": "/srv/b'; touch x; '"})
    text = mb.settings_text(plan)
    parsed = mb.parse_settings(text)
    assert parsed["backup_dir"] == [["/srv/b'; touch x; '/app"]] and parsed["volume"] == [["v", "app_v"]]
    assert parsed["status_dir"] == [["/opt/my dir/stacks/app/backup-status"]]
    plan.exclude = ["a\tb"]
    with pytest.raises(FerryError, match="cannot be written"):
        mb.settings_text(plan)


def test_database_kinds_by_image():
    assert mb.database_kind("mysql:latest") == "mysql" and mb.database_kind("bitnami/mariadb:11") == "mysql"
    assert mb.database_kind("pgvector/pgvector:pg16") == "postgres"
    assert mb.database_kind("ferry-test/postgres:15") == "postgres"
    assert mb.database_kind("valkey/valkey:8") == "redis" and mb.database_kind("mongo:7") == "mongo"
    assert mb.database_kind("redis-commander:1") is None and mb.database_kind("nginx:1.22") is None
    assert mb.undumpable_database("milvusdb/milvus:v2.4") and not mb.undumpable_database("mysql:8")


# -- manifest and status parsers -------------------------------------------------------

def test_parse_manifest_both_formats():
    tsv = ("format\t2\nid\ts-20260101T000000Z\nrelease\tr1\ntool\ttar\ttar 1.34\nexclude\tdb\n"
           "member\tdata/a.tar.gz\tdata\t-\ta\t10\t" + "a" * 64 + "\n")
    m = mb.parse_manifest(tsv)
    assert m.format == 2 and m.fields["release"] == "r1" and m.tools == {"tar": "tar 1.34"}
    assert m.members == [{"name": "data/a.tar.gz", "kind": "data", "service": "", "target": "a", "size": 10,
                          "sha256": "a" * 64}]
    old = json.dumps({"format": 1, "id": "x", "release": "r0", "tools": {"bash": "5"},
                      "members": [{"name": "config.tar.gz", "kind": "config", "size": 3, "sha256": "b" * 64}]})
    assert mb.parse_manifest(old).kinds() == {"config"}
    with pytest.raises(ValueError):
        mb.parse_manifest("hello\tworld\n")


def test_parse_status_kv_and_list_and_errors():
    st = hb.parse_status(b"result\tok\nerror\t-\narchive\t/b/x.tar\nsize\t10\n")
    assert st == {"result": "ok", "error": "", "archive": "/b/x.tar", "size": "10"}
    assert hb.parse_status(b'{"result": "failed", "exit": 1}') == {"result": "failed", "exit": "1"}
    assert hb.parse_status(b"") is None
    assert hb.parse_kv("id=x\nsize=10\nnoise line\nBad=1\narchive=/a=b\n") == {"id": "x", "size": "10", "archive": "/a=b"}
    err = "ferry-backup: backing up\nferry-backup: error: service backend of llm-chat is not running\n"
    assert hb.script_error(err, 1) == "service backend of llm-chat is not running"
    assert hb.script_error("", 75) == "exit status 75"


# -- schedules -------------------------------------------------------------------------

@pytest.mark.parametrize("bad, why", [
    ("61 * * * *", "out of range"), ("0 2 * *", "4 fields"), ("0 2 * * * rm -rf /", "8 fields"),
    ("0 2 * * $(id)", "characters cron does not read"), ("@sometimes", "1 fields"), ("0 2 L * *", "'l' is not a name"),
    ("0 2 * * 1#2", "characters"), ("", "0 fields"), ("0 25 * * *", "out of range"), ("0 0 31 2 mon-foo", "'foo'")])
def test_bad_schedules_are_refused_in_one_line(bad, why):
    with pytest.raises(FerryError) as exc:
        mb.check_schedule(bad)
    msg = str(exc.value)
    assert msg.startswith(f"--cron '{bad}': not a valid cron schedule") and why in msg.lower() and "\n" not in msg


def test_good_schedules_and_their_next_run():
    assert mb.check_schedule("0  2 * * *") == "0 2 * * *"
    assert mb.check_schedule("*/15 1-5 * JAN,jul mon-fri") == "*/15 1-5 * JAN,jul mon-fri"
    assert mb.check_schedule("@DAILY") == "@daily"
    tz = dt.timezone(dt.timedelta(hours=8))
    now = dt.datetime(2026, 11, 23, 20, 30, tzinfo=tz)
    assert mb.next_run("0 2 * * *", now) == dt.datetime(2026, 11, 24, 2, 0, tzinfo=tz)
    assert mb.next_run("@hourly", now) == dt.datetime(2026, 11, 23, 21, 0, tzinfo=tz)
    assert mb.next_run("@reboot", now) is None


def test_cron_file_from_the_template_quotes_paths_and_round_trips():
    text = mb.cron_text("llm-chat", "0 2 * * *", "/opt/my dir/stacks/llm-chat/ferry-backup",
                        "/var/log/x y.log", mb.Schedule("0 2 * * *", 7, 3, 2))
    line = [l for l in text.splitlines() if l.startswith("0 2 * * * root ")][0]
    assert line == ("0 2 * * * root '/opt/my dir/stacks/llm-chat/ferry-backup' backup --scheduled --keep-last 7 "
                    "--keep-daily 3 --keep-weekly 2 >> '/var/log/x y.log' 2>&1")
    s = mb.parse_cron_entry(text)
    assert (s.cron, s.keep_last, s.keep_daily, s.keep_weekly) == ("0 2 * * *", 7, 3, 2)
    assert mb.parse_cron_entry("").cron is None
    with pytest.raises(FerryError, match="%"):
        mb.cron_text("s", "@daily", "/opt/50%/ferry-backup", "/l", mb.Schedule("@daily", 1))
    with pytest.raises(FerryError, match="out of range"):
        mb.cron_text("s", "61 * * * *", "/s", "/l", mb.Schedule("x", 1))


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
    ("nothing", "backup"),
])
def test_backup_key_errors_name_file_and_key(tmp_path, backup, key):
    d = _stack(tmp_path, backup)
    with pytest.raises(FerryError) as exc:
        load_stack(d)
    assert str(d / "stack.yml") in str(exc.value) and f"key '{key}'" in str(exc.value)


def test_backup_none_is_an_explicit_opt_out(tmp_path):
    assert load_stack(_stack(tmp_path, "none")).backup.none is True
    assert load_stack(ROOT / "stacks" / "llm-chat").backup.none is False


def test_the_program_file_is_executable_and_static():
    """No Jinja in the program: it is the same file on every host."""
    text = PROGRAM.read_text()
    assert os.access(PROGRAM, os.X_OK) and "{{" not in text.replace("'{{.Mountpoint}}'", "").replace(
        "'{{.Server.Version}}'", "").replace("'{{range .Args}}{{println .}}{{end}}'", "") and "{%" not in text


def test_a_scheduled_run_waits_for_the_lock_then_uses_the_settings_of_the_release_that_runs(tmp_path):
    """A deploy holds the lock and switches the release; the waiting cron run must then
    back up with the new release's settings (here: another backup dir, too little disk
    asked for, so the run stops before any Docker call, naming that dir)."""
    import threading
    import time
    h = Host(tmp_path)
    (h.stack_dir / "releases" / "r2").mkdir()
    (h.stack_dir / "releases" / "r2" / "compose.yml").write_text("services: {}\n")
    plan = mb.BackupPlan("s", "s", "r2", str(h.stack_dir), str(h.stack_dir / "data"), str(tmp_path / "b2"),
                         str(h.stack_dir / "backup-status"), str(h.lock), str(tmp_path / "audit.log"))
    plan.min_free = 10 ** 18
    (h.stack_dir / "backup-settings" / "r2.tsv").write_bytes(mb.settings_text(plan))
    settings = h.stack_dir / "backup-settings" / "r1.tsv"
    settings.write_text(settings.read_text().replace("lock_wait\t1800", "lock_wait\t60"))
    h.lock.mkdir(parents=True)
    (h.lock / "info.json").write_text(json.dumps({"who": "ci@ctl", "task": "deploy", "token": "t0"}))

    def deploy_finishes():
        time.sleep(2)
        (h.stack_dir / "current.new").symlink_to("releases/r2")
        os.replace(h.stack_dir / "current.new", h.stack_dir / "current")
        shutil.rmtree(h.lock)
    threading.Thread(target=deploy_finishes).start()
    res = h.run("backup", "--scheduled")
    assert res.returncode == 1
    assert f"not enough free disk in {tmp_path / 'b2'}" in res.stderr, res.stderr
    status = hb.parse_status((h.stack_dir / "backup-status" / "last-scheduled.tsv").read_bytes())
    assert status["result"] == "failed" and int(status["lock_waited"]) >= 1 and status["scheduled"] == "yes"
    assert not h.lock.exists()                                  # its own lock released
