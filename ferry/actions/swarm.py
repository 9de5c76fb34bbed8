"""The swarm engine: ``swarm.setup``, ``swarm.status``, and deploy, rollback, verify,
status, backup and restore of a stack on a Docker Swarm (hosts whose ``ferry_engine`` is
``swarm``; :mod:`ferry.actions.engines` sends those commands here).

A swarm deploy, after the same controller phase as any deploy (:func:`ferry.actions.
deploy.prepare`: inventory, bundle end to end, trial render):

1. on the controller, for the primary manager's render: the stack file
   (:func:`ferry.model.swarm.stack_file`: what Swarm cannot do is refused, naming the
   key);
2. connect every node; each node's Swarm facts (read-only): a node of the swarm that
   the selection leaves out is refused (:func:`refuse_unselected`: it would lack the
   images), and a service that holds data must be pinned to one node
   (:func:`ferry.model.swarm.data_pins`), else nothing is changed anywhere;
3. on every node at once, in ONE round trip: the stack's lock (managers included) and,
   under it, the facts :data:`NODE_ROLES` read (:mod:`ferry.host.facts`), then their
   read-only preflight on those facts (a refusal releases the locks and changes
   nothing); then :data:`NODE_ROLES` on all nodes in parallel (the same
   content-addressed upload and image load as a Compose host), :data:`CLUSTER_ROLE`
   node by node (the swarm as the inventory says), and a check that every node of the
   swarm holds every image ID of the bundle (a node lacking one is refused, named,
   before anything is deployed);
4. :data:`PRIMARY_ROLES` on the primary manager: ``render-config`` (the release,
   written there) and ``stack-deploy`` (the release on every node, ``docker stack
   deploy``, the health gate, back to the previous release on failure);
5. verification (:mod:`ferry.host.swarm_verify`): per node and per stack; a failure
   activates the previous release again;
6. :data:`AFTER_ROLES` on every node (backup program and settings, retention).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from ..controller import composecli
from ..controller.inventory import Inventory, load_inventory
from ..errors import FerryError, HostError
from ..host import containers, lock
from ..host import swarm as hs
from ..host.activate import ActivationFailed
from ..host.facts import prefetched
from ..host.releases import read_releases
from ..host.session import HostSession, guarded, open_hosts
from ..host.shell import q, sh
from ..host.swarm_verify import verify_node, verify_stack
from ..host.transport.ssh import connect, connection_specs
from ..host.verify import Check, settle_seconds
from ..model.paths import HostPaths
from ..model.compose import data_paths, parse_model
from ..model.render import Release, render_release, template_context
from ..model.stack import Stack, load_stack
from ..model.swarm import (Cluster, NodeFacts, data_pins, data_services, plan_cluster, selection_engine,
                           stack_file)
from ..roles import RoleContext, RoleResult, load_role
from ..ui import UI
from .common import host_variables
from .deploy import HostReport, Plan, checks_line, preflight_roles, role_facts
from .rollback import rollback_target

NODE_ROLES = ["upload-bundle", "install-docker-offline", "load-images"]
"""Roles every node runs, in parallel (as a Compose host does)."""
CLUSTER_ROLE = "swarm-cluster"
"""The role that forms the swarm, node by node, the primary manager first."""
PRIMARY_ROLES = ["render-config", "stack-deploy"]
"""Roles the primary manager runs: the release, then ``docker stack deploy`` and the gate."""
AFTER_ROLES = ["backup", "prune-releases"]
"""Roles every node runs once verification passed (every node holds the releases)."""
BY_HAND = {"remove": "run `docker stack rm {stack}` on a manager",
           "logs": "run `docker service logs {stack}_<service>` on a manager",
           "exec": "run `docker exec` on the node that runs the task (`docker service ps {stack}_<service>`)",
           "restart": "run `docker service update --force {stack}_<service>` on a manager",
           "stop": "run `docker service scale {stack}_<service>=0` on a manager",
           "start": "deploy again (inv deploy), or `docker service scale` on a manager"}
"""Commands that act on Compose projects, refused on a swarm, with what to do instead
(:func:`ferry.actions.engines.compose_only`)."""

T = TypeVar("T")


def parallel(fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    """``fn`` over ``items`` in threads, results in order (one item: no thread)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


def cluster_of(hosts: Iterable[tuple[str, dict[str, Any]]], specs: dict[str, Any]) -> Cluster:
    """The cluster of the selected hosts (``(name, merged variables)``; ``specs``: their
    SSH connections, whose address is each node's default advertise address).

    Raises:
        FerryError: not all of them are ``ferry_engine: swarm``, or a bad ``swarm_*``
            variable (:func:`ferry.model.swarm.plan_cluster`).
    """
    hosts = list(hosts)
    if selection_engine(hosts) != "swarm":
        raise FerryError(f"{', '.join(n for n, _ in hosts)}: not a swarm (set ferry_engine: swarm on the group)")
    return plan_cluster(hosts, {name: spec.address for name, spec in specs.items()})


def primary_release(plan: Plan, cluster: Cluster) -> Release:
    """The primary manager's release as the trial render makes it (placeholders for
    generated secrets): its files, Compose's model and data paths."""
    host = cluster.primary.host
    placeholders = {k: "(generated on the host)" for k in plan.stack.generated_secrets}
    context = template_context(plan.host_vars[host], plan.stack, plan.paths(host).for_templates(), placeholders, host)
    return render_release(plan.stack, context, host, composecli.resolver(plan.bundle.path))


def data_roots(paths: HostPaths, release: Release) -> list[str]:
    """The stack's data dir and each ``./x`` data path of the release (as mounted)."""
    return [paths.data] + [f"{paths.current}/{p}" for p in release.data_paths]


def node_facts(sessions: Sequence[HostSession]) -> dict[str, hs.SwarmFacts]:
    """Every node's Swarm facts, in parallel."""
    found = parallel(lambda s: hs.parse_node_facts(s.t.run(hs.node_facts()).out), list(sessions))
    return {s.name: f for s, f in zip(sessions, found)}


def placement(cluster: Cluster, facts: dict[str, hs.SwarmFacts]) -> list[NodeFacts]:
    """What placement constraints can test of each node (inventory roles and labels)."""
    return [hs.placement_facts(n.host, facts[n.host], n.role, n.labels) for n in cluster.nodes]


UNSELECTED = {"deploy": "so it would lack the bundle's images: add it to the swarm's group, or drain it "
                         "(docker node update --availability drain {node}); nothing was deployed",
              "swarm.setup": "and swarm.setup takes the default roles (swarm_role) from the hosts selected: "
                             "select the swarm's whole group, or drain it (docker node update --availability "
                             "drain {node}); nothing was changed"}
"""Why :func:`refuse_unselected` refuses, per command, and what to do."""


def refuse_unselected(cluster: Cluster, nodes: Sequence[hs.SwarmNode], command: str = "deploy") -> None:
    """Refuse ``command`` (a key of :data:`UNSELECTED`) when the swarm has a node it may
    schedule on (ready, not drained) that is not among the selected hosts. A deploy: that
    node would not get the bundle's images, and ``docker stack deploy --resolve-image
    never`` would start tasks there that find none. ``swarm.setup``: the default roles
    of a partial selection would promote or demote the wrong nodes.

    Args:
        nodes: the swarm's nodes as a manager lists them (empty: not a swarm yet).

    Raises:
        FerryError: names the first such node, its address and what to do.
    """
    unknown = [n for n in nodes if n.availability == "active" and n.state == "ready" and cluster.by_addr(n.addr) is None]
    if unknown:
        n = unknown[0]
        raise FerryError(f"node {n.hostname} ({n.addr}) of the swarm is not among the selected hosts, "
                         + UNSELECTED[command].format(node=n.hostname))


def listed_nodes(cluster: Cluster, facts: dict[str, hs.SwarmFacts]) -> list[hs.SwarmNode]:
    """The swarm's nodes as the first manager of the selection that lists them sees them
    (empty: no selected manager is in a swarm yet)."""
    return next((facts[n.host].nodes for n in cluster.managers if facts[n.host].nodes), [])


def check_images(sessions: Sequence[HostSession], cluster: Cluster, nodes: Sequence[hs.SwarmNode],
                 images: list[dict[str, Any]]) -> None:
    """Every node the swarm may schedule on (ready, not drained) holds every image ID of
    the bundle (``docker stack deploy --resolve-image never`` uses what each node has).

    Args:
        images: the manifest's ``images`` (``{"ref": str, "id": "sha256:..."}``).

    Raises:
        FerryError: a node of the swarm that is not selected (:func:`refuse_unselected`).
        HostError: a selected node lacking images (names the node and the images).
    """
    refuse_unselected(cluster, nodes)
    have = parallel(lambda s: containers.parse_images(s.t.run(containers.docker_images()).out), list(sessions))
    for s, found in zip(sessions, have):
        missing = [i["ref"] for i in images if i["id"] not in found]
        if missing:
            raise HostError(s.name, f"lacks image {', '.join(missing)} (by ID): docker stack deploy "
                                    "--resolve-image never would not find it there; nothing was deployed")


def _contexts(plan: Plan, sessions: Sequence[HostSession], ui: UI, check: bool) -> dict[str, RoleContext]:
    """Each node's role context, on a :class:`~ferry.host.facts.Prefetched` transport
    (the facts :func:`_node_facts` names are gathered with the lock)."""
    for s in sessions:
        s.t = prefetched(s.t)
    return {s.name: RoleContext(s.name, s.t, s.vars, plan.bundle, plan.stack, s.paths, ui, check) for s in sessions}


def _node_facts(contexts: dict[str, RoleContext], roles: list[str]) -> Callable[[HostSession], list[list[str]]]:
    """For :func:`ferry.host.session.guarded`: what ``roles`` read first on a node (their
    declared ``facts``; upload-bundle's include the store listing), gathered in the round trip of its lock. Not
    the Swarm facts (:func:`node_facts`): they change on one node when another joins."""
    return lambda s: role_facts(contexts[s.name], roles)


def _node_preflight(contexts: dict[str, RoleContext], roles: list[str]) -> Callable[[HostSession], None]:
    """For :func:`ferry.host.session.guarded`: every role's read-only ``preflight`` on a
    node (on the facts gathered under the lock), then its store listing for upload-bundle."""
    return lambda s: preflight_roles(contexts[s.name], roles, s)


def _count_round_trips(sessions: Sequence[HostSession], reports: dict[str, HostReport]) -> None:
    """Each node's SSH round trips so far into its report (:attr:`HostReport.round_trips`)."""
    for s in sessions:
        if s.name in reports:
            reports[s.name].round_trips = s.round_trips


def _role(ctx: RoleContext, report: HostReport, role: str) -> RoleResult:
    started = time.monotonic()
    result = load_role(role).run(ctx)
    report.results.append((role, result, time.monotonic() - started))
    ctx.ui.host_line(ctx.host, role, result.summary, result.changed)
    return result


def _node_roles(plan: Plan, sessions: Sequence[HostSession], contexts: dict[str, RoleContext],
                reports: dict[str, HostReport], roles: list[str]) -> None:
    """``roles`` on every node in parallel (each node's store listing was read with its
    lock, :func:`_node_preflight`); the first failure (inventory order) raised."""
    def one(s: HostSession) -> HostError | None:
        ctx = contexts[s.name]
        try:
            for role in roles:
                _role(ctx, reports[s.name], role)
        except HostError as exc:
            return exc
        return None

    for s, err in zip(sessions, parallel(one, list(sessions))):
        if err is not None:
            reports[s.name].status, reports[s.name].error = "failed", str(err)
    failed = [r for r in reports.values() if r.status == "failed"]
    if failed:
        raise HostError(failed[0].host, (failed[0].error or "").split(": ", 1)[-1])


def form_cluster(cluster: Cluster, contexts: dict[str, RoleContext], reports: dict[str, HostReport]) -> Any:
    """Run :data:`CLUSTER_ROLE` node by node, the primary first.

    Returns:
        The run's ``ClusterRun`` (its ``nodes``: the swarm as the primary lists it).
    """
    run = load_role(CLUSTER_ROLE).ClusterRun(cluster)
    order = [cluster.primary.host] + [n.host for n in cluster.nodes if n.host != cluster.primary.host]
    for host in order:
        contexts[host].state.cluster = run
        _role(contexts[host], reports[host], CLUSTER_ROLE)
    return run


def _ui(ui: UI, parallel_run: bool, host: str) -> UI:
    return ui.for_parallel(host) if parallel_run else ui


def setup(plan: Plan, ui: UI, check: bool = False, lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """``swarm.setup``: Docker on every node (the bundle's installer: upload-bundle and
    install-docker-offline, in parallel), then the swarm as the inventory describes it
    (:data:`CLUSTER_ROLE`). Running it again changes nothing.

    Raises:
        FerryError: the selection is not one swarm, or leaves out a node of the swarm
            (:func:`refuse_unselected`), a bad ``swarm_*`` variable, a node
            unreachable, in another swarm, or Docker refusing init/join.
    """
    cluster = cluster_of(((h.name, plan.host_vars[h.name]) for h in plan.hosts), plan.specs)
    for w in cluster.warnings:
        ui.warn(f"swarm: {w}")
    reports = {h.name: HostReport(h.name) for h in plan.hosts}
    with open_hosts(plan.hosts, lambda h: plan.host_vars[h.name], lambda name, v: plan.paths(name),
                    lambda h: connect(plan.specs[h.name])) as sessions:
        refuse_unselected(cluster, listed_nodes(cluster, node_facts(sessions)), "swarm.setup")
        contexts = _contexts(plan, sessions, ui, check)
        with guarded(sessions, plan.stack.name, "swarm.setup", plan.bundle.version, message, lock_wait, check,
                     facts=_node_facts(contexts, NODE_ROLES[:2]),
                     refuse=_node_preflight(contexts, NODE_ROLES[:2])) as change:
            for ctx in contexts.values():
                ctx.ui = _ui(ui, len(contexts) > 1, ctx.host)
            try:
                _node_roles(plan, sessions, contexts, reports, NODE_ROLES[:2])
                for ctx in contexts.values():
                    ctx.ui = ui
                form_cluster(cluster, contexts, reports)
            except HostError as exc:
                bad = reports.get(exc.host)
                if bad is not None:
                    bad.status, bad.error = "failed", str(exc)
                for name, r in reports.items():
                    change.done(name, r.status if r.failed else "ok", r.error or "")
                raise
            for name, r in reports.items():
                change.done(name, "ok", "; ".join(res.summary for role, res, _ in r.results if role == CLUSTER_ROLE))
    return [reports[h.name] for h in plan.hosts]


def deploy(plan: Plan, ui: UI, check: bool = False, roles: list[str] | None = None, do_verify: bool = True,
           serial: int = 0, max_fail: float = 0.0, lock_wait: float = 0.0, message: str = "",
           force: bool = False) -> list[HostReport]:
    """Deploy ``plan`` to its swarm (see the module docstring). ``serial`` and
    ``max_fail`` do not apply (Swarm rolls services out by their ``update_config``) and
    are refused when given; ``roles`` is not supported either.

    Returns:
        One report per node (inventory order); the primary's carries the stack's
        outcome.

    Raises:
        FerryError: before any change (stack file refused, a data service not pinned,
            a node unreachable, lock held, a node lacking images).
    """
    if serial or max_fail or roles:
        raise FerryError("--serial, --max-fail and role lists do not apply to a swarm: Swarm rolls each service "
                         "out by its deploy.update_config (parallelism, order, failure_action)")
    cluster = cluster_of(((h.name, plan.host_vars[h.name]) for h in plan.hosts), plan.specs)
    for w in cluster.warnings:
        ui.warn(f"swarm: {w}")
    primary = cluster.primary.host
    release = primary_release(plan, cluster)
    stack_file(json.loads(composecli.config_json(release.files, plan.stack.name, plan.paths(primary).current,
                                                 plan.bundle.path)))
    reports = {h.name: HostReport(h.name) for h in plan.hosts}
    with open_hosts(plan.hosts, lambda h: plan.host_vars[h.name], lambda name, v: plan.paths(name),
                    lambda h: connect(plan.specs[h.name])) as sessions:
        contexts = _contexts(plan, sessions, ui, check)
        facts = node_facts(sessions)
        refuse_unselected(cluster, listed_nodes(cluster, facts))
        pins = data_pins(release.model, plan.stack, data_roots(plan.paths(primary), release), placement(cluster, facts))
        if pins:
            ui.info("data services pinned: " + ", ".join(f"{s} -> {h}" for s, h in sorted(pins.items())))
        with guarded(sessions, plan.stack.name, "deploy", plan.bundle.version, message, lock_wait, check,
                     facts=_node_facts(contexts, NODE_ROLES), refuse=_node_preflight(contexts, NODE_ROLES)) as change:
            try:
                _deploy(plan, ui, check, do_verify, cluster, sessions, contexts, reports, release)
            finally:
                _count_round_trips(sessions, reports)
                for name, r in reports.items():
                    change.done(name, r.status, r.error or "", r.release, plan.bundle.version)
    return [reports[h.name] for h in plan.hosts]


def _deploy(plan: Plan, ui: UI, check: bool, do_verify: bool, cluster: Cluster, sessions: list[HostSession],
            contexts: dict[str, RoleContext], reports: dict[str, HostReport], release: Release) -> None:
    primary = cluster.primary.host
    pctx = contexts[primary]
    for ctx in contexts.values():
        ctx.ui = _ui(ui, len(contexts) > 1, ctx.host)
    try:
        _node_roles(plan, sessions, contexts, reports, NODE_ROLES)
    except HostError:
        for r in reports.values():
            if r.status == "ok":
                r.status, r.error = "skipped", "not deployed: another node failed"
        raise
    for ctx in contexts.values():
        ctx.ui = ui
    try:
        run = form_cluster(cluster, contexts, reports)
        if not check:
            check_images(sessions, cluster, run.nodes, plan.bundle.manifest["images"])
        for role in PRIMARY_ROLES:
            if role == "stack-deploy":
                pctx.state.swarm = load_role(role).SwarmRun(
                    others=[contexts[n.host] for n in cluster.nodes if n.host != primary],
                    data_dirs=[f"{pctx.paths.data}/{d}" for d in [*plan.stack.data_dirs, *release.data_paths]],
                    images_changed=any(c.state.images_changed for c in contexts.values()))
            _role(pctx, reports[primary], role)
        verified = check or not do_verify or _verify_after_deploy(plan, cluster, sessions, contexts, reports)
        for r in reports.values():
            r.release = pctx.state.release
        if not verified:
            return
        for name, ctx in contexts.items():
            ctx.state.release = pctx.state.release
            for role in AFTER_ROLES:
                _role(ctx, reports[name], role)
    except ActivationFailed as exc:
        status = {"reverted": "rolled-back", "stopped": "stopped"}.get(exc.result, "failed")
        for name, r in reports.items():
            r.status = status
            r.release = pctx.state.release if exc.result == "reverted" else None
            r.error = str(exc) if name == primary else f"{status}: the swarm deploy failed (see {primary})"
    except HostError as exc:
        host = exc.host if exc.host in reports else primary
        reports[host].status, reports[host].error = "failed", str(exc)
        for name, r in reports.items():
            if name != host and r.status == "ok":
                r.status, r.error = "failed", f"the swarm deploy failed (see {host})"
        if pctx.state.activated and not check:
            _revert_after(plan, cluster, contexts, reports, str(exc))


def _verify_after_deploy(plan: Plan, cluster: Cluster, sessions: list[HostSession],
                         contexts: dict[str, RoleContext], reports: dict[str, HostReport]) -> bool:
    """Verify every node and the stack; on failure activate the previous release again."""
    pctx = contexts[cluster.primary.host]
    started = time.monotonic()
    checks = verify_sessions(plan.stack, cluster, sessions)
    seconds = time.monotonic() - started
    by_host: dict[str, list[Check]] = {}
    for c in checks:
        by_host.setdefault(c.host, []).append(c)
    for name, r in reports.items():
        r.checks = by_host.get(name, [])
        line = checks_line(r.checks)
        r.results.append(("verify", RoleResult(False, line), seconds))
        pctx.ui.host_line(name, "verify", line, False)
    bad = [c for c in checks if not c.ok]
    if not bad:
        return True
    _revert_after(plan, cluster, contexts, reports, checks_line(checks))
    return False


def _revert_after(plan: Plan, cluster: Cluster, contexts: dict[str, RoleContext], reports: dict[str, HostReport],
                  why: str) -> None:
    """After the release was deployed but failed (verification, a later role): back on
    the previous release everywhere (``stack-deploy``'s revert)."""
    pctx = contexts[cluster.primary.host]
    failed, previous = pctx.state.release, pctx.state.previous_release
    if not pctx.state.release_changed:
        for r in reports.values():
            r.status, r.error = "failed", r.error or why
        return
    exc = load_role("stack-deploy").revert(pctx, pctx.state.swarm, failed, previous, why, first=not previous)
    status = {"reverted": "rolled-back", "stopped": "stopped"}.get(exc.result, "failed")
    for name, r in reports.items():
        r.status = status
        r.release = previous if exc.result == "reverted" else None
        r.error = str(exc) if name == cluster.primary.host else f"{status}: see {cluster.primary.host}"


def verify_sessions(stack: Stack, cluster: Cluster, sessions: Sequence[HostSession]) -> list[Check]:
    """Per node and per stack checks (:mod:`ferry.host.swarm_verify`), the nodes in parallel.

    Raises:
        HostError: the primary manager cannot list the stack.
    """
    by_name = {s.name: s for s in sessions}
    primary = by_name[cluster.primary.host]
    settle = settle_seconds(primary.vars)
    state = hs.parse_stack_state(stack.name, primary.t.run(hs.stack_state(stack.name)).out)
    if not state.services:
        return [Check(primary.name, "stack", stack.name, False, "no service of the stack on the swarm")]
    ids = {n.hostname: n.id for n in state.nodes.values()}
    by_addr = {n.addr: n.id for n in state.nodes.values()}
    checks = verify_stack(primary.name, state, settle)
    nodes = [n for n in cluster.nodes if n.host in by_name]

    def one(n) -> list[Check]:
        node_id = by_addr.get(n.addr) or ids.get(n.host, "")
        if not node_id:
            return [Check(n.host, "node", n.host, False, "not a node of the swarm")]
        return verify_node(by_name[n.host].t, stack, state, node_id, settle)

    for found in parallel(one, nodes):
        checks += found
    return checks


# -- commands on a deployed stack -----------------------------------------------------

def _sessions(inventory_path: Inventory | Path, pattern: str, stack: Stack | None, sets: dict[str, Any]):
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(pattern)
    variables = {h.name: host_variables(h, stack, sets) for h in hosts}
    specs = connection_specs(hosts, inventory)
    cluster = cluster_of(((h.name, variables[h.name]) for h in hosts), specs)
    opened = open_hosts(hosts, lambda h: variables[h.name],
                        lambda name, v: HostPaths(str(v["ferry_root"]), stack.name if stack else "", ""),
                        lambda h: connect(specs[h.name]))
    return cluster, opened


def verify(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[Check]:
    """``verify`` on a swarm: per node and per stack (see :func:`verify_sessions`)."""
    stack = load_stack(stack_dir)
    cluster, opened = _sessions(inventory_path, pattern, stack, sets)
    with opened as sessions:
        return verify_sessions(stack, cluster, sessions)


def rollback(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, to: str | None, sets: dict[str, Any],
             ui: UI, lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """``rollback`` on a swarm: the release before ``current`` (or ``to``) of the primary
    manager activated on every node and deployed (``docker stack deploy`` of its own
    stack file), the health gate, verification.

    Before anything changes: the target must exist on the primary with its stack file,
    and every node must hold its images (by ID).

    Raises:
        FerryError: no such release, images gone on a node, a held lock.
    """
    stack = load_stack(stack_dir)
    cluster, opened = _sessions(inventory_path, pattern, stack, sets)
    with opened as sessions:
        by_name = {s.name: s for s in sessions}
        p = by_name[cluster.primary.host]
        history, target = rollback_target(p, to)
        if not p.t.run(["test", "-f", hs.stack_file_path(p.paths.stack_dir, target.id)], check=False).ok:
            raise HostError(p.name, f"release {target.id} has no {hs.STACK_FILE} (not deployed to a swarm)")
        for s, found in zip(sessions, parallel(lambda s: containers.parse_images(
                s.t.run(containers.docker_images()).out), list(sessions))):
            missing = sorted(target.image_ids - set(found))
            if missing:
                raise HostError(s.name, f"release {target.id} needs images that are gone: "
                                        f"{', '.join(m[:19] for m in missing)}")
        reports = {s.name: HostReport(s.name, release=target.id) for s in sessions}
        with guarded(sessions, stack.name, "rollback", target.version, message, lock_wait) as change:
            contexts = {s.name: RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui) for s in sessions}
            pctx = contexts[p.name]
            pctx.state.swarm = load_role("stack-deploy").SwarmRun(
                others=[contexts[n.host] for n in cluster.nodes if n.host != p.name])
            started = time.monotonic()
            try:
                result = load_role("stack-deploy").activate_release(pctx, target.id, history.current)
                checks = verify_sessions(stack, cluster, sessions)
                line = checks_line(checks)
                seconds = time.monotonic() - started
                ui.host_line(p.name, "rollback", f"{history.current} -> {target.id} (version {target.version}): "
                                                 f"{result.summary}; {line}", True)
                for c in checks:
                    if c.host in reports:
                        reports[c.host].checks.append(c)
                for r in reports.values():
                    r.results.append(("rollback", RoleResult(True, f"{history.current} -> {target.id} in "
                                                                   f"{seconds:.1f}s; {line}", {"seconds": seconds}),
                                      seconds))
                if any(not c.ok for c in checks):
                    raise HostError(p.name, line)
            except HostError as exc:
                for r in reports.values():
                    r.status, r.error = "failed", str(exc)
            for name, r in reports.items():
                change.done(name, r.status, f"from {history.current}" + (f": {r.error}" if r.error else ""),
                            r.release, target.version)
    return [reports[s] for s in by_name]


def nodes_status(inventory_path: Inventory | Path, pattern: str, sets: dict[str, Any]) -> dict[str, Any]:
    """``swarm.status``: the swarm's nodes as each manager of the selection sees them
    (first one that answers), and each selected host's own view.

    Returns:
        ``{"nodes": [{hostname, host (inventory name or ""), addr, role, availability,
        state, manager (reachability), leader, labels, engine}], "hosts": [{host, state,
        node_id, role (inventory), addr (inventory), error}], "manager": host asked,
        "problems": [line...]}``.
    """
    cluster, opened = _sessions(inventory_path, pattern, None, sets)
    with opened as sessions:
        facts = node_facts(sessions)
    out: dict[str, Any] = {"nodes": [], "hosts": [], "manager": "", "problems": []}
    for n in cluster.nodes:
        f = facts[n.host]
        out["hosts"].append({"host": n.host, "state": f.state if f.docker else "no docker", "node_id": f.node_id,
                             "role": n.role, "addr": n.addr, "error": f.error})
        if not f.docker:
            out["problems"].append(f"{n.host}: Docker does not answer")
        elif not f.in_swarm:
            out["problems"].append(f"{n.host}: not in the swarm ({f.state})")
    asked = next((n.host for n in cluster.managers if facts[n.host].control and facts[n.host].nodes), "")
    out["manager"] = asked
    if not asked:
        out["problems"].append("no manager of the selection answers for the swarm")
        return out
    for node in facts[asked].nodes:
        mine = cluster.by_addr(node.addr)
        out["nodes"].append({"hostname": node.hostname, "host": mine.host if mine else "", "addr": node.addr,
                             "role": node.role, "availability": node.availability, "state": node.state,
                             "manager": node.reachability, "leader": node.leader, "labels": node.labels,
                             "engine": node.engine, "id": node.id})
        if node.state != "ready":
            out["problems"].append(f"node {node.hostname}: {node.state}")
        if node.role == "manager" and node.reachability != "reachable":
            out["problems"].append(f"manager {node.hostname}: {node.reachability or 'unknown'}")
        if mine and mine.role != node.role:
            out["problems"].append(f"node {node.hostname}: {node.role}, the inventory says {mine.role} "
                                   "(inv swarm.setup)")
    managers = [n for n in out["nodes"] if n["role"] == "manager"]
    reachable = [n for n in managers if n["manager"] == "reachable"]
    if managers and len(reachable) * 2 <= len(managers):
        out["problems"].append(f"only {len(reachable)} of {len(managers)} managers reachable: no quorum")
    return out


def status(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[dict[str, Any]]:
    """``status`` of a stack on a swarm, in the shape of the Compose ``status``
    (:func:`ferry.actions.status.status`), one entry for the primary manager: the
    current release, and per service ``state`` (``3/3 ready``, ``global``/replicated),
    ``health`` (Swarm's update state), ``in_sync`` (desired replicas ready on the
    current spec) and ``ports`` (host-mode ports, on the nodes that run it).
    """
    stack = load_stack(stack_dir)
    cluster, opened = _sessions(inventory_path, pattern, stack, sets)
    with opened as sessions:
        p = next(s for s in sessions if s.name == cluster.primary.host)
        history = read_releases(p.t, p.paths.stack_dir)
        state = hs.parse_stack_state(stack.name, p.t.run(hs.stack_state(stack.name)).out)
        held = lock.read(p.t, p.paths.root, stack.name)
    settle = settle_seconds(p.vars)
    services, problems = {}, []
    for svc in sorted(state.services.values(), key=lambda s: s.name):
        r = hs.service_readiness(state, svc, settle)
        nodes = sorted({state.node_name(t.node) for t in svc.live() if t.node})
        services[svc.name] = {"state": f"{r.running}/{r.desired} ready ({svc.mode})", "health": svc.update or "-",
                              "in_sync": r.ready, "ports": [f"{port}/{proto} (host) on {', '.join(nodes)}"
                                                            for port, proto in svc.host_ports],
                              "nodes": nodes, "detail": r.detail}
        if not r.ready:
            problems.append(f"{svc.name}: {r.detail}")
    if not history.current:
        problems.insert(0, "no current release")
    elif not services:
        problems.append(f"no service of {stack.name} on the swarm")
    current = history.get(history.current) if history.current else None
    return [{"host": p.name, "engine": "swarm", "release": history.current,
             "version": current.version if current else None, "releases": len(history.releases),
             "state": "running" if not problems else "degraded", "healthy": not problems, "problems": problems,
             "services": services, "lock": held, "disk": {}, "backup": {"summary": []}}]


def data_hosts(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> dict[str, str]:
    """``{service: inventory host}``: where each data service of the current release
    runs (its running tasks' node), for ``backup`` and ``restore``.

    Raises:
        FerryError: the stack has no data service, or one runs on no node or on a node
            that is not selected.
    """
    stack = load_stack(stack_dir)
    cluster, opened = _sessions(inventory_path, pattern, stack, sets)
    with opened as sessions:
        p = next(s for s in sessions if s.name == cluster.primary.host)
        state = hs.parse_stack_state(stack.name, p.t.run(hs.stack_state(stack.name)).out)
        res = p.t.run(containers.compose_config(stack.name, f"{p.paths.current}/compose.yml", p.paths.current),
                      check=False)
    if not res.ok:
        raise HostError(p.name, f"no current release of {stack.name} to read: {res.last_error_line()}")
    model = parse_model(json.loads(res.out))
    roots = [p.paths.data] + [f"{p.paths.current}/{d}" for d in data_paths(model, stack.release_files(),
                                                                           p.paths.current)]
    wanted = data_services(model, stack, roots)
    if not wanted:
        raise FerryError(f"{stack.name} has no service that holds data on the swarm: nothing to back up on a node")
    out = {}
    for name in sorted(wanted):
        svc = state.services.get(name)
        nodes = sorted({t.node for t in (svc.live() if svc else []) if t.node})
        if not nodes:
            raise HostError(p.name, f"{stack.name}: data service {name} runs on no node")
        node = state.nodes.get(nodes[0])
        mine = cluster.by_addr(node.addr) if node else None
        if mine is None:
            raise FerryError(f"data service {name} runs on {state.node_name(nodes[0])}, which is not selected")
        out[name] = mine.host
    return out


def data_host(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> tuple[str, list[str]]:
    """The one node that holds the stack's data and the data services on it.

    Raises:
        FerryError: no data service, or data services on several nodes (each node's
            backup would only see its own: not supported).
    """
    pins = data_hosts(inventory_path, pattern, stack_dir, sets)
    nodes = sorted(set(pins.values()))
    if len(nodes) > 1:
        raise FerryError("the stack's data services run on several nodes (" + ", ".join(
            f"{s}: {h}" for s, h in sorted(pins.items())) + "): backups of a swarm need them on one node")
    return nodes[0], sorted(pins)


def backup(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
           keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, fetch_dir: Path | None = None,
           lock_wait: float = 0.0, message: str = "") -> list[dict[str, Any]]:
    """``backup`` on a swarm: the node that runs the data services (their running tasks'
    node, :func:`data_host`) runs the same backup as a Compose host
    (:func:`ferry.actions.backup.backup_hosts`); the program there finds the services'
    containers among the swarm's tasks (settings ``engine swarm``).

    Raises:
        FerryError: see :func:`data_host` and :func:`ferry.actions.backup.backup_hosts`.
    """
    from .backup import backup_hosts
    host, services = data_host(inventory_path, pattern, stack_dir, sets)
    ui.info(f"{load_stack(stack_dir).name}: {', '.join(services)} run on {host}: backing up there")
    return backup_hosts(inventory_path, host, stack_dir, sets, ui, keep_last, keep_daily, keep_weekly, fetch_dir,
                        lock_wait, message)


def _wait_stopped(t: Any, stack: str, services: list[str], seconds: float = 180) -> None:
    """Wait until no container of ``services`` of ``stack`` runs on the host of ``t``."""
    script = "; ".join(f"docker ps -q --filter {q(f'label=com.docker.swarm.service.name={stack}_{s}')} "
                       "--filter status=running" for s in services)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not t.run(sh(script)).out.strip():
            return
        time.sleep(1)
    raise HostError(t.host, f"the tasks of {', '.join(services)} did not stop within {seconds:.0f}s")


def restore(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
            backup: str = "latest", local: Path | None = None, safety: bool = True, lock_wait: float = 0.0,
            message: str = "") -> list[dict[str, Any]]:
    """``restore`` on a swarm, under the stack's lock on every node: the data services
    scaled to 0 (on the primary manager), the backup restored on the data node by the
    same program as on a Compose host (verified first; a ``-prerestore`` backup of the
    state before), then the release the data node's ``current`` names after it deployed
    to the swarm again (every node gets it; the health gate) and verified.

    Raises:
        FerryError: see :func:`data_host`; the program's error (a damaged member is
            named, nothing changed); a backup holding database dumps or Redis data (not
            supported on a swarm).
    """
    from ..model.backup import RestoreRequest
    from .backup import context
    stack = load_stack(stack_dir)
    host, services = data_host(inventory_path, pattern, stack_dir, sets)
    cluster, opened = _sessions(inventory_path, pattern, stack, sets)
    out = []
    with opened as sessions:
        by_name = {s.name: s for s in sessions}
        p, d = by_name[cluster.primary.host], by_name[host]
        before = read_releases(p.t, p.paths.stack_dir).current
        with guarded(sessions, stack.name, "restore", message=message, wait=lock_wait) as change:
            started = time.monotonic()
            ui.info(f"{stack.name}: scaling {', '.join(services)} to 0 (their data is on {host})")
            p.t.run(["docker", "service", "scale", "--detach", *[f"{stack.name}_{s}=0" for s in services]])
            _wait_stopped(d.t, stack.name, services)
            summary: dict[str, Any] = {}
            try:
                ctx = context(d, stack, ui)
                ctx.state.restore_request = RestoreRequest(backup, local, safety, change.tokens.get(d.name))
                result = load_role("restore").run(ctx)
                summary = {"host": host, **result.metrics}
            finally:
                rel = read_releases(d.t, d.paths.stack_dir).current or before
                contexts = {s.name: RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui) for s in sessions}
                pctx = contexts[p.name]
                if p.name != host and not p.t.run(["test", "-d", f"{p.paths.releases}/{rel}"], check=False).ok:
                    sd = load_role("stack-deploy")
                    p.t.run(sd.write_release(p.paths.stack_dir, []),
                            input=d.t.run(sd.read_release(d.paths.stack_dir, rel)).stdout)
                pctx.state.swarm = load_role("stack-deploy").SwarmRun(
                    others=[contexts[n.host] for n in cluster.nodes if n.host != p.name])
                deployed = load_role("stack-deploy").activate_release(pctx, rel, before)
                ui.host_line(p.name, "stack-deploy", deployed.summary, True)
            checks = verify_sessions(stack, cluster, sessions)
            bad = [c for c in checks if not c.ok]
            summary.update(wall_seconds=time.monotonic() - started, checks=checks)
            ui.info(f"{host}: restored {summary.get('restored')} (release {summary.get('release')}) in "
                    f"{summary['wall_seconds']:.1f} s; the swarm runs it again"
                    + (f"; the state before is backup {summary['safety']}" if summary.get("safety") else ""))
            ui.info("verify: " + (f"{len(checks)} checks passed" if not bad else
                                  "; ".join(f"{c.host} {c.kind} {c.target}: {c.detail}" for c in bad)))
            for s in sessions:
                change.done(s.name, "ok" if not bad else "failed", str(summary.get("restored")), rel)
            out.append(summary)
    return out
