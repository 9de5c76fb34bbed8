"""Backups on a host: where the program and its files live, the commands that run it,
and next to each the parser of its output; plus the few operations that stream archives.

The program is ``files/ferry-backup`` (static), installed as
``<stack_dir>/ferry-backup`` (0700) with its settings per release in
``<stack_dir>/backup-settings/<release>.tsv`` (0600), see :mod:`ferry.model.backup`.
Commands are argument lists with absolute paths only, so that they behave the same
through ``sudo`` as a non-root login (nothing depends on ``$HOME`` or the login's
environment).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import FerryError, HostError
from ..model.backup import ARCHIVE_SUFFIX, Schedule, parse_cron_entry
from ..model.paths import HostPaths
from . import containers, files
from .shell import q, sh


# -- where things are ------------------------------------------------------------------

def script_path(paths: HostPaths) -> str:
    """``<stack_dir>/ferry-backup``: the installed program."""
    return posixpath.join(paths.stack_dir, "ferry-backup")


def settings_path(paths: HostPaths, release: str) -> str:
    """``<stack_dir>/backup-settings/<release>.tsv``: the program's settings for a release."""
    return posixpath.join(paths.stack_dir, "backup-settings", f"{release}.tsv")


def status_dir(paths: HostPaths) -> str:
    """``<stack_dir>/backup-status``: ``last-run.tsv`` and ``last-scheduled.tsv``."""
    return posixpath.join(paths.stack_dir, "backup-status")


def backup_dir(variables: dict[str, Any], stack: str) -> str:
    """``<backup_dir>/<stack>`` (``backup_dir`` default ``/var/backups/ferry``)."""
    return posixpath.join(str(variables.get("backup_dir", "/var/backups/ferry")), stack)


def cron_file(stack: str) -> str:
    """``/etc/cron.d/ferry-backup-<stack>`` (stack names are ``[a-z0-9_-]``, valid for cron.d)."""
    return f"/etc/cron.d/ferry-backup-{stack}"


def log_file(variables: dict[str, Any], stack: str) -> str:
    """``<backup_log_dir>/backup-<stack>.log``: where scheduled runs append their output."""
    return posixpath.join(str(variables.get("backup_log_dir", "/var/log/ferry")), f"backup-{stack}.log")


# -- facts -----------------------------------------------------------------------------

def current_release_command(paths: HostPaths) -> list[str]:
    """The release ``current`` points at (empty output: not deployed)."""
    return sh(f"readlink {q(paths.current)} 2>/dev/null || true")


def parse_current_release(text: str) -> str:
    """``releases/20261122T...-1.0.0`` -> ``20261122T...-1.0.0`` ("" when not deployed)."""
    return posixpath.basename(text.strip().rstrip("/"))


def compose_config_command(project: str, release_dir: str) -> list[str]:
    """Compose's own normalized model of a release: ``docker compose config --format json``
    (interpolation, ``env_file``, volume names... as the host's Compose resolves them)."""
    return containers.compose(project, f"{release_dir}/compose.yml", release_dir, "config", "--format", "json")


def parse_compose_config(text: str, host: str) -> dict[str, Any]:
    """The JSON of :func:`compose_config_command`.

    Raises:
        HostError: not JSON (an old Compose without ``--format json``).
    """
    import json
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise HostError(host, "docker compose config --format json gave no JSON (Compose v2.x needed)") from None
    if not isinstance(doc, dict):
        raise HostError(host, "docker compose config --format json gave no mapping")
    return doc


def installed_command(paths: HostPaths) -> list[str]:
    """A tar stream of what is installed: the program, every release's settings (the
    ``backup-settings`` directory: one small file per release), the cron file (each only
    when present; paths relative to ``/``). It does not depend on the release, so a
    deploy reads it with its other facts, before it knows the release."""
    settings = posixpath.dirname(settings_path(paths, "x"))
    return files.read_tar("/", [script_path(paths).lstrip("/"), settings.lstrip("/"),
                                cron_file(paths.stack).lstrip("/")])


# -- running the program ---------------------------------------------------------------

def backup_command(script: str, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
                   min_free: int | None = None, locked_by: str | None = None) -> list[str]:
    """``ferry-backup backup [--keep-* N] [--min-free BYTES] [--locked-by TOKEN]``."""
    args = [script, "backup"]
    if keep_last or keep_daily or keep_weekly:
        args += ["--keep-last", str(int(keep_last)), "--keep-daily", str(int(keep_daily)),
                 "--keep-weekly", str(int(keep_weekly))]
    if min_free is not None:
        args += ["--min-free", str(int(min_free))]
    if locked_by:
        args += ["--locked-by", locked_by]
    return args


def restore_command(script: str, backup_id: str, safety: bool = True, locked_by: str | None = None) -> list[str]:
    """``ferry-backup restore ID [--no-safety-backup] [--locked-by TOKEN]``."""
    return [script, "restore", backup_id, *([] if safety else ["--no-safety-backup"]),
            *(["--locked-by", locked_by] if locked_by else [])]


def list_command(script: str, verify: bool = False) -> list[str]:
    """``ferry-backup list [--verify]``; nothing when the program is not installed."""
    return sh(f"[ -x {q(script)} ] || exit 0; exec {q(script)} list" + (" --verify" if verify else ""))


def parse_kv(text: str) -> dict[str, str]:
    """``key=value`` lines of the program's stdout (``id=...``, ``size=...``), last wins."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z_]+", key):
            out[key] = value.strip()
    return out


def script_error(stderr: str, rc: int) -> str:
    """The one-line reason of a failed run: its last ``ferry-backup: error:`` line, else
    its last stderr line, else the exit status."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    errors = [l.split("error:", 1)[1].strip() for l in lines if l.startswith("ferry-backup: error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {rc}"


@dataclass
class BackupInfo:
    """One archive on a host, from ``ferry-backup list``.

    Attributes:
        id: ``<stack>-<YYYYmmddTHHMMSSZ>[-tag]``.
        size: archive size in bytes.
        state: ``ok``, ``unverified`` (no ``.sha256``: never verified) or ``damaged: <reason>``.
        release: the release it holds (``""`` when the manifest is unreadable).
        source_bytes: bytes of data dirs and volumes it was made from.
        created: ISO time from the manifest (``""`` when unreadable).
    """

    id: str
    size: int
    state: str
    release: str
    source_bytes: int
    created: str

    @property
    def good(self) -> bool:
        """Verified when made and intact as far as checked."""
        return self.state == "ok"


def parse_backup_list(text: str) -> list[BackupInfo]:
    """Parse ``ferry-backup list`` (tab separated, newest first; ``-`` is empty)."""
    out = []
    for line in text.splitlines():
        parts = ["" if p == "-" else p for p in line.split("\t")]
        if len(parts) >= 6 and parts[0]:
            out.append(BackupInfo(parts[0], int(parts[1] or 0), parts[2], parts[3],
                                  int(parts[4] or 0) if parts[4].isdigit() else 0, parts[5]))
    return out


def parse_status(data: bytes | str) -> dict[str, str] | None:
    """A run's status file (``last-run.tsv``: ``key<TAB>value`` lines; an older Ferry's
    ``last-run.json`` is read too). None when absent or unreadable."""
    if not data:
        return None
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if text.lstrip().startswith("{"):
        import json
        try:
            return {k: str(v) for k, v in json.loads(text).items()}
        except (ValueError, RecursionError, AttributeError):
            return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if key:
            out[key] = "" if value == "-" else value
    return out or None


def run_program(t: Any, argv: list[str], what: str, timeout: float = 3600) -> dict[str, str]:
    """Run the program; return its ``key=value`` summary.

    Raises:
        HostError: ``"<what>: <the program's error line>"`` when it failed.
    """
    res = t.run(argv, check=False, timeout=timeout)
    if not res.ok:
        raise HostError(t.host, f"{what}: {script_error(res.err, res.rc)}")
    return parse_kv(res.out)


def list_backups(t: Any, script: str, verify: bool = False, timeout: float = 3600) -> list[BackupInfo]:
    """The stack's archives on the host, newest first (``verify``: every member re-hashed)."""
    return parse_backup_list(t.run(list_command(script, verify), timeout=timeout).out)


def resolve_id(t: Any, script: str, backup: str, where: str) -> str:
    """``latest`` -> the newest good backup that is not a ``-prerestore`` safety backup;
    an ID is checked to exist.

    Raises:
        HostError: no such backup, or no good backup for ``latest``.
    """
    items = list_backups(t, script)
    if backup == "latest":
        good = [b for b in items if b.good and not b.id.endswith("-prerestore")]
        if not good:
            raise HostError(t.host, f"no verified backup in {where}")
        return good[0].id
    if backup not in {b.id for b in items}:
        raise HostError(t.host, f"no backup '{backup}' in {where} (see `inv backups`)")
    return backup


def fetch(t: Any, directory: str, backup_id: str, dest_dir: Path, progress=None) -> Path:
    """Copy an archive to ``dest_dir`` on the controller and check its sha256 against the
    host's ``.sha256`` sidecar (written when the archive was verified). Returns the local
    path (0600; its sidecar is written next to it).

    Raises:
        HostError: no sidecar (an unverified archive) or a digest mismatch on arrival
            (the local copy is deleted).
    """
    remote = posixpath.join(directory, backup_id + ARCHIVE_SUFFIX)
    side = t.run(["cat", remote + ".sha256"], check=False)
    if not side.ok:
        raise HostError(t.host, f"{remote}: no .sha256 (not a verified backup)")
    want = side.out.split()[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    local = dest_dir / (backup_id + ARCHIVE_SUFFIX)
    part = local.with_name(local.name + ".partial")
    h = hashlib.sha256()
    with open(part, "wb") as f:
        part.chmod(0o600)
        for block in t.stream(["cat", remote]):
            h.update(block)
            f.write(block)
            if progress:
                progress(len(block))
    if h.hexdigest() != want:
        part.unlink()
        raise HostError(t.host, f"{backup_id}: sha256 mismatch on arrival ({h.hexdigest()} != {want})")
    part.rename(local)
    (dest_dir / (backup_id + ARCHIVE_SUFFIX + ".sha256")).write_text(side.out)
    return local


def upload(t: Any, script: str, directory: str, local: Path, locked_by: str | None = None) -> str:
    """Send a local archive (``--from``) to the host's backup dir, verify it there and
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
    remote = posixpath.join(directory, f".upload-{int(time.time())}.tar.partial")

    def chunks() -> Iterable[bytes]:
        with open(local, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")
    t.run(files.mkdirs([directory], 0o700))
    t.send(files.write_file(remote, 0o600), chunks())
    res = t.run([script, "import", remote, *(["--locked-by", locked_by] if locked_by else [])], check=False)
    if not res.ok:
        t.run(["rm", "-f", remote], check=False)
        raise HostError(t.host, f"{local.name} refused: {script_error(res.err, res.rc)}")
    return parse_kv(res.out)["id"]


# -- schedules -------------------------------------------------------------------------

def schedule_commands(cron_path: str, text: str, log: str) -> list[tuple[list[str], bytes | None]]:
    """``(argv, stdin)`` pairs installing a cron file and making sure cron runs."""
    return [(files.mkdirs([posixpath.dirname(log)]), None),
            (files.write_file(cron_path, 0o644), text.encode()),
            (sh("systemctl enable --now cron >/dev/null 2>&1 || systemctl enable --now crond >/dev/null 2>&1 "
                "|| true"), None)]


def unschedule_command(cron_path: str) -> list[str]:
    """Remove the cron file; prints ``removed`` when there was one."""
    return sh(f"[ -e {q(cron_path)} ] && rm -f {q(cron_path)} && echo removed || true")


def schedule_status_command(paths: HostPaths) -> list[str]:
    """The host's local time (``date +%Y-%m-%dT%H:%M:%S%z``) on the first line, then a tar
    stream of the cron file and the status files."""
    sd = status_dir(paths).lstrip("/")
    names = [cron_file(paths.stack).lstrip("/")] + [f"{sd}/{n}" for n in
                                                     ("last-run.tsv", "last-scheduled.tsv",
                                                      "last-run.json", "last-scheduled.json")]
    return sh("date +%Y-%m-%dT%H:%M:%S%z; " + files.read_tar("/", names)[-1])


@dataclass
class ScheduleStatus:
    """The schedule and the last runs of one stack on one host.

    Attributes:
        schedule: the cron file's schedule (``cron`` None: none).
        host_now: the host's local time (timezone-aware), for the next run.
        last_run, last_scheduled: status records (``result`` ``ok``/``failed``,
            ``error``, ``archive``, ``id``, ``size`` bytes, ``seconds``, ``started``,
            ``finished``, ``lock_waited`` seconds) or None.
        log: the scheduled runs' log file.
    """

    schedule: Schedule
    host_now: dt.datetime | None
    last_run: dict[str, str] | None
    last_scheduled: dict[str, str] | None
    log: str


def parse_schedule_status(stdout: bytes, paths: HostPaths, log: str) -> ScheduleStatus:
    """Parse :func:`schedule_status_command` output."""
    first, _, rest = stdout.partition(b"\n")
    try:
        now = dt.datetime.strptime(first.decode().strip(), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        now = None
    found = files.parse_tar(rest)
    sd = status_dir(paths).lstrip("/")

    def status(name: str) -> dict[str, str] | None:
        return parse_status(found.get(f"{sd}/{name}.tsv", b"")) or parse_status(found.get(f"{sd}/{name}.json", b""))
    return ScheduleStatus(parse_cron_entry(found.get(cron_file(paths.stack).lstrip("/"), b"").decode()), now,
                          status("last-run"), status("last-scheduled"), log)
