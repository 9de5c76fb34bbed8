"""``uninstall``: take Ferry's files off hosts (see :mod:`ferry.host.footprint`).

Docker and the stacks' data are kept unless asked (``purge_docker``, ``purge_data``;
the command line asks for a confirmation or ``--yes``). While a stack still runs the
command refuses, on every host before changing any, unless ``force``: then each stack
is brought down (``docker compose down``; named volumes kept unless the data is
purged). Every stack is locked while its files go; the audit line is written to the
host's audit log, which is then copied to the controller (``audit_dir``), noted in the
host's system log (``logger -t ferry``) and removed last. With the data kept, a later
``deploy`` finds it again (``data/`` and the generated secrets it depends on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HostError
from ..host import audit, containers, footprint
from ..host.backup import log_file
from ..host.footprint import Footprint
from ..host.session import HostSession, guarded
from ..roles import load_role
from ..ui import UI, human_bytes
from .common import stack_hosts


@dataclass
class UninstallReport:
    """One host's uninstall.

    Attributes:
        stopped: stacks brought down.
        removed: what went (paths and names, for the summary).
        kept: what stays (the data, Docker), with sizes.
        audit_copy: the controller file holding the host's audit log.
    """

    host: str
    stopped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    audit_copy: Path | None = None


def _plan(s: HostSession, f: Footprint, purge_docker: bool, purge_data: bool) -> UninstallReport:
    root, v = s.paths.root, s.vars
    r = UninstallReport(s.name)
    r.stopped = sorted(st for st in f.stacks if f.containers.get(st))
    gone = f.ferry_files(purge_data)
    if gone:
        tops = sorted({g.split("/")[0] if not g.startswith("stacks/") else "/".join(g.split("/")[:2]) for g in gone})
        r.removed.append(f"{root}/{{{','.join(tops)}}}" if len(tops) > 1 else f"{root}/{tops[0]}")
    r.removed += f.cron
    for stack, size in sorted(f.stacks.items()):
        kept = [e for e in f.stack_entries.get(stack, []) if e in footprint.KEEP_IN_STACK]
        if kept and not purge_data:
            r.kept.append(f"{root}/stacks/{stack}/{{{','.join(sorted(kept))}}} ({human_bytes(size)} of data)")
    for stack, size in sorted(f.backups.items()):
        (r.removed if purge_data else r.kept).append(f"{v['backup_dir']}/{stack} (backups, {human_bytes(size)})")
    if f.docker:
        (r.removed if purge_docker else r.kept).append("Docker (packages, images, containers, volumes)"
                                                        if purge_docker else "Docker and its images")
    return r


def uninstall(inventory_path: Path, pattern: str, sets: dict[str, Any], ui: UI, audit_dir: Path,
              force: bool = False, purge_docker: bool = False, purge_data: bool = False, check: bool = False,
              lock_wait: float = 0.0, message: str = "") -> list[UninstallReport]:
    """Uninstall Ferry from each selected host (see the module docstring).

    Args:
        audit_dir: controller directory that receives ``<host>-audit-<time>.log``.
        force: bring running stacks down instead of refusing.
        purge_docker: also remove Docker (packages, images, containers, volumes).
        purge_data: also remove the stacks' data dirs, secrets, named volumes, backups.
        check: report what would go, change nothing.

    Raises:
        FerryError: a bad ``ferry_root``/``backup_dir``, a stack still running without
            ``force`` (nothing changed on any host), a held lock, a failing command.
    """
    reports: dict[str, UninstallReport] = {}
    with stack_hosts(inventory_path, pattern, None, sets) as sessions:
        found: dict[str, Footprint] = {}
        for s in sessions:
            footprint.check_dir(s.paths.root, "ferry_root", s.name)
            footprint.check_dir(str(s.vars["backup_dir"]), "backup_dir", s.name)
            footprint.check_dir(str(s.vars["backup_log_dir"]), "backup_log_dir", s.name)
            found[s.name] = footprint.parse_footprint(s.t.run(footprint.footprint(
                s.paths.root, str(s.vars["backup_dir"]))).out)
            reports[s.name] = _plan(s, found[s.name], purge_docker, purge_data)
        running = {n: f.running() for n, f in found.items() if f.running()}
        if running and not force:
            first = next(iter(running))
            where = "; ".join((f"{n}: " if n != first else "")
                              + ", ".join(f"{st} ({c} containers running)" for st, c in sorted(r.items()))
                              for n, r in running.items())
            raise HostError(first, f"stacks still run: {where}; stop them first (ferry stop) or bring them "
                                   f"down with --force; nothing was changed")
        if check:
            for r in reports.values():
                _show(ui, r, check=True)
            return list(reports.values())
        todo = [s for s in sessions if reports[s.name].removed or reports[s.name].stopped]
        for s in sessions:
            if s not in todo:
                _show(ui, reports[s.name], check=False)
        if not todo:
            return list(reports.values())
        stacks = {n: sorted(f.stacks) for n, f in found.items()}
        with guarded(todo, stacks, "uninstall", message=message, wait=lock_wait) as change:
            for s in todo:
                _uninstall_host(s, found[s.name], purge_docker, purge_data)
                r = reports[s.name]
                change.done(s.name, "ok", "; ".join(["removed " + ", ".join(r.removed)]
                                                    + (["kept " + ", ".join(r.kept)] if r.kept else [])))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for s in todo:
            r = reports[s.name]
            log = s.t.run(audit.tail_command(s.paths.root, 1_000_000_000)).stdout
            if log:
                audit_dir.mkdir(parents=True, exist_ok=True)
                r.audit_copy = audit_dir / f"{s.name}-audit-{stamp}.log"
                r.audit_copy.write_bytes(log)
            s.t.run(footprint.audit_to_syslog(f"uninstall: {'; '.join(r.removed)}"
                                              + (f"; audit log copied to the controller as {r.audit_copy}"
                                                 if r.audit_copy else "")), check=False)
            s.t.run(footprint.remove_last(s.paths.root))
            _show(ui, r, check=False)
    return list(reports.values())


def _uninstall_host(s: HostSession, f: Footprint, purge_docker: bool, purge_data: bool) -> None:
    root, v = s.paths.root, s.vars
    for stack in sorted(st for st in f.stacks if f.containers.get(st)):
        current = f"{root}/stacks/{stack}/current"
        has_compose = s.t.run(["test", "-f", f"{current}/compose.yml"], check=False).ok
        if has_compose:
            down = containers.compose(stack, f"{current}/compose.yml", current, "down", "--remove-orphans",
                                      *(["--volumes"] if purge_data else []))
            res = s.t.run(down, check=False, timeout=600)
            if not res.ok:
                raise HostError(s.name, f"docker compose down of {stack} failed: {res.last_error_line()}")
        else:
            s.t.run(footprint.remove_stack_containers(stack))
    s.t.run(footprint.remove_files(root, sorted(f.stacks), f.cron, [log_file(v, st) for st in sorted(f.stacks)],
                                   str(v["backup_log_dir"]), str(v["backup_dir"]), purge_data))
    if purge_docker and f.docker:
        role = load_role("install-docker-offline")
        res = s.t.run(footprint.purge_docker(list(v.get("docker_packages") or ["docker.io"]),
                                             str(v.get("docker_data_root", "/var/lib/docker")),
                                             role.DAEMON_JSON, role.PLUGIN), check=False, timeout=900)
        if not res.ok:
            raise HostError(s.name, f"removing Docker failed: {res.last_error_line()}")


def _show(ui: UI, r: UninstallReport, check: bool) -> None:
    verb = "would " if check else ""
    if r.stopped:
        ui.host_line(r.host, "uninstall", f"{verb}bring down {', '.join(r.stopped)}", True)
    ui.host_line(r.host, "uninstall", f"{verb}remove " + (", ".join(r.removed) or "nothing (no Ferry files)"),
                 bool(r.removed))
    if r.kept:
        ui.info(f"  kept: {', '.join(r.kept)}")
    if r.audit_copy:
        ui.info(f"  audit log copied to {r.audit_copy}")
