"""Backups, the pure part: what a backup of a stack covers (the plan), the settings file
the host program reads, the archive's manifest, and schedules.

The host program is ``files/ferry-backup`` (a static bash script, see its header). It
reads a settings file that :func:`settings_text` writes as data (TSV records, never
sourced) from a :class:`BackupPlan`. :func:`plan_backup` decides, from the stack
definition and Compose's own normalized model of the release (``docker compose config
--format json``), what holds data and how each part is copied consistently:

- **every named volume** of the Compose project and **every entry of the data dir**
  (``<stack_dir>/data``), as tar;
- **databases recognised by image** (:func:`database_kind`): MySQL/MariaDB, PostgreSQL,
  Redis and MongoDB are dumped with their own tool inside their own container while
  they run; the volume or data dir they keep their files in (:data:`DATA_PATHS`) is then
  left out of the file copy (a live copy of it would be torn), and copied at rest
  instead when the service is stopped;
- SQLite files declared under ``backup.sqlite`` are snapshotted inside their service;
- a service whose image is a database Ferry cannot dump (:data:`UNDUMPABLE`) and that
  keeps data in a volume or data dir is **refused** while it runs, with the remedy
  (``backup.stop``, ``backup.exclude`` or ``backup: none``), never tarred live;
- ``backup: none`` in stack.yml: data is not backed up (the archive holds the config).

Archive layout and retention: see the README's backup section and ``files/ferry-backup``.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..errors import FerryError
from .compose import ComposeModel, named_volumes

ARCHIVE_SUFFIX = ".ferry-backup.tar"
EXIT_DAMAGED = 3
EXIT_LOCKED = 75
SETTINGS_FORMAT = 1

# Image repository names (the last path component, without tag or digest).
DUMPED: dict[str, re.Pattern[str]] = {
    "mysql": re.compile(r"(mysql|mariadb|percona(-server)?|mysql-server)"),
    "postgres": re.compile(r"(postgres|postgresql|postgis|timescaledb(-ha)?|pgvector)"),
    "redis": re.compile(r"(redis|redis-stack-server|valkey|keydb)"),
    "mongo": re.compile(r"(mongo|mongodb|mongodb-community-server)"),
}
"""Database kinds Ferry dumps, recognised by the image's repository name."""

UNDUMPABLE = re.compile(r"(influxdb|elasticsearch|opensearch|clickhouse(-server)?|cassandra|scylla|neo4j|couchdb|"
                        r"etcd|qdrant|weaviate|milvus|milvus-standalone|chroma|chromadb|meilisearch|typesense|"
                        r"rabbitmq|nats|kafka|zookeeper|cockroach|arangodb|surrealdb|questdb|victoria-metrics)")
"""Databases Ferry has no consistent dump for: their data is refused while they run."""

DATA_PATHS: dict[str, tuple[str, ...]] = {
    "mysql": ("/var/lib/mysql",),
    "postgres": ("/var/lib/postgresql", "/var/lib/postgresql/data"),
    "redis": ("/data", "/var/lib/redis"),
    "mongo": ("/data/db", "/data/configdb"),
}
"""Where each kind keeps its files inside its container (a mount at or below one of
these holds the database's own files)."""


def image_repository(image: str) -> str:
    """``docker.io/library/postgres:16@sha256:..`` -> ``postgres``; ``bitnami/redis:7`` -> ``redis``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()


def database_kind(image: str) -> str | None:
    """The database kind Ferry dumps for ``image`` (``mysql``, ``postgres``, ``redis``,
    ``mongo``), or None."""
    repo = image_repository(image)
    for kind, pattern in DUMPED.items():
        if pattern.fullmatch(repo):
            return kind
    return None


def undumpable_database(image: str) -> bool:
    """Whether ``image`` is a database Ferry knows but cannot dump consistently."""
    return UNDUMPABLE.fullmatch(image_repository(image)) is not None


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


def check_backup_id(value: str, stack: str) -> str:
    """``inv restore --backup``: ``latest`` or an ID of one of ``stack``'s archives
    (``<stack>-<YYYYmmddTHHMMSSZ>[-tag]``), checked before any host is contacted, so a
    path (``../../x``) or an option (``--no-safety-backup``) never reaches the host.

    Raises:
        FerryError: anything else, in one line.
    """
    if value == "latest":
        return value
    try:
        backup_time(value, stack)
    except ValueError:
        raise FerryError(f"--backup {value!r}: not a backup of {stack} (an ID such as "
                         f"{stack}-20261122T020000Z, or latest; `inv backups` lists them)") from None
    return value


# -- requests (what an action asks of the backup and restore roles) ---------------------

@dataclass
class BackupRequest:
    """``inv backup``'s options for the ``backup`` role: retention counts (0: no pruning),
    ``min_free`` bytes (None: ``backup_min_free_bytes``), and the token of the stack's
    lock the action holds on the host."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    min_free: int | None = None
    locked_by: str | None = None


@dataclass
class RestoreRequest:
    """``inv restore``'s options for the ``restore`` role: a backup ID or ``latest``, or a
    local archive (``--from``); whether to back up the current state first; the token of
    the stack's lock the action holds on the host."""

    backup: str = "latest"
    local: Any = None
    safety: bool = True
    locked_by: str | None = None


# -- the plan --------------------------------------------------------------------------

@dataclass
class BackupPlan:
    """What a backup of one stack on one host covers (see the module docstring).

    Attributes:
        stack, project: stack name and Compose project name.
        release: the release the plan was made for (the host program refuses another).
        stack_dir, data_dir, backup_dir, status_dir, lock_dir, audit_log: host paths.
        scope: ``all``, or ``config`` for ``backup: none``.
        data_dirs: declared data dirs (relative to ``data_dir``); every other entry of
            the data dir is copied too.
        volumes: ``(compose key, docker volume name)`` of every named volume.
        sqlite: ``(service, file under data_dir, path in the container)``.
        dumps: ``(kind, service, user, password env var)``; user/env may be empty.
        at_rest: ``(service, "volume"|"data", volume name or data path)``: a dumped
            database's own files, left out of the file copy while it runs.
        refuse: ``(service, image, what)``: an undumpable database's data.
        stop: services stopped during the file copy.
        exclude: paths under ``data_dir`` never copied.
        numbers: ``min_free`` (bytes), ``redis_timeout``, ``wait_timeout``,
            ``lock_wait`` (seconds), and ``compress`` (``auto``/``gzip``).
        engine: ``compose``, or ``swarm`` (``ferry_engine``): the program then finds a
            service's containers among the swarm's tasks on its node (labels
            ``com.docker.stack.namespace``, ``com.docker.swarm.service.name``).
    """

    stack: str
    project: str
    release: str
    stack_dir: str
    data_dir: str
    backup_dir: str
    status_dir: str
    lock_dir: str
    audit_log: str
    scope: str = "all"
    data_dirs: list[str] = field(default_factory=list)
    volumes: list[tuple[str, str]] = field(default_factory=list)
    sqlite: list[tuple[str, str, str]] = field(default_factory=list)
    dumps: list[tuple[str, str, str, str]] = field(default_factory=list)
    at_rest: list[tuple[str, str, str]] = field(default_factory=list)
    refuse: list[tuple[str, str, str]] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    min_free: int = 0
    compress: str = "auto"
    redis_timeout: int = 300
    wait_timeout: int = 120
    lock_wait: int = 1800
    engine: str = "compose"

    def coverage(self) -> list[str]:
        """One line per part, for humans (``inv backups``, the role's summary)."""
        if self.scope == "config":
            return ["backup: none in stack.yml: config and secrets only, no data"]
        out = [f"{kind} dump of {svc}" for kind, svc, _, _ in self.dumps]
        out += [f"sqlite snapshot of {svc}:{path}" for svc, _, path in self.sqlite]
        out += [f"volume {name}" for _, name in self.volumes
                if not any(k == "volume" and w == name for _, k, w in self.at_rest)]
        out.append("every entry of the data dir" + (f" except {', '.join(self.exclude)}" if self.exclude else ""))
        out += [f"REFUSED while running: {svc} ({image}, {what})" for svc, image, what in self.refuse]
        return out


def _under(path: str, roots: tuple[str, ...]) -> bool:
    path = posixpath.normpath(path)
    return any(path == r or path.startswith(r + "/") for r in roots)


def _data_rel(source: str, data_dir: str, release_dir: str, release_files: list[str]) -> str | None:
    """The data-dir-relative path a bind source stands for: a source under the data dir;
    or a ``./x`` source under the release that no release file provides (Compose's
    model resolves it inside the release, which links it to ``<data_dir>/x``)."""
    source = posixpath.normpath(source)
    for base in (data_dir.rstrip("/"), release_dir.rstrip("/")):
        if source.startswith(base + "/"):
            rel = source[len(base) + 1:]
            if base == data_dir.rstrip("/") or not any(f == rel or f.startswith(rel + "/") or rel.startswith(f + "/")
                                                       for f in release_files):
                return rel
    return None


def plan_backup(stack: Any, model: ComposeModel, release: str, host_paths: dict[str, str],
                variables: dict[str, Any]) -> BackupPlan:
    """The backup plan of ``stack`` for one host (pure; see the module docstring).

    Args:
        stack: :class:`ferry.model.stack.Stack` (its ``backup`` key, images, release files).
        model: Compose's model of the release (:func:`ferry.model.compose.parse_model`
            of ``docker compose config --format json`` run on the host).
        release: the release id the model is of.
        host_paths: ``stack_dir``, ``data``, ``release_dir``, ``lock_dir``, ``audit_log``
            on the host.
        variables: merged variables (``backup_dir``, ``backup_min_free_bytes``...).

    Raises:
        FerryError: a ``backup`` entry naming a volume the model lacks, a declared SQLite
            file outside every bind mount of its service, ``backup_compress`` not
            ``auto``/``gzip``.
    """
    spec = stack.backup
    data_dir = host_paths["data"]
    release_dir = host_paths.get("release_dir") or posixpath.join(host_paths["stack_dir"], "releases", release)
    release_files = list(stack.release_files())
    where = f"{stack.file}"
    plan = BackupPlan(
        stack=stack.name, project=model.name or stack.name, release=release,
        stack_dir=host_paths["stack_dir"], data_dir=data_dir,
        backup_dir=posixpath.join(str(variables.get("backup_dir", "/var/backups/ferry")), stack.name),
        status_dir=posixpath.join(host_paths["stack_dir"], "backup-status"), lock_dir=host_paths["lock_dir"],
        audit_log=host_paths["audit_log"], data_dirs=list(stack.data_dirs),
        min_free=int(variables.get("backup_min_free_bytes", 0)),
        compress=str(variables.get("backup_compress", "auto")),
        redis_timeout=int(variables.get("backup_redis_timeout", 300)),
        wait_timeout=int(variables.get("compose_wait_timeout", 120)),
        lock_wait=int(variables.get("backup_lock_wait", 1800)),
        engine="swarm" if variables.get("ferry_engine") == "swarm" else "compose")
    if plan.compress not in ("auto", "gzip"):
        raise FerryError(f"backup_compress: '{plan.compress}' must be auto or gzip")
    if getattr(spec, "none", False):
        plan.scope = "config"
        return plan
    vol_name = named_volumes(model)
    for key in spec.volumes:
        if key not in vol_name:
            raise FerryError(f"{where}: key 'backup.volumes': '{key}' is not a volume in compose.yml")
    plan.volumes = sorted(vol_name.items())
    plan.stop = list(spec.stop)
    if plan.stop and plan.engine == "swarm":
        raise FerryError(f"{where}: key 'backup.stop': a swarm restarts a stopped task at once, so services cannot "
                         "be stopped for a backup there (use backup.exclude, or a database dump)")
    plan.exclude = list(spec.exclude)
    declared = {e["service"]: ("mysql", e.get("user", "root"), e.get("password_env", "")) for e in spec.mysql}
    declared.update({e["service"]: ("redis", "", "") for e in spec.redis})
    for name in sorted(model.services):
        svc = model.services[name]
        image = svc.image or stack.images.get(name, "")
        kind = declared.get(name, (database_kind(image), "", ""))[0]
        binds = [(b.target, _data_rel(b.source, data_dir, release_dir, release_files)) for b in svc.binds]
        if kind and name not in plan.stop:
            user, pwenv = declared.get(name, (kind, "", ""))[1:]
            plan.dumps.append((kind, name, user if kind == "mysql" else "", pwenv))
            roots = DATA_PATHS[kind]
            plan.at_rest += [(name, "volume", vol_name[v]) for v, target in svc.volumes
                             if v in vol_name and _under(target, roots)]
            plan.at_rest += [(name, "data", rel) for target, rel in binds if rel and _under(target, roots)]
        elif not kind and undumpable_database(image) and name not in plan.stop:
            plan.refuse += [(name, image, f"volume {vol_name[v]}") for v, _ in svc.volumes if v in vol_name]
            plan.refuse += [(name, image, f"data dir {rel}") for _, rel in binds
                            if rel and not any(rel == x or rel.startswith(x + "/") for x in plan.exclude)]
    for i, e in enumerate(spec.sqlite):
        host_path = posixpath.join(data_dir, e["file"])
        svc = model.services.get(e["service"])
        inside = None
        best = -1
        for b in svc.binds if svc else []:
            rel = _data_rel(b.source, data_dir, release_dir, release_files)
            src = posixpath.join(data_dir, rel) if rel else b.source
            if host_path.startswith(src.rstrip("/") + "/") and len(src) > best:
                best, inside = len(src), posixpath.join(b.target, host_path[len(src.rstrip("/")) + 1:])
        if inside is None:
            raise FerryError(f"{where}: key 'backup.sqlite[{i}].file': {host_path} is not inside a bind mount of "
                             f"service '{e['service']}'")
        plan.sqlite.append((e["service"], e["file"], inside))
    return plan


def settings_records(plan: BackupPlan) -> list[tuple[str, ...]]:
    """The settings file's records, in order (see :func:`settings_text`)."""
    out: list[tuple[str, ...]] = [
        ("format", str(SETTINGS_FORMAT)), ("stack", plan.stack), ("project", plan.project),
        ("release", plan.release), ("data_dir", plan.data_dir), ("backup_dir", plan.backup_dir),
        ("status_dir", plan.status_dir), ("lock_dir", plan.lock_dir), ("audit_log", plan.audit_log),
        ("min_free", str(plan.min_free)), ("compress", plan.compress), ("redis_timeout", str(plan.redis_timeout)),
        ("wait_timeout", str(plan.wait_timeout)), ("lock_wait", str(plan.lock_wait)), ("scope", plan.scope)]
    if plan.engine != "compose":
        out.append(("engine", plan.engine))
    out += [("data", d) for d in plan.data_dirs]
    out += [("exclude", x) for x in plan.exclude]
    out += [("stop", s) for s in plan.stop]
    out += [("volume", k, n) for k, n in plan.volumes]
    out += [("sqlite", *e) for e in plan.sqlite]
    out += [("dump", *e) for e in plan.dumps]
    out += [("at_rest", *e) for e in plan.at_rest]
    out += [("refuse", *e) for e in plan.refuse]
    return out


_FIELD_OK = re.compile(r"[^\t\n\r\x00-\x1f\x7f]*")


def settings_text(plan: BackupPlan) -> bytes:
    """The settings file ``files/ferry-backup`` reads: one ``key<TAB>field...`` record
    per line, an empty field written as ``-`` (the program reads records with
    ``read``, it never sources or evaluates them).

    Raises:
        FerryError: a field holding a tab, a newline or another control character, or
            a lone ``-`` (it would read back as empty).
    """
    lines = ["# ferry-backup settings, written by Ferry's backup role (data, not code). Do not edit."]
    for rec in settings_records(plan):
        for value in rec[1:]:
            if not _FIELD_OK.fullmatch(value) or value == "-":
                raise FerryError(f"backup settings of {plan.stack}: {rec[0]} value {value!r} cannot be written "
                                 f"(control characters)")
        lines.append("\t".join(v if v != "" else "-" for v in rec))
    return ("\n".join(lines) + "\n").encode()


def parse_settings(text: bytes | str) -> dict[str, list[list[str]]]:
    """``{key: [fields...]}`` of a settings file (``-`` read back as empty)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, *fields = line.split("\t")
        out.setdefault(key, []).append(["" if f == "-" else f for f in fields])
    return out


# -- the manifest ----------------------------------------------------------------------

@dataclass
class Manifest:
    """An archive's manifest (``manifest.tsv``, format 2; or a format-1 ``manifest.json``).

    Attributes:
        format: 1 or 2.
        fields: ``id``, ``stack``, ``release``, ``created``, ``host``, ``scheduled``,
            ``source_bytes``, ``skipped`` (strings).
        tools: tool name -> version line.
        members: ``{"name", "kind", "service", "target", "size" (bytes), "sha256"}``.
    """

    format: int
    fields: dict[str, str]
    tools: dict[str, str]
    members: list[dict[str, Any]]

    def kinds(self) -> set[str]:
        """The member kinds (``config``, ``data``, ``volume``, ``sqlite``, ``mysql``...)."""
        return {m["kind"] for m in self.members}


def parse_manifest(data: bytes | str) -> Manifest:
    """Parse ``manifest.tsv`` (format 2) or a format-1 ``manifest.json``.

    Raises:
        ValueError: neither.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
        return Manifest(1, {k: str(v) for k, v in doc.items() if not isinstance(v, (dict, list))},
                        dict(doc.get("tools") or {}),
                        [{**m, "size": int(m.get("size", 0))} for m in doc.get("members") or []])
    fields: dict[str, str] = {}
    tools: dict[str, str] = {}
    members = []
    for line in text.splitlines():
        parts = ["" if p == "-" else p for p in line.split("\t")]
        if parts[0] == "member" and len(parts) == 7:
            members.append({"name": parts[1], "kind": parts[2], "service": parts[3], "target": parts[4],
                            "size": int(parts[5] or 0), "sha256": parts[6]})
        elif parts[0] == "tool" and len(parts) >= 3:
            tools[parts[1]] = parts[2]
        elif len(parts) >= 2 and parts[0] not in ("exclude",):
            fields[parts[0]] = parts[1]
    if fields.get("format") != "2":
        raise ValueError("not a Ferry backup manifest")
    return Manifest(2, fields, tools, members)


# -- schedules -------------------------------------------------------------------------

CRON_KEYWORDS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@reboot")
_MONTHS = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_DAYS = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}


def check_schedule(schedule: str) -> str:
    """Validate a cron schedule as the host's cron (Vixie/cronie) reads it, with croniter
    for the ranges: five fields (numbers, ``*``, ``/``, ``,``, ``-``; month and day
    names in their fields) or one ``@`` keyword. Returns it normalised (single spaces).

    Raises:
        FerryError: one line naming the schedule and the problem (``61 * * * *``: out of
            range); cron would otherwise ignore the whole file and never run a backup.
    """
    from croniter import croniter
    fields = str(schedule).split()
    text = " ".join(fields)
    if len(fields) == 1 and fields[0].lower() in CRON_KEYWORDS:
        return fields[0].lower()
    problem = ""
    if len(fields) != 5:
        problem = f"{len(fields)} fields, cron needs 5 (minute hour day-of-month month day-of-week) or @daily"
    else:
        for i, f in enumerate(fields):
            if not re.fullmatch(r"[0-9A-Za-z*/,\-]+", f):
                problem = f"field {i + 1} '{f}' has characters cron does not read"
            names = {w.lower() for w in re.findall(r"[A-Za-z]+", f)}
            allowed = _MONTHS if i == 3 else _DAYS if i == 4 else set()
            if names - allowed:
                problem = problem or f"field {i + 1} '{f}': '{sorted(names - allowed)[0]}' is not a name cron knows there"
        if not problem:
            try:
                croniter(text)
            except (ValueError, KeyError) as exc:
                problem = str(exc) or "not a cron schedule"
    if problem:
        raise FerryError(f"--cron '{schedule}': not a valid cron schedule: {problem}")
    return text


def next_run(schedule: str, now: dt.datetime) -> dt.datetime | None:
    """The next time cron runs ``schedule`` after ``now`` (in ``now``'s timezone: pass
    the host's local time), or None for ``@reboot``."""
    from croniter import croniter
    if schedule == "@reboot":
        return None
    expr = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}.get(schedule, schedule)
    return croniter(expr, now).get_next(dt.datetime)


@dataclass
class Schedule:
    """What ``/etc/cron.d/ferry-backup-<stack>`` says (``cron`` None: not scheduled)."""

    cron: str | None
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0


def cron_text(stack: str, schedule: str, script: str, log: str, keep: Schedule) -> str:
    """The ``/etc/cron.d`` file, rendered from ``templates/ferry-backup.cron.j2`` with
    every value emitted as data (the schedule checked by :func:`check_schedule`, paths
    shell-quoted). The program takes the stack's lock itself (waiting up to
    ``backup_lock_wait`` seconds for a deploy to finish) and records its own status.

    Raises:
        FerryError: a bad schedule, a negative count, a ``%`` in a path (cron would cut
            the line there).
    """
    import jinja2
    from ..resources import data_dir
    schedule = check_schedule(schedule)
    counts = (keep.keep_last, keep.keep_daily, keep.keep_weekly)
    if min(counts) < 0:
        raise FerryError("--keep counts must be >= 0")
    for what, path in (("script", script), ("backup_log_dir", log)):
        if "%" in path or "\n" in path:
            raise FerryError(f"{what} '{path}': cron cannot run a path with '%' or a newline")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["shell_quote"] = lambda v: shlex.quote(str(v))
    return env.get_template("ferry-backup.cron.j2").render(
        stack=stack, schedule=schedule, script=script, log=log, keep_last=int(keep.keep_last),
        keep_daily=int(keep.keep_daily), keep_weekly=int(keep.keep_weekly))


def parse_cron_entry(text: str) -> Schedule:
    """Parse a file written by :func:`cron_text` (or by an older Ferry; empty text: not
    scheduled)."""
    m = re.search(r"^# ferry-schedule: (.+?) keep-last=(\d+) keep-daily=(\d+) keep-weekly=(\d+)$", text, re.M)
    if not m:
        return Schedule(None)
    return Schedule(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
