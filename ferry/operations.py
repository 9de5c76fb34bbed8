"""Day-2 operations on deployed hosts: rollback, releases, status, lock, audit.

Each opens the selected hosts (all connections made, host keys verified, before
anything changes), works from facts read on the hosts, and for state changes takes the
stack's deploy lock and writes the audit log, as deploy does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import audit, backup, commands as cmd, lock
from .deploy import HostReport, checks_line, host_variables, switch_release
from .errors import HostError
from .facts import parse_compose_ps, parse_images, parse_project_containers, parse_tar
from .inventory import Inventory
from .paths import HostPaths
from .releases import History, read_releases
from .roles import RoleContext, RoleResult, load_role
from .stack import Stack, load_stack
from .transport.ssh import connect_host
from .ui import UI
from .verify import verify_host


@dataclass
class HostSession:
    """One connected host: inventory name, transport, merged variables, paths."""

    name: str
    t: Any
    vars: dict[str, Any]
    paths: HostPaths
    state: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def open_hosts(inventory_path: Path, pattern: str, stack: Stack, sets: dict[str, Any]) -> Iterator[list[HostSession]]:
    """Connect to every host ``pattern`` selects; close them all on exit.

    Raises:
        FerryError: bad inventory or pattern; HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = Inventory(inventory_path)
    sessions: list[HostSession] = []
    try:
        for h in inventory.select(pattern):
            v = host_variables(h, stack, sets)
            sessions.append(HostSession(h.name, connect_host(h, inventory), v,
                                        HostPaths(str(v["ferry_root"]), stack.name, "")))
        yield sessions
    finally:
        for s in sessions:
            s.t.close()


def rollback(inventory_path: Path, pattern: str, stack_dir: Path, to: str | None, sets: dict[str, Any],
             ui: UI, lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """``inv rollback``: switch each host back to ``to`` (default: the release before
    ``current``), ``compose up``, verify.

    Before touching anything it checks, on every selected host, that the target release
    exists and that all its images are present; then it locks every host.

    Raises:
        FerryError: no target on a host, the target's images are missing, a held lock.
    """
    stack = load_stack(stack_dir)
    reports = []
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            history = read_releases(s.t, s.paths.stack_dir)
            target = history.get(to) if to else history.previous()
            if target is None:
                known = ", ".join(r.id for r in history.releases) or "none"
                raise HostError(s.name, f"no release {to!r} to roll back to" if to else
                                f"no release before the current one ({history.current}); releases: {known}")
            if target.id == history.current:
                raise HostError(s.name, f"{target.id} is already the current release")
            have = parse_images(s.t.run(cmd.docker_images()).out)
            missing = sorted(target.image_ids - set(have))
            if missing:
                raise HostError(s.name, f"release {target.id} needs images that are gone: "
                                        f"{', '.join(m[:19] for m in missing)}")
            s.state.update(history=history, target=target)
        version = ",".join(sorted({s.state["target"].version for s in sessions}))
        with lock.holding([(s.t, s.paths.root) for s in sessions], stack.name, "rollback", version,
                          message, lock_wait):
            for s in sessions:
                reports.append(_rollback_host(s, stack, ui))
    return reports


def _rollback_host(s: HostSession, stack: Stack, ui: UI) -> HostReport:
    history: History = s.state["history"]
    target = s.state["target"]
    report = HostReport(s.name, release=target.id)
    ctx = RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui)
    started = time.monotonic()
    try:
        switch_release(ctx, target.id)
        result = load_role("compose-up").run(ctx)
        report.results.append(("compose-up", result, time.monotonic() - started))
        report.checks = verify_host(s.t, stack, ctx.state["rendered"]["compose.yml"], s.paths.current)
        line = checks_line(report.checks)
        seconds = time.monotonic() - started
        report.results.append(("rollback", RoleResult(True, f"{history.current} -> {target.id} in {seconds:.1f}s; {line}",
                                                      {"seconds": seconds}), seconds))
        ui.host_line(s.name, "rollback", f"{history.current} -> {target.id} (version {target.version}): "
                                         f"{result.summary}; {line}", True)
        if not all(c.ok for c in report.checks):
            raise HostError(s.name, line)
    except HostError as exc:
        report.status, report.error = "failed", str(exc)
    audit.record(s.t, s.paths.root, audit.entry("rollback", stack.name, target.version, target.id, report.status,
                                                f"from {history.current}" + (f": {report.error}" if report.error else "")))
    return report


def releases_table(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[list[str]]:
    """Rows ``host, release, version, created, by, current`` for ``inv releases``."""
    stack = load_stack(stack_dir)
    rows = []
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            history = read_releases(s.t, s.paths.stack_dir)
            for r in history.releases:
                rows.append([s.name, r.id, r.version, str(r.info.get("created", "")), str(r.info.get("by", "")),
                             "current" if r.id == history.current else ""])
    return rows


def status(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[dict[str, Any]]:
    """``inv status``: per host, the current release, each service's state, health and
    published ports, the deploy lock, disk use (bytes) of releases, bundles/store and
    Docker images, and the backup schedule with its last runs."""
    stack = load_stack(stack_dir)
    out = []
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            p = s.paths
            history = read_releases(s.t, p.stack_dir)
            containers = parse_project_containers(s.t.run(cmd.project_containers(stack.name), check=False).out)
            ps = {c.service: c for c in parse_compose_ps(s.t.run(cmd.compose_ps(
                stack.name, f"{p.current}/compose.yml", p.current), check=False).out)} if history.current else {}
            q = cmd.q
            du = s.t.run(cmd.sh(f"for d in {q(p.releases)} {q(p.root + '/bundles')} {q(p.store)}; do "
                                "du -sb \"$d\" 2>/dev/null || echo \"0 $d\"; done; "
                                "docker system df --format '{{.Type}}\t{{.Size}}' 2>/dev/null || true"),
                             check=False).out.splitlines()
            disk = {}
            for line in du:
                if "\t" in line and not line.split("\t")[0].isdigit():
                    kind, size = line.split("\t", 1)
                    disk[f"docker {kind.lower()}"] = size
                elif line.strip():
                    size, path = line.split(None, 1)
                    disk[path.rsplit("/", 1)[-1]] = int(size)
            current = history.get(history.current) if history.current else None
            sched = backup.schedule_status(backup.Target(s.t, stack, p, s.vars))
            out.append({
                "host": s.name,
                "release": history.current, "version": current.version if current else None,
                "releases": len(history.releases),
                "services": {name: {"state": c.status, "health": c.health or "-",
                                    "ports": sorted({f"{pub.get('PublishedPort')}->{pub.get('TargetPort')}"
                                                     for pub in (ps[name].publishers if name in ps else [])
                                                     if pub.get("PublishedPort")})}
                             for name, c in sorted(containers.items())},
                "lock": lock.read(s.t, p.root, stack.name),
                "disk": disk,
                "backup": {"schedule": dataclasses.asdict(sched["schedule"]), "log": sched["log"],
                           "last_run": sched["last_run"], "last_scheduled": sched["last_scheduled"],
                           "summary": backup.status_lines(sched)},
            })
    return out


def lock_status(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[tuple[str, dict | None]]:
    """``(host, lock info or None)`` per host."""
    stack = load_stack(stack_dir)
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        return [(s.name, lock.read(s.t, s.paths.root, stack.name)) for s in sessions]


def lock_release(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI) -> int:
    """Remove the stack's lock on each host whoever holds it (audited). Returns how many
    locks were removed."""
    stack = load_stack(stack_dir)
    removed = 0
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            info = lock.read(s.t, s.paths.root, stack.name)
            if info is None:
                ui.info(f"{s.name}: {stack.name} is not locked")
                continue
            ui.warn(f"{s.name}: removing the lock {lock.describe(info)}; if that run is still alive, "
                    f"it and the next deploy may now interleave")
            s.t.run(lock.release_command(lock.lock_dir(s.paths.root, stack.name), None))
            audit.record(s.t, s.paths.root, audit.entry("lock.release", stack.name, str(info.get("version", "")),
                                                        None, "ok", f"removed lock {lock.describe(info)}"))
            removed += 1
    return removed


def audit_entries(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any],
                  lines: int) -> list[tuple[str, dict[str, Any]]]:
    """The last ``lines`` audit records of each host, as ``(host, record)``."""
    stack = load_stack(stack_dir)
    out = []
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            for rec in audit.parse(s.t.run(audit.tail_command(s.paths.root, lines)).out):
                out.append((s.name, rec))
    return out


def verify_hosts(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list:
    """``inv verify``: the checks of :func:`ferry.verify.verify_host` on each host's
    current release (its compose file read from the host).

    Raises:
        FerryError: bad input, unreachable host, or no current release on a host.
    """
    stack = load_stack(stack_dir)
    checks = []
    with open_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            found = parse_tar(s.t.run(cmd.read_tar(s.paths.stack_dir, ["current/compose.yml"])).stdout)
            if "current/compose.yml" not in found:
                raise HostError(s.name, f"no current release of '{stack.name}' under {s.paths.stack_dir}")
            checks += verify_host(s.t, stack, found["current/compose.yml"], s.paths.current)
    return checks
