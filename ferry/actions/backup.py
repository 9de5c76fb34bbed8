"""``backup``, ``backups``, ``schedule-backup``, ``unschedule-backup``.

Each opens the stack's hosts (:func:`ferry.actions.common.stack_hosts`); ``backup``
holds the stack's lock on every host while the ``backup`` role runs the host program
(which is told the lock's token, so it does not wait for the lock its own run holds).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FerryError
from ..host import backup as hb
from ..host.session import HostSession, guarded
from ..model.backup import BackupRequest, Schedule, check_schedule, cron_text, next_run
from ..model.stack import Stack, load_stack
from ..roles import RoleContext, load_role
from ..ui import UI, human_bytes
from . import engines
from .common import stack_hosts


def context(s: HostSession, stack: Stack, ui: UI, check: bool = False) -> RoleContext:
    """A role context for one host outside a deploy (no bundle)."""
    return RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui, check)


def backup(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
           keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, fetch_dir: Path | None = None,
           lock_wait: float = 0.0, message: str = "") -> list[dict[str, Any]]:
    """Back up the stack on every selected host (one after the other, under the lock).

    Returns:
        Per host: the program's summary (``id``, ``archive``, ``size`` and
        ``source_bytes`` in bytes, ``pruned``, ``kept``, ``skipped``...) plus ``host``,
        ``wall_seconds`` and ``fetched`` (local path) when ``fetch_dir`` was given.

    Raises:
        FerryError: bad input, an unreachable host, the lock held; HostError: the
            program's error line (nothing changed on that host).
    """
    if min(keep_last, keep_daily, keep_weekly) < 0:
        raise FerryError("--keep-last/--keep-daily/--keep-weekly must be >= 0")
    engine = engines.for_selection(inventory_path, pattern, load_stack(stack_dir), sets)
    if engine is not None:
        return engine.backup(inventory_path, pattern, stack_dir, sets, ui, keep_last, keep_daily, keep_weekly,
                             fetch_dir, lock_wait, message)
    return backup_hosts(inventory_path, pattern, stack_dir, sets, ui, keep_last, keep_daily, keep_weekly, fetch_dir,
                        lock_wait, message)


def backup_hosts(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
                 keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, fetch_dir: Path | None = None,
                 lock_wait: float = 0.0, message: str = "") -> list[dict[str, Any]]:
    """:func:`backup` on the hosts ``pattern`` selects, whatever their engine (a swarm's
    data node: :func:`ferry.actions.swarm.backup`)."""
    stack = load_stack(stack_dir)
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions, \
            guarded(sessions, stack.name, "backup", message=message, wait=lock_wait) as change:
        for s in sessions:
            ctx = context(s, stack, ui)
            ctx.state.backup_request = BackupRequest(keep_last, keep_daily, keep_weekly,
                                                      locked_by=change.tokens.get(s.name))
            started = time.monotonic()
            with ui.console.status(f"{s.name}: backing up {stack.name} into {hb.backup_dir(s.vars, stack.name)}"):
                try:
                    result = load_role("backup").run(ctx)
                except FerryError as exc:
                    change.done(s.name, "failed", str(exc))
                    raise
            summary = {"host": s.name, **{k: v for k, v in result.metrics.items()},
                       "wall_seconds": time.monotonic() - started}
            change.done(s.name, "ok", summary.get("id", ""))
            ui.info(summary_line(s.name, summary))
            if fetch_dir:
                with ui.transfer(f"{s.name}: fetching {summary['id']}", int(summary["size"])) as advance:
                    local = hb.fetch(s.t, hb.backup_dir(s.vars, stack.name), summary["id"], fetch_dir, advance)
                ui.info(f"{s.name}: fetched to {local} (sha256 checked)")
                summary["fetched"] = str(local)
            out.append(summary)
    return out


def summary_line(host: str, result: dict[str, Any]) -> str:
    """``host: backup ID: 12.3 MB archive from 40.1 MB of data in 3.2 s (12.5 MB/s), stored at PATH``.
    MB/s is source data (data dirs + volumes) per wall second."""
    seconds = float(result.get("wall_seconds") or 0)
    src = int(result.get("source_bytes", 0) or 0)
    rate = src / 1e6 / seconds if seconds > 0 else 0.0
    line = (f"{host}: backup {result.get('id')}: {human_bytes(int(result.get('size', 0) or 0))} archive from "
            f"{human_bytes(src)} of data in {seconds:.1f} s ({rate:.1f} MB/s), stored at {result.get('archive')}")
    if result.get("pruned"):
        line += f"; retention kept {result.get('kept')}, pruned {result.get('pruned')}"
    if result.get("skipped"):
        line += f"; left out (not running): {result['skipped']}"
    return line


@dataclass
class HostBackups:
    """One host's archives and schedule, for ``inv backups`` (and ``--json``).

    Attributes:
        problems: one line per archive that is damaged or unverified, and the last
            scheduled run if it failed (``backups`` exits non-zero when any host has one).
        next_run: the schedule's next run in the host's local time (ISO), or None.
    """

    host: str
    dir: str
    backups: list[hb.BackupInfo]
    status: hb.ScheduleStatus
    next_run: str | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able dict (``backups[].good`` included)."""
        return {"host": self.host, "dir": self.dir,
                "backups": [{**asdict(b), "good": b.good} for b in self.backups],
                "schedule": asdict(self.status.schedule), "next_run": self.next_run,
                "last_run": self.status.last_run, "last_scheduled": self.status.last_scheduled,
                "log": self.status.log, "problems": self.problems}


def schedule_status(s: HostSession, stack: Stack) -> tuple[hb.ScheduleStatus, str | None]:
    """The schedule, last runs and next run (host local time, ISO) of one host."""
    res = s.t.run(hb.schedule_status_command(s.paths))
    st = hb.parse_schedule_status(res.stdout, s.paths, hb.log_file(s.vars, stack.name))
    nxt = None
    if st.schedule.cron and st.host_now:
        try:
            when = next_run(check_schedule(st.schedule.cron), st.host_now)
            nxt = when.isoformat() if when else "at reboot"
        except FerryError:
            nxt = "never: the cron file's schedule is not valid"
    return st, nxt


def list_backups(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any],
                 verify: bool = False) -> list[HostBackups]:
    """``backups``: each host's archives (``verify``: every member re-hashed), schedule,
    next run and last runs; ``problems`` names every damaged or unverified archive."""
    stack = load_stack(stack_dir)
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            items = hb.list_backups(s.t, hb.script_path(s.paths), verify)
            st, nxt = schedule_status(s, stack)
            problems = [f"{b.id}: {b.state}" for b in items if not b.good]
            # a failed scheduled run is silent otherwise (no one watched it): it counts
            if st.schedule.cron and st.last_scheduled and st.last_scheduled.get("result") != "ok":
                problems.append(f"last scheduled run failed: {st.last_scheduled.get('error')}")
            out.append(HostBackups(s.name, hb.backup_dir(s.vars, stack.name), items, st, nxt, problems))
    return out


def status_lines(st: hb.ScheduleStatus, nxt: str | None) -> list[str]:
    """Human lines: the schedule with its next run, then the last scheduled run and the
    last run (``ok`` with archive and size, or ``FAILED: <reason>``)."""
    s = st.schedule
    lines = [f"schedule: '{s.cron}' keep-last {s.keep_last} keep-daily {s.keep_daily} keep-weekly "
             f"{s.keep_weekly}, next run {nxt or '?'} (log {st.log})" if s.cron else "schedule: none"]
    for key, label in (("last_scheduled", "last scheduled run"), ("last_run", "last run")):
        r = getattr(st, key)
        if r:
            what = (f"ok, {r.get('archive')} ({human_bytes(int(r.get('size') or 0))})" if r.get("result") == "ok"
                    else f"FAILED: {r.get('error')}")
            lines.append(f"{label}: {r.get('finished')} {what}")
        elif key == "last_scheduled" and s.cron:
            lines.append(f"{label}: none yet")
    return lines


def schedule(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI, cron: str,
             keep_last: int, keep_daily: int = 0, keep_weekly: int = 0) -> list[tuple[str, str, str | None]]:
    """Install ``/etc/cron.d/ferry-backup-<stack>`` on every host (the program and
    settings first, through the ``backup`` role). The schedule is checked before any
    connection.

    Returns:
        ``(host, cron file text, next run ISO)`` per host.

    Raises:
        FerryError: a bad schedule or count (one line, no host contacted).
    """
    cron = check_schedule(cron)
    keep = Schedule(cron, int(keep_last), int(keep_daily), int(keep_weekly))
    stack = load_stack(stack_dir)
    cron_text(stack.name, cron, "/x", "/x", keep)          # the counts, checked before any connection
    engine = engines.for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        pattern = ",".join(sorted(set(engine.data_hosts(inventory_path, pattern, stack_dir, sets).values())))
        ui.info(f"{stack.name}: its data is on {pattern}: the schedule goes there")
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            result = load_role("backup").install(context(s, stack, ui))
            ui.host_line(s.name, "backup", result.summary, result.changed)
            log = hb.log_file(s.vars, stack.name)
            text = cron_text(stack.name, cron, hb.script_path(s.paths), log, keep)
            for argv, data in hb.schedule_commands(hb.cron_file(stack.name), text, log):
                s.t.run(argv, input=data)
            _, nxt = schedule_status(s, stack)
            out.append((s.name, text, nxt))
    return out


def unschedule(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[tuple[str, bool]]:
    """Remove the cron file on every host (archives are kept). ``(host, there was one)``."""
    stack = load_stack(stack_dir)
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        return [(s.name, "removed" in s.t.run(hb.unschedule_command(hb.cron_file(stack.name))).out)
                for s in sessions]
