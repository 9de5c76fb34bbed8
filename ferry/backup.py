"""Backups of a deployed stack: one script on the host, driven from here or by cron.

The ``backup`` role renders ``roles/backup/templates/ferry-backup.sh.j2`` into
``<stack_dir>/ferry-backup`` (0700) on the host. ``inv backup`` and the cron entry of
``inv schedule-backup`` run that same script, so a scheduled backup needs no
controller. This module holds the pure parts (retention, parsers, the cron line, the
script's variables) and the controller-side operations that call the script over a
:class:`ferry.host.transport.Transport`.

Archive layout on the host (``backup_dir``, default ``/var/backups/ferry/<stack>/``)::

    <stack>-<YYYYmmddTHHMMSSZ>[-<tag>].ferry-backup.tar          0600, plain tar of:
        manifest.json        stack, release, time, tools, every member's size and sha256
        config.tar.gz        releases/<current>/ (.env 0600 in the tar headers), secrets.json
        data/<dir>.tar.gz    each data dir, minus the SQLite files below
        volumes/<v>.tar.gz   each declared Compose named volume
        sqlite/<svc>/<f>.tar.gz  VACUUM INTO / .backup snapshot (integrity_check ok),
                             as a one-file tar with the database's owner and mode
        mysql/<svc>.sql.gz   mariadb-dump --single-transaction of the user databases
        redis/<svc>.rdb.gz   the RDB written by BGSAVE
    <id>.ferry-backup.tar.sha256   sha256sum line; written only after verification

(``.zst`` instead of ``.gz`` when the host has zstd and ``backup_compress`` allows it.)
Only names matching :data:`ARCHIVE_RE` are ever listed, pruned or restored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import posixpath
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import FerryError, HostError
from .resources import data_dir
from ferry.host.files import parse_tar
from ferry.model.paths import HostPaths
from ferry.model.stack import Stack
from ferry.model.compose import ComposeModel, parse_model
from ferry.host import files, shell

ARCHIVE_SUFFIX = ".ferry-backup.tar"
EXIT_DAMAGED = 3
EXIT_LOCKED = 75


def archive_re(stack: str) -> re.Pattern[str]:
    """Names of Ferry's archives of ``stack``: ``<stack>-<YYYYmmddTHHMMSSZ>[-tag]``
    followed by :data:`ARCHIVE_SUFFIX`. Group 1 is the timestamp."""
    return re.compile(rf"^{re.escape(stack)}-(\d{{8}}T\d{{6}}Z)(?:-[a-z0-9]+)?{re.escape(ARCHIVE_SUFFIX)}$")


def backup_time(backup_id: str, stack: str) -> dt.datetime:
    """The UTC time in a backup ID (``llm-chat-20261122T020000Z`` -> 2026-11-22 02:00 UTC).

    Raises:
        ValueError: not an ID of ``stack``.
    """
    m = archive_re(stack).match(backup_id + ARCHIVE_SUFFIX)
    if not m:
        raise ValueError(f"'{backup_id}' is not a backup ID of stack '{stack}'")
    return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


# -- retention -------------------------------------------------------------------------

def retention(backups: Sequence[tuple[str, dt.datetime]], keep_last: int = 0, keep_daily: int = 0,
              keep_weekly: int = 0) -> dict[str, list[str]]:
    """Which backups a keep-last / keep-daily / keep-weekly policy keeps (restic's rules).

    Backups are taken newest first. ``keep_last`` keeps the N newest. ``keep_daily``
    keeps, for the last N days that have a backup, the newest backup of that day
    (UTC days); ``keep_weekly`` the same with ISO weeks. A backup may be kept for
    several reasons. With every count 0 the policy is empty and everything is kept
    (restic's ``forget`` with no policy). The newest backup is always kept, so a
    non-empty input never yields an empty result.

    Args:
        backups: ``(id, time)`` pairs in any order; ``time`` timezone-aware or UTC-naive.
        keep_last, keep_daily, keep_weekly: counts >= 0.

    Returns:
        ``{id: [reasons]}`` for the kept backups only; reasons are ``"last"``,
        ``"daily"``, ``"weekly"``, ``"all"`` (empty policy) or ``"newest"``.

    Raises:
        ValueError: a negative count.
    """
    if min(keep_last, keep_daily, keep_weekly) < 0:
        raise ValueError("retention counts must be >= 0")
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    if keep_last == keep_daily == keep_weekly == 0:
        return {bid: ["all"] for bid, _ in ordered}
    kept: dict[str, list[str]] = {}
    counts = {"last": keep_last, "daily": keep_daily, "weekly": keep_weekly}
    last_bucket: dict[str, Any] = {"daily": None, "weekly": None}
    for i, (bid, when) in enumerate(ordered):
        reasons = []
        if counts["last"] > 0:
            reasons.append("last")
            counts["last"] -= 1
        buckets = {"daily": when.strftime("%Y-%m-%d"), "weekly": "%d-%02d" % when.isocalendar()[:2]}
        for kind, value in buckets.items():
            if counts[kind] > 0 and value != last_bucket[kind]:
                reasons.append(kind)
                counts[kind] -= 1
                last_bucket[kind] = value
        if i == 0 and not reasons:
            reasons.append("newest")
        if reasons:
            kept[bid] = reasons
    return kept


# -- parsers ---------------------------------------------------------------------------

@dataclass
class BackupInfo:
    """One archive on a host, from the script's ``list``.

    Attributes:
        id: ``<stack>-<YYYYmmddTHHMMSSZ>[-tag]``.
        size: archive size in bytes.
        good: verified when it was made (its ``.sha256`` sidecar exists).
        release: the release it holds (``-`` when the manifest is unreadable).
        source_bytes: bytes of data dirs and volumes it was made from.
        created: ISO time from the manifest (``""`` when unreadable).
    """

    id: str
    size: int
    good: bool
    release: str
    source_bytes: int
    created: str


def parse_backup_list(text: str) -> list[BackupInfo]:
    """Parse the script's ``list`` output (tab separated, newest first)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 5 and parts[0]:
            out.append(BackupInfo(parts[0], int(parts[1] or 0), parts[2] == "1", parts[3],
                                  int(parts[4] or 0), parts[5] if len(parts) > 5 else ""))
    return out


def parse_kv(text: str) -> dict[str, str]:
    """``key=value`` lines of the script's stdout (``id=...``, ``size=...``), last wins."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z_]+", key):
            out[key] = value.strip()
    return out


def script_error(stderr: str, rc: int) -> str:
    """The one-line reason of a failed script run: its last ``ferry-backup: error:``
    line, else its last stderr line, else the exit status."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    errors = [l.split("error:", 1)[1].strip() for l in lines if l.startswith("ferry-backup: error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {rc}"


# -- the script and the cron entry -----------------------------------------------------

def sqlite_container_path(model: ComposeModel, data_dir: str, service: str, file: str) -> str:
    """The path inside ``service``'s container of ``data_dir/file`` on the host, from the
    service's bind mounts in Compose's model (the longest mounted source that contains
    the file).

    Raises:
        FerryError: the file is not under any bind mount of the service.
    """
    host_path = posixpath.join(data_dir, file)
    best: tuple[str, str] | None = None
    svc = model.services.get(service)
    for src, target in [(b.source, b.target) for b in (svc.binds if svc else [])]:
        src = src.rstrip("/")
        if host_path.startswith(src + "/") and (best is None or len(src) > len(best[0])):
            best = (src, target)
    if best is None:
        raise FerryError(f"backup.sqlite: {host_path} is not inside a bind mount of service '{service}'")
    return posixpath.join(best[1], host_path[len(best[0]) + 1:])


def backup_dir(variables: dict[str, Any], stack: str) -> str:
    """``<backup_dir>/<stack>`` (``backup_dir`` default ``/var/backups/ferry``)."""
    return posixpath.join(str(variables.get("backup_dir", "/var/backups/ferry")), stack)


def script_path(paths: HostPaths) -> str:
    """``<stack_dir>/ferry-backup``: where the backup role installs the script."""
    return posixpath.join(paths.stack_dir, "ferry-backup")


def status_dir(paths: HostPaths) -> str:
    """``<stack_dir>/backup-status``: the script's ``last-run.json`` / ``last-scheduled.json``."""
    return posixpath.join(paths.stack_dir, "backup-status")


def lock_path(stack: str) -> str:
    """The flock file one backup or restore of ``stack`` holds at a time."""
    return f"/run/lock/ferry-backup-{stack}.lock"


def cron_file(stack: str) -> str:
    """``/etc/cron.d/ferry-backup-<stack>`` (stack names are ``[a-z0-9_-]``, valid for cron.d)."""
    return f"/etc/cron.d/ferry-backup-{stack}"


def log_file(variables: dict[str, Any], stack: str) -> str:
    """``<backup_log_dir>/backup-<stack>.log``: where scheduled runs append their output."""
    return posixpath.join(str(variables.get("backup_log_dir", "/var/log/ferry")), f"backup-{stack}.log")


def script_context(stack: Stack, model: ComposeModel, variables: dict[str, Any], paths: HostPaths,
                   host: str) -> dict[str, Any]:
    """The variables ``ferry-backup.sh.j2`` is rendered with (pure; ``model``: Compose's
    model of the current release, :func:`ferry.model.compose.parse_model`).

    Raises:
        FerryError: a declared SQLite file outside every bind mount of its service.
    """
    spec = stack.backup
    sqlite = [{**e, "container_path": sqlite_container_path(model, paths.data, e["service"], e["file"])}
              for e in spec.sqlite]
    return {
        "stack": stack.name, "project": stack.name, "inventory_hostname": host,
        "stack_dir": paths.stack_dir, "data_dir": paths.data, "backup_dir": backup_dir(variables, stack.name),
        "status_dir": status_dir(paths), "lock": lock_path(stack.name),
        "min_free_bytes": int(variables.get("backup_min_free_bytes", 0)),
        "compress": str(variables.get("backup_compress", "auto")),
        "redis_timeout": int(variables.get("backup_redis_timeout", 300)),
        "wait_timeout": int(variables.get("compose_wait_timeout", 120)),
        "data_dirs": list(stack.data_dirs), "sqlite": sqlite, "mysql": list(spec.mysql),
        "redis": list(spec.redis), "volumes": list(spec.volumes), "stop": list(spec.stop),
        "exclude": list(spec.exclude), "hash_fn": files.HASH_STDIN,
    }


def render_script(context: dict[str, Any]) -> bytes:
    """Render the backup script from :func:`script_context`'s variables.

    Jinja2 comments are ``{=# #=}`` here: ``{#`` is bash (``${#array[@]}``)."""
    import jinja2
    template_dir = data_dir("roles") / "backup" / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False,
                             comment_start_string="{=#", comment_end_string="#=}")
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env.get_template("ferry-backup.sh.j2").render(**context).encode()


_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z]+")


def cron_entry(schedule: str, script: str, lock: str, log: str, keep_last: int, keep_daily: int = 0,
               keep_weekly: int = 0) -> str:
    """The ``/etc/cron.d`` file: ``schedule`` (five fields or ``@daily``...) running
    ``script backup --scheduled`` as root under ``flock -n`` (a run that finds the
    lock held exits 75 and says so in the log), appending to ``log``.

    Raises:
        FerryError: a schedule that is not five cron fields or an ``@`` keyword, or a
            negative count.
    """
    fields = schedule.split()
    ok = (len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields)) or \
        (len(fields) == 1 and fields[0] in ("@hourly", "@daily", "@weekly", "@monthly", "@reboot"))
    if not ok:
        raise FerryError(f"--cron '{schedule}': expected five cron fields (e.g. '0 2 * * *') or @daily")
    if min(keep_last, keep_daily, keep_weekly) < 0:
        raise FerryError("--keep counts must be >= 0")
    q = shlex.quote
    run = (f"flock -n -E {EXIT_LOCKED} {q(lock)} env FERRY_BACKUP_LOCKED={q(lock)} {q(script)} backup --scheduled "
           f"--keep-last {keep_last} --keep-daily {keep_daily} --keep-weekly {keep_weekly} >> {q(log)} 2>&1 "
           f"|| {{ rc=$?; echo \"$(date -u -Iseconds) ferry-backup exit status $rc (75: the previous run still held "
           f"the lock)\" >> {q(log)}; }}")
    assert "%" not in run   # cron turns % into newlines
    return ("# Ferry: scheduled backups of this stack (inv schedule-backup); do not edit.\n"
            "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"# ferry-schedule: {' '.join(fields)} keep-last={keep_last} keep-daily={keep_daily} "
            f"keep-weekly={keep_weekly}\n"
            f"{' '.join(fields)} root {run}\n")


@dataclass
class Schedule:
    """What ``/etc/cron.d/ferry-backup-<stack>`` says (None fields: not scheduled)."""

    cron: str | None
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0


def parse_cron_entry(text: str) -> Schedule:
    """Parse a file written by :func:`cron_entry` (empty text: not scheduled)."""
    m = re.search(r"^# ferry-schedule: (.+?) keep-last=(\d+) keep-daily=(\d+) keep-weekly=(\d+)$", text, re.M)
    if not m:
        return Schedule(None)
    return Schedule(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))


# -- on a host -------------------------------------------------------------------------

@dataclass
class Target:
    """One host and one deployed stack, as the backup commands see them.

    Attributes:
        t: the host's transport.
        stack: the stack definition (its ``backup`` key says what to archive).
        paths: host paths for the stack.
        vars: merged variables (``backup_dir``, ``backup_min_free_bytes``...).
    """

    t: Any
    stack: Stack
    paths: HostPaths
    vars: dict[str, Any]

    @property
    def host(self) -> str:
        """Inventory name of the host."""
        return self.t.host

    @property
    def name(self) -> str:
        """Inventory name of the host (as :class:`ferry.host.session.HostSession`)."""
        return self.t.host

    @property
    def script(self) -> str:
        """Host path of the installed script."""
        return script_path(self.paths)

    @property
    def dir(self) -> str:
        """Host path of this stack's backup directory."""
        return backup_dir(self.vars, self.stack.name)

    def run_script(self, *args: str, timeout: float | None = None):
        """Run the installed script; returns the Result (never raises on exit status)."""
        return self.t.run([self.script, *args], check=False, timeout=timeout)

    def fail(self, res, what: str) -> None:
        """Raise :class:`HostError` ``"<host>: <what>: <the script's error line>"`` when
        ``res`` failed."""
        if not res.ok:
            raise HostError(self.host, f"{what}: {script_error(res.err, res.rc)}")


def install_script(target: Target, check: bool = False) -> tuple[bool, str]:
    """Render the script for the host's current release and write it (0700) when it
    differs from the installed one. Returns ``(changed, summary)``.

    Raises:
        HostError: the stack has no current release on the host.
    """
    p = target.paths
    found = parse_tar(target.t.run(files.read_tar(p.stack_dir, ["current/compose.yml", "ferry-backup"])).stdout)
    if "current/compose.yml" not in found:
        raise HostError(target.host, f"'{target.stack.name}' is not deployed here (no {p.current}/compose.yml)")
    from ferry.host.containers import compose_config
    model = parse_model(json.loads(target.t.run(compose_config(target.stack.name, f"{p.current}/compose.yml",
                                                               p.current)).stdout))
    script = render_script(script_context(target.stack, model, target.vars, p, target.host))
    if found.get("ferry-backup") == script:
        return False, f"backup script up to date ({target.script})"
    if check:
        return True, f"would install {target.script}"
    target.t.run(files.write_file(target.script, 0o700), input=script)
    return True, f"installed {target.script} ({len(script)} bytes)"


def run_backup(target: Target, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
               min_free: int | None = None, timeout: float = 3600) -> dict[str, str]:
    """Run ``ferry-backup backup`` on the host and return its summary.

    Args:
        target: host and stack (the script must be installed: :func:`install_script`).
        keep_last, keep_daily, keep_weekly: prune with these counts after the new archive
            is verified (all 0: no pruning).
        min_free: bytes that must stay free in the backup dir beyond the source size
            (default: ``backup_min_free_bytes``).
        timeout: seconds.

    Returns:
        ``{"id", "archive", "size", "source_bytes", "members", "seconds", "pruned"...}``
        (strings, as the script printed them).

    Raises:
        HostError: the script failed; the message is its error line (a stopped
            service, too little free disk, a failed dump, another run holding the lock).
    """
    args = ["backup"]
    if keep_last or keep_daily or keep_weekly:
        args += ["--keep-last", str(int(keep_last)), "--keep-daily", str(int(keep_daily)),
                 "--keep-weekly", str(int(keep_weekly))]
    if min_free is not None:
        args += ["--min-free", str(int(min_free))]
    res = target.run_script(*args, timeout=timeout)
    target.fail(res, "backup failed")
    return parse_kv(res.out)


def list_backups(target: Target) -> list[BackupInfo]:
    """The stack's archives on the host, newest first (empty when the script or the
    backup dir is not there yet)."""
    res = target.t.run(["sh", "-c", f"[ -x {shell.q(target.script)} ] && {shell.q(target.script)} list || true"])
    return parse_backup_list(res.out)


def resolve_id(target: Target, backup: str) -> str:
    """``latest`` -> the newest verified backup's ID that is not a ``-prerestore``
    safety backup; an ID is checked to exist.

    Raises:
        HostError: no such backup, or no verified backup for ``latest``.
    """
    items = list_backups(target)
    if backup == "latest":
        good = [b for b in items if b.good and not b.id.endswith("-prerestore")]
        if not good:
            raise HostError(target.host, f"no verified backup of {target.stack.name} in {target.dir}")
        return good[0].id
    if backup not in {b.id for b in items}:
        raise HostError(target.host, f"no backup '{backup}' in {target.dir} (see `inv backups`)")
    return backup


def fetch(target: Target, backup_id: str, dest_dir: Path, progress=None) -> Path:
    """Copy an archive to ``dest_dir`` on the controller and check its sha256 against
    the host's ``.sha256`` sidecar (written when the archive was verified).

    Returns:
        The local archive path (its sidecar is written next to it).

    Raises:
        HostError: no sidecar (an unverified archive) or a digest mismatch on arrival
            (the local copy is deleted).
    """
    remote = posixpath.join(target.dir, backup_id + ARCHIVE_SUFFIX)
    side = target.t.run(["cat", remote + ".sha256"], check=False)
    if not side.ok:
        raise HostError(target.host, f"{remote}: no .sha256 (not a verified backup)")
    want = side.out.split()[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    local = dest_dir / (backup_id + ARCHIVE_SUFFIX)
    part = local.with_name(local.name + ".partial")
    h = hashlib.sha256()
    with open(part, "wb") as f:
        part.chmod(0o600)
        for block in target.t.stream(["cat", remote]):
            h.update(block)
            f.write(block)
            if progress:
                progress(len(block))
    if h.hexdigest() != want:
        part.unlink()
        raise HostError(target.host, f"{backup_id}: sha256 mismatch on arrival ({h.hexdigest()} != {want})")
    part.rename(local)
    (dest_dir / (backup_id + ARCHIVE_SUFFIX + ".sha256")).write_text(side.out)
    return local


def upload(target: Target, local: Path) -> str:
    """Send a local archive (``--from``) to the host's backup dir, check it there and
    adopt it under its manifest's ID. A ``.sha256`` file next to ``local`` is checked
    first. Returns the backup ID.

    Raises:
        FerryError: a local sidecar that does not match.
        HostError: the host refuses the archive (a damaged member, named).
    """
    side = local.with_name(local.name + ".sha256")
    if side.exists():
        want = side.read_text().split()[0]
        h = hashlib.sha256()
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want:
            raise FerryError(f"{local}: sha256 {h.hexdigest()} does not match {side}")
    remote = posixpath.join(target.dir, f".upload-{int(time.time())}.tar.partial")

    def chunks() -> Iterable[bytes]:
        with open(local, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")
    target.t.send(files.write_file(remote, 0o600), chunks())
    res = target.run_script("import", remote)
    if not res.ok:
        target.t.run(["rm", "-f", remote], check=False)
        raise HostError(target.host, f"{local.name} refused: {script_error(res.err, res.rc)}")
    return parse_kv(res.out)["id"]


def restore(target: Target, backup: str, safety: bool = True, timeout: float = 3600) -> dict[str, str]:
    """``ferry-backup restore``: verify every member (refusing a damaged archive before
    anything changes), back up the current state (``-prerestore``), stop the stack,
    restore config, data dirs, volumes, SQLite, Redis, start it, load MySQL dumps.

    Returns:
        ``{"restored": id, "release", "safety": id of the safety backup, "seconds"}``.

    Raises:
        HostError: the script's error line, e.g. ``... member data/db.tar.gz is damaged``.
    """
    args = ["restore", backup] + ([] if safety else ["--no-safety-backup"])
    res = target.run_script(*args, timeout=timeout)
    target.fail(res, "restore failed")
    return parse_kv(res.out)


def schedule(target: Target, cron: str, keep_last: int, keep_daily: int = 0, keep_weekly: int = 0) -> str:
    """Install ``/etc/cron.d/ferry-backup-<stack>`` (see :func:`cron_entry`) and make
    sure cron runs. Returns the entry's text. Raises FerryError on a bad schedule."""
    log = log_file(target.vars, target.stack.name)
    text = cron_entry(cron, target.script, lock_path(target.stack.name), log, keep_last, keep_daily, keep_weekly)
    target.t.run(files.mkdirs([posixpath.dirname(log)]))
    target.t.run(files.write_file(cron_file(target.stack.name), 0o644), input=text.encode())
    target.t.run(["sh", "-c", "systemctl enable --now cron >/dev/null 2>&1 || true"], check=False)
    return text


def unschedule(target: Target) -> bool:
    """Remove the cron entry. Returns whether there was one."""
    res = target.t.run(["sh", "-c", f"[ -e {shell.q(cron_file(target.stack.name))} ] && "
                                    f"rm -f {shell.q(cron_file(target.stack.name))} && echo removed || true"])
    return "removed" in res.out


def schedule_status(target: Target) -> dict[str, Any]:
    """The schedule and the last runs, for ``inv backups`` and ``inv status``.

    Returns:
        ``{"schedule": Schedule, "last_run": dict | None, "last_scheduled": dict | None,
        "log": path}``; each run dict is the script's status JSON (``result`` ``ok`` or
        ``failed``, ``error``, ``archive``, ``size`` in bytes, ``seconds``, ``started``,
        ``finished``).
    """
    sd = status_dir(target.paths)
    found = parse_tar(target.t.run(files.read_tar("/", [cron_file(target.stack.name).lstrip("/"),
                                                      f"{sd}/last-run.json".lstrip("/"),
                                                      f"{sd}/last-scheduled.json".lstrip("/")])).stdout)

    def load(name: str) -> dict | None:
        data = found.get(f"{sd}/{name}".lstrip("/"))
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None
    return {"schedule": parse_cron_entry(found.get(cron_file(target.stack.name).lstrip("/"), b"").decode()),
            "last_run": load("last-run.json"), "last_scheduled": load("last-scheduled.json"),
            "log": log_file(target.vars, target.stack.name)}


# -- controller side: hosts, summaries -------------------------------------------------

@contextlib.contextmanager
def open_targets(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> Iterator[list[Target]]:
    """Connect to every host ``pattern`` selects and yield a :class:`Target` per host
    (closed on exit). Variables: role defaults < stack defaults < group/host vars <
    ``sets``, checked for every host before any connection.

    Raises:
        FerryError: bad inventory, pattern or stack; an unreachable host.
    """
    from ferry.controller.inventory import Inventory
    from .actions.common import host_variables
    from .model.stack import load_stack
    from ferry.host.transport.ssh import connect_host
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    stack = load_stack(stack_dir)
    variables = {h.name: host_variables(h, stack, sets) for h in hosts}
    out: list[Target] = []
    try:
        for h in hosts:
            v = variables[h.name]
            out.append(Target(connect_host(h, inventory), stack, HostPaths(str(v["ferry_root"]), stack.name, ""), v))
        yield out
    finally:
        for target in out:
            target.t.close()


def verify_stack(target: Target) -> list:
    """:func:`ferry.host.verify.verify_host` on the host's current release (a list of
    :class:`ferry.host.verify.Check`)."""
    from ferry.host.verify import settle_seconds, verify_host
    found = parse_tar(target.t.run(files.read_tar(target.paths.stack_dir, ["current/compose.yml"])).stdout)
    if "current/compose.yml" not in found:
        raise HostError(target.host, f"no current release of {target.stack.name}")
    return verify_host(target.t, target.stack, target.paths.current, settle_seconds(target.vars))


def summary_line(host: str, result: dict[str, str], seconds: float) -> str:
    """``host: backup ID: 12.3 MB archive from 40.1 MB of data in 3.2 s (12.5 MB/s), stored at PATH``.
    MB/s is source data (data dirs + volumes) per wall second; ``seconds`` > 0."""
    from .ui import human_bytes
    src = int(result.get("source_bytes", 0) or 0)
    rate = src / 1e6 / seconds if seconds > 0 else 0.0
    line = (f"{host}: backup {result.get('id')}: {human_bytes(int(result.get('size', 0) or 0))} archive from "
            f"{human_bytes(src)} of data in {seconds:.1f} s ({rate:.1f} MB/s), stored at {result.get('archive')}")
    if result.get("pruned"):
        line += f"; retention kept {result.get('kept')}, pruned {result.get('pruned')}"
    if result.get("skipped"):
        line += f"; left out (not running): {result['skipped']}"
    return line


def status_lines(status: dict[str, Any]) -> list[str]:
    """Human lines for :func:`schedule_status`'s result: the schedule, then the last
    scheduled run (``ok``/``FAILED`` with its error, archive and size)."""
    from .ui import human_bytes
    s: Schedule = status["schedule"]
    lines = [f"schedule: '{s.cron}' keep-last {s.keep_last} keep-daily {s.keep_daily} keep-weekly "
             f"{s.keep_weekly} (log {status['log']})" if s.cron else "schedule: none"]
    for key, label in (("last_scheduled", "last scheduled run"), ("last_run", "last run")):
        r = status.get(key)
        if r:
            what = (f"ok, {r.get('archive')} ({human_bytes(int(r.get('size') or 0))})" if r.get("result") == "ok"
                    else f"FAILED: {r.get('error')}")
            lines.append(f"{label}: {r.get('finished')} {what}")
        elif key == "last_scheduled" and s.cron:
            lines.append(f"{label}: none yet")
    return lines
