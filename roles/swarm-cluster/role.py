"""swarm-cluster: the Docker Swarm of the cluster, as the inventory describes it.

Runs on each node of the cluster in inventory order, the primary manager first
(:class:`ferry.model.swarm.Cluster`), all sharing one :class:`ClusterRun`
(``ctx.state.cluster``). Facts: ``uname -n`` and ``docker info`` on the node, and
``docker node inspect`` of every node on the primary.

- the primary manager, not yet in a swarm: ``POST /swarm/init`` advertising
  ``swarm_advertise_addr`` (with ``swarm_default_addr_pool`` if set);
- any other node not in a swarm: ``POST /swarm/join`` with the join token of its role,
  read from the primary (``GET /swarm``). Token and request body travel on stdin only
  (:mod:`ferry.host.swarm`): never in a command line, never printed;
- a node in the swarm whose role differs from the inventory's is promoted or demoted
  (never the primary); labels of ``swarm_labels`` that are missing or differ are set.

A node that belongs to another swarm is refused (``docker swarm leave`` it first); a
node already right changes nothing (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry.errors import HostError
from ferry.host import swarm as hs
from ferry.model.swarm import Cluster
from ferry.roles import RoleContext, RoleResult


@dataclass
class ClusterRun:
    """What the nodes of one ``swarm-cluster`` run share.

    Attributes:
        cluster: the inventory's cluster.
        primary: the primary manager's transport (set when the role ran there).
        facts: ``{host: SwarmFacts}`` as each node was found (before any change).
        nodes: the swarm's nodes, as the primary last listed them.
    """

    cluster: Cluster
    primary: Any = None
    facts: dict[str, hs.SwarmFacts] = field(default_factory=dict)
    nodes: list[hs.SwarmNode] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def token(self, role: str) -> str:
        """The join token of ``role`` (read once from the primary, kept in memory only)."""
        if not self._tokens:
            res = self.primary.run(hs.swarm_api("GET", "/swarm"), check=False)
            self._tokens = hs.join_tokens(hs.parse_api(self.primary.host, "reading the join tokens", res.out))
        return self._tokens[role]

    def refresh(self) -> list[hs.SwarmNode]:
        """List the swarm's nodes again on the primary."""
        self.nodes = hs.parse_node_facts(self.primary.run(hs.node_facts()).out).nodes
        return self.nodes


def swarm_facts(ctx: RoleContext) -> hs.SwarmFacts:
    """The node's Swarm facts (:func:`ferry.host.swarm.node_facts`), asked of the node
    every time (not a role's ``facts`` gathered ahead: they change as nodes join)."""
    return hs.parse_node_facts(ctx.t.run(hs.node_facts()).out)


def run(ctx: RoleContext) -> RoleResult:
    """Initialise, join, promote/demote and label as needed; see the module docstring.

    Raises:
        HostError: no Docker on the node, the node in another swarm or in an error
            state, the primary in a swarm but not a manager, Docker refusing the
            init or join (its message).
    """
    run_: ClusterRun = ctx.state.cluster
    node = run_.cluster.node(ctx.host)
    primary = run_.cluster.primary
    found = swarm_facts(ctx)
    run_.facts[ctx.host] = found
    if not found.docker:
        if ctx.check:
            return RoleResult(True, f"would {'initialise the swarm' if node is primary else 'join as ' + node.role} "
                                    "(once Docker is installed)")
        raise HostError(ctx.host, "Docker does not answer on this host (install-docker-offline runs first)")
    if found.state not in ("inactive", "active"):
        raise HostError(ctx.host, f"the node's swarm state is {found.state}"
                                  + (f": {found.error}" if found.error else "") + " (see `docker info`)")
    done: list[str] = []
    if node is primary:
        run_.primary = ctx.t
        if not found.in_swarm:
            if ctx.check:
                return RoleResult(True, f"would initialise the swarm advertising {node.addr}")
            pool = [str(p) for p in ctx.vars.get("swarm_default_addr_pool") or []]
            res = ctx.t.run(hs.swarm_api("POST", "/swarm/init", body=True), input=hs.init_request(node.addr, pool),
                            check=False)
            hs.parse_api(ctx.host, "docker swarm init", res.out)
            found = swarm_facts(ctx)
            done.append(f"initialised the swarm advertising {node.addr}")
        elif not found.control:
            raise HostError(ctx.host, "is in a swarm but not as a reachable manager: the primary manager (the first "
                                      "manager of the inventory) must be one")
        run_.refresh()
    else:
        if run_.primary is None:
            if ctx.check:
                return RoleResult(True, f"would join the swarm as {node.role}")
            raise HostError(ctx.host, f"the primary manager {primary.host} is not in a swarm")
        known = {n.id for n in run_.nodes}
        if found.in_swarm and found.node_id not in known:
            raise HostError(ctx.host, f"belongs to another swarm (node {found.node_id[:12]}, managers "
                                      f"{', '.join(found.managers) or '?'}): run `docker swarm leave --force` "
                                      "there first if it should join this one")
        if not found.in_swarm:
            if ctx.check:
                return RoleResult(True, f"would join the swarm as {node.role} (manager {primary.addr})")
            res = ctx.t.run(hs.swarm_api("POST", "/swarm/join", body=True),
                            input=hs.join_request(node.addr, primary.addr, run_.token(node.role)), check=False)
            hs.parse_api(ctx.host, "docker swarm join", res.out)
            found = swarm_facts(ctx)
            run_.refresh()
            done.append(f"joined the swarm as {node.role}")
    me = next((n for n in run_.nodes if n.id == found.node_id), None)
    if me is None:
        raise HostError(ctx.host, f"node {found.node_id[:12]} is not among the swarm's nodes on {primary.host}")
    role = node.role if me.role != node.role else None
    if role == "worker" and node is primary:
        role = None
    labels = {k: v for k, v in node.labels.items() if me.labels.get(k) != v}
    if role or labels:
        what = ([f"{'promote' if role == 'manager' else 'demote'} to {role}"] if role else []) + \
               ([f"labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}"] if labels else [])
        if ctx.check:
            return RoleResult(True, "would " + "; ".join(done + what))
        run_.primary.run(hs.node_update(me.id, role, labels))
        run_.refresh()
        done += [("promoted to manager" if role == "manager" else "demoted to worker")] if role else []
        done += [f"labelled {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}"] if labels else []
    if not done:
        return RoleResult(False, f"in the swarm as {me.role}" + (" (leader)" if me.leader else "")
                                 + f", {me.availability}, labels up to date")
    return RoleResult(True, "; ".join(done))
