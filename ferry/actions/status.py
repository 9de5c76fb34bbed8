"""``status`` and ``verify``: what runs on each host, and whether it is healthy (read only)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..controller.inventory import Inventory
from ..host import containers, lock
from ..host.answers import on_host
from ..host.releases import read_releases
from ..host.shell import q, sh
from ..host.verify import Check, settle_seconds, verify_host
from ..model.stack import load_stack
from . import engines
from .backup import schedule_status, status_lines
from .common import current_compose, stack_hosts


def status(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[dict[str, Any]]:
    """``status``: per host, the current release, the stack's state (``running``,
    ``stopped``, ``degraded``, ``absent``: :func:`ferry.host.containers.stack_state`),
    each service's state, health and
    published ports, the deploy lock, disk use (bytes) of releases, bundles/store and
    Docker images, and the backup schedule with its next run and last runs."""
    stack = load_stack(stack_dir)
    engine = engines.for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        return engine.status(inventory_path, pattern, stack_dir, sets)
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            with on_host(s.name):
                out.append(host_status(s, stack))
    return out


def host_status(s, stack) -> dict[str, Any]:
    """One host's entry of :func:`status` (``s``: a :class:`ferry.host.session.HostSession`).

    Raises:
        AnswerError: the host answered something that cannot be read.
    """
    p = s.paths
    history = read_releases(s.t, p.stack_dir)
    running = containers.parse_project_containers(
        s.t.run(containers.project_containers(stack.name), check=False).out)
    compose_file = f"{p.current}/compose.yml"
    ps = {c.service: c for c in containers.parse_compose_ps(s.t.run(containers.compose_ps(
        stack.name, compose_file, p.current), check=False).out)} if history.current else {}
    dry = s.t.run(containers.up_dry_run(stack.name, compose_file, p.current), check=False) \
        if history.current else None
    would = containers.parse_up_dry_run(dry.err + dry.out) if dry else {}
    du = s.t.run(sh(f"for d in {q(p.releases)} {q(p.root + '/bundles')} {q(p.store)}; do "
                    "du -sb \"$d\" 2>/dev/null || echo \"0 $d\"; done; "
                    "docker system df --format '{{.Type}}\t{{.Size}}' 2>/dev/null || true"),
                 check=False).out.splitlines()
    disk = {}
    for line in du:
        if "\t" in line and not line.split("\t")[0].isdigit():
            kind, size = line.split("\t", 1)
            disk[f"docker {kind.lower()}"] = size
        elif len(line.split(None, 1)) == 2 and line.split(None, 1)[0].isdigit():   # du: BYTES PATH
            size, path = line.split(None, 1)
            disk[path.rsplit("/", 1)[-1]] = int(size)
    current = history.get(history.current) if history.current else None
    sched, nxt = schedule_status(s, stack)
    services = {name: {"state": c.status, "health": c.health or "-",
                       "in_sync": would.get(c.name) == "Running",
                       "ports": sorted({f"{pub.get('PublishedPort')}->{pub.get('TargetPort')}"
                                        for pub in (ps[name].publishers if name in ps else [])
                                        if pub.get("PublishedPort")})}
                for name, c in sorted(running.items())}
    names = {c.name for c in running.values()}
    for cname in sorted(set(would) - names):
        svc = cname[len(stack.name) + 1:].rsplit("-", 1)[0] if cname.startswith(stack.name + "-") else cname
        services[svc] = {"state": "absent", "health": "-", "in_sync": False, "ports": []}
    problems = status_problems(history.current, services)
    return {
        "host": s.name,
        "release": history.current, "version": current.version if current else None,
        "releases": len(history.releases),
        "state": containers.stack_state(running, list(services)) if history.current else "absent",
        "healthy": not problems, "problems": problems,
        "services": services,
        "lock": lock.read(s.t, p.root, stack.name),
        "disk": disk,
        "backup": {"schedule": dataclasses.asdict(sched.schedule), "next_run": nxt, "log": sched.log,
                   "last_run": sched.last_run, "last_scheduled": sched.last_scheduled,
                   "summary": status_lines(sched, nxt)},
    }


def status_problems(current: str | None, services: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a host's stack, one phrase each (empty: healthy): no current
    release; a service of the current release absent, not running, unhealthy, or whose
    container was made from another configuration than ``current``'s (``in_sync``)."""
    if not current:
        return ["no current release"]
    out = []
    for name, svc in services.items():
        if svc["state"] != "running":
            out.append(f"{name} is {svc['state']}")
        elif svc["health"] not in ("-", "healthy"):
            out.append(f"{name} is {svc['health']}")
        if svc["state"] != "absent" and not svc["in_sync"]:
            out.append(f"{name} does not run current's configuration")
    return out


def verify_hosts(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[Check]:
    """``verify``: the checks of :func:`ferry.host.verify.verify_host` on each host's
    current release (its compose file read from the host).

    Raises:
        FerryError: bad input, unreachable host, or no current release on a host.
    """
    stack = load_stack(stack_dir)
    engine = engines.for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        return engine.verify(inventory_path, pattern, stack_dir, sets)
    checks = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            current_compose(s, stack.name)            # no current release: one clear error
            checks += verify_host(s.t, stack, s.paths.current, settle_seconds(s.vars))
    return checks
