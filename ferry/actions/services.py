"""``restart``, ``stop`` and ``start``: the services of the current release, locked and
audited like every change.

Hosts are handled one after the other (a restart of a group is a rolling one). After
``restart`` and ``start`` the command waits, up to ``compose_wait_timeout`` seconds,
until the services run and are healthy (Compose's ``restart``/``start`` do not wait);
after ``stop`` it checks that none runs. ``status`` then reports the stack ``stopped``,
and the next ``deploy`` brings it back (compose-up finds the containers not running).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HostError
from ..host import containers
from ..host.releases import read_releases
from ..host.session import HostSession, guarded
from ..model import options
from ..model.stack import Stack, load_stack
from ..roles import RoleContext, load_role
from ..ui import UI
from . import engines
from .common import compose_args, current_services, stack_hosts

ACTIONS = ("restart", "stop", "start")


@dataclass
class ServicesReport:
    """One host's outcome.

    Attributes:
        services: ``{service: (state, health)}`` after the command.
        started: ``{service: State.StartedAt}`` after the command.
        changed: False when ``stop``/``start`` found every service in that state already.
    """

    host: str
    release: str | None = None
    services: dict[str, tuple[str, str]] = field(default_factory=dict)
    started: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    changed: bool = True


def lifecycle(action: str, inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
              services: list[str] | None = None, lock_wait: float = 0.0, message: str = "",
              timeout: int | None = None) -> list[ServicesReport]:
    """Run ``docker compose restart|stop|start`` for ``services`` (default: all) of the
    current release on each selected host, one host after the other.

    Args:
        action: ``restart``, ``stop`` or ``start``.
        timeout: seconds a container gets to stop before it is killed (Compose's
            default: 10).

    Raises:
        FerryError: an unknown service or no current release on a host (checked on every
            host before any is locked), a held lock, or a host whose services do not
            reach the wanted state (its audit line says ``failed``; later hosts are not
            touched).
    """
    if action not in ACTIONS:
        raise ValueError(action)
    stack = load_stack(stack_dir)
    engines.compose_only(inventory_path, pattern, stack, sets, action)
    reports = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        wanted = {s.name: options.services(services or [], current_services(s, stack.name), stack.name)
                  or current_services(s, stack.name) for s in sessions}
        releases = {s.name: read_releases(s.t, s.paths.stack_dir) for s in sessions}
        version = ",".join(sorted({r.version for h in releases.values() for r in h.releases
                                   if r.id == h.current}))
        with guarded(sessions, stack.name, action, version, message, lock_wait) as change:
            for s in sessions:
                names = wanted[s.name]
                current = releases[s.name].current
                try:
                    report = _one(s, stack, action, names, services, timeout, ui)
                except HostError as exc:
                    change.done(s.name, "failed", str(exc), current)
                    raise
                report.release = current
                change.done(s.name, "ok", f"{', '.join(names)} in {report.seconds:.1f}s" if report.changed
                            else f"{', '.join(names)}: nothing to do", current)
                reports.append(report)
    return reports


def _states(s: HostSession, stack: Stack, names: list[str]) -> dict[str, containers.Container | None]:
    found = containers.parse_project_containers(s.t.run(containers.project_containers(stack.name)).out)
    return {n: found.get(n) for n in names}


def _reached(action: str, mine: dict[str, containers.Container | None]) -> bool:
    if action == "stop":
        return all(c is None or c.status != "running" for c in mine.values())
    return all(c is not None and c.healthy for c in mine.values())


def _one(s: HostSession, stack: Stack, action: str, names: list[str], given: list[str] | None, timeout: int | None,
         ui: UI) -> ServicesReport:
    started = time.monotonic()
    report = ServicesReport(s.name)
    mine = _states(s, stack, names)
    gone = sorted(n for n, c in mine.items() if c is None)
    if gone and action != "stop":
        raise HostError(s.name, f"{stack.name} has no container for {', '.join(gone)}: {action} works on the "
                                f"containers of the current release; `deploy` creates them")
    changed = action == "restart" or not _reached(action, mine)
    done = True
    if changed:
        argv = containers.compose_lifecycle(*compose_args(s, stack.name), action, list(given or []), timeout)
        res = s.t.run(argv, check=False, timeout=600)
        if not res.ok:
            raise HostError(s.name, f"docker compose {action} failed: {res.last_error_line()}")
        wait = int(s.vars.get("compose_wait_timeout", 120))
        deadline = time.monotonic() + wait
        while True:
            mine = _states(s, stack, names)
            done = _reached(action, mine)
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
    report.services = {n: (c.status, c.health or "-") if c else ("absent", "-") for n, c in mine.items()}
    report.started = {n: c.started_at for n, c in mine.items() if c}
    report.seconds = time.monotonic() - started
    report.changed = changed
    states = ", ".join(f"{n} {st}{'/' + h if h != '-' else ''}" for n, (st, h) in report.services.items())
    if not done:
        bad = [n for n, c in mine.items() if not _reached(action, {n: c})]
        ctx = RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui)
        load_role("compose-up").show_logs(ctx, bad)
        raise HostError(s.name, f"after {action}, not {'stopped' if action == 'stop' else 'healthy'} "
                                f"within {wait}s: {states}")
    already = {"stop": "already stopped", "start": "already running"}.get(action, "")
    ui.host_line(s.name, action, f"{states} ({report.seconds:.1f}s)" if changed else f"{already}: {states}", changed)
    return report
