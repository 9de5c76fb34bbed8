"""Verification of a stack on a Docker Swarm, with testinfra, per node and per stack.

Per node (two SSH round trips, as :mod:`ferry.host.verify`): ``docker inspect`` of the
stack's task containers on the node and the listening TCP sockets; then the health
URLs of the host-mode ports of the services that have a task there. testinfra's own
``docker`` and ``socket`` modules assert on those answers:

- every task the swarm scheduled on the node (desired state ``running``, from the
  manager's :class:`ferry.host.swarm.StackState`) has its container running, and
  ``healthy`` when it has a healthcheck, or running ``compose_settle_seconds`` without
  one (:func:`ferry.host.verify.readiness`);
- every port a service publishes in ``mode: host`` listens on each node that runs one
  of its tasks, and the service's ``health_paths`` entry answers HTTP 200 there.

Per stack (from the manager): every service has as many ready replicas as it wants
(:func:`ferry.host.swarm.service_readiness`).
"""

from __future__ import annotations

import json
from typing import Any

from ferry.host import containers, shell
from ferry.host import swarm as hs
from ferry.host.verify import SOCKETS, Check, FerryBackend, infra_host, port_checks, readiness
from ferry.model.stack import Stack


def verify_stack(host: str, state: hs.StackState, settle: float) -> list[Check]:
    """One ``replicas`` check per service: desired == ready (from the manager ``host``)."""
    out = []
    for svc in sorted(state.services.values(), key=lambda s: s.name):
        r = hs.service_readiness(state, svc, settle)
        out.append(Check(host, "replicas", svc.name, r.ready and r.running >= r.desired, r.detail))
    return out


def verify_node(transport: Any, stack: Stack, state: hs.StackState, node_id: str, settle: float) -> list[Check]:
    """Every check of one node (see the module docstring).

    Args:
        transport: the node's transport.
        stack: the deployed stack (name, health paths).
        state: the stack as a manager reports it.
        node_id: this node's Swarm node ID.
        settle: seconds a container without a healthcheck must have been running.
    """
    host = infra_host(transport)
    backend: FerryBackend = host.backend
    name = transport.host
    containers_cmd = hs.task_containers(stack.name)[-1]
    listing, _ = backend.gather([containers_cmd, SOCKETS])
    now, _ = containers.parse_project_state(listing.out)
    by_id = {}
    for info in containers.parse_inspect(listing.out.partition("\n")[2]):
        _, c = containers.container_from_inspect(info)
        by_id[c.id] = c
        backend.remember(backend.get_command("docker inspect %s", c.name), 0, json.dumps([info]).encode())
    mine = [(svc, t) for svc in state.services.values() for t in svc.live() if t.node == node_id]
    urls: dict[str, str] = {}
    for svc, _ in mine:
        path = stack.health_paths.get(svc.name)
        for port, proto in svc.host_ports:
            if path and proto == "tcp":
                url = f"http://127.0.0.1:{port}{path}"
                urls[url] = shell.join(containers.http_status(url))
    if urls:
        backend.gather(list(urls.values()))
    checks: list[Check] = []
    ported: set[str] = set()
    for svc, task in sorted(mine, key=lambda x: (x[0].name, x[1].slot)):
        label = f"{svc.name}.{task.slot}" if svc.mode == "replicated" else svc.name
        c = by_id.get(task.container)
        if c is None:
            checks.append(Check(name, "task", label, False, f"task {task.id[:12]} is {task.state}: no container here"
                                + (f" ({task.error})" if task.error else "")))
            continue
        ok, detail = readiness(svc.name, c, now, settle, False)
        ok = ok and host.docker(c.name).inspect()["State"]["Running"]        # testinfra, from the gathered answers
        checks.append(Check(name, "task", label, ok, detail))
        if svc.name in ported:
            continue
        ported.add(svc.name)
        for port, proto in svc.host_ports:
            if proto != "tcp":
                continue
            checks += port_checks(host, name, stack, urls, svc.name, port, ("0.0.0.0", "::"),
                                  f"{svc.name} 0.0.0.0:{port} (mode host)")
    return checks
