"""Docker Swarm, the pure part: the cluster an inventory describes, the placement rules a
stack must follow there, and the Compose file ``docker stack deploy`` reads.

**The cluster.** The selected hosts whose ``ferry_engine`` is ``swarm`` form one
cluster (:func:`plan_cluster`). Per host:

- ``swarm_role``: ``manager`` or ``worker``. Hosts that do not say are workers, except
  when no host names a manager: then the first host is the manager, and the first
  three are managers when the cluster has three hosts or more (Raft needs a majority
  of managers: three survive the loss of one);
- ``swarm_advertise_addr``: the address other nodes reach this one at (default: the
  address Ferry connects to, ``ansible_host``); it must be an IP address, since it is
  also how Ferry matches a Swarm node to its inventory host;
- ``swarm_labels``: node labels (``{disk: ssd, llm-chat.data: "true"}``), set by
  ``swarm.setup``; placement constraints such as ``node.labels.disk == ssd`` use them.

The primary manager (the first manager in inventory order) initialises the swarm and
is where Ferry runs ``docker stack deploy``.

**Placement.** A service that holds data (a named volume, a bind mount under the
stack's data dir or a ``./x`` data path, or an entry of stack.yml's ``backup:``) keeps
it on the disk of ONE node, so its placement constraints must select exactly one node
of the cluster (:func:`data_pins`): ``node.hostname == sandbox-1``, or a label only one
node carries. Otherwise Swarm may start it elsewhere on an empty data dir.

**The stack file.** ``docker stack deploy`` (Docker 20.10) reads the Compose file
format 3.x, not the Compose specification. :func:`stack_file` turns Compose's own
normalized model of a release (``docker compose config --format json``: every value
interpolated, ``env_file`` inlined, long syntax) into a version 3.8 file with the same
meaning for Swarm, and refuses what Swarm services cannot do (``privileged``,
``devices``, ``network_mode``...), naming the key.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import FerryError
from .compose import ComposeModel, named_volumes

ENGINES = ("compose", "swarm")
"""Values of ``ferry_engine``."""

ROLES = ("manager", "worker")
"""Values of ``swarm_role``."""

QUORUM_MANAGERS = 3
"""Managers the default gives a cluster of at least this many hosts."""

STACK_FILE = "swarm-stack.json"
"""The file ``docker stack deploy`` reads, in each release directory (0600: it holds
the environment, ``env_file`` values included)."""

_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"[^\x00-\x1f\x7f]{0,256}\Z")


def engine_of(host: str, variables: Mapping[str, Any]) -> str:
    """``ferry_engine`` of one host (``compose`` when unset).

    Raises:
        FerryError: another value (names the host).
    """
    value = variables.get("ferry_engine") or "compose"
    if value not in ENGINES:
        raise FerryError(f"{host}: ferry_engine: '{value}' must be one of {', '.join(ENGINES)}")
    return str(value)


def selection_engine(hosts: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The one engine of a selection of hosts (``(name, variables)`` pairs).

    Raises:
        FerryError: hosts of both engines selected (one command serves one engine: a
            swarm is deployed as a whole, Compose hosts one by one).
    """
    engines: dict[str, list[str]] = {}
    for name, variables in hosts:
        engines.setdefault(engine_of(name, variables), []).append(name)
    if len(engines) > 1:
        raise FerryError("--host selects hosts of two engines: " + "; ".join(
            f"ferry_engine {e}: {', '.join(names)}" for e, names in sorted(engines.items()))
            + " (select the swarm's group or the Compose hosts, one at a time)")
    return next(iter(engines), "compose")


@dataclass(frozen=True)
class Node:
    """One host of the cluster as the inventory describes it.

    Attributes:
        host: inventory name.
        role: ``manager`` or ``worker``.
        addr: advertise address (an IP address).
        labels: node labels Ferry sets (``swarm_labels``).
        explicit: the role came from ``swarm_role`` (not the default).
    """

    host: str
    role: str
    addr: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    explicit: bool = False


@dataclass
class Cluster:
    """The cluster of the selected hosts (:func:`plan_cluster`).

    Attributes:
        nodes: in inventory order.
        warnings: one line each (an even number of managers...).
    """

    nodes: list[Node]
    warnings: list[str] = field(default_factory=list)

    @property
    def managers(self) -> list[Node]:
        """Manager nodes, in inventory order."""
        return [n for n in self.nodes if n.role == "manager"]

    @property
    def primary(self) -> Node:
        """The first manager: it initialises the swarm and runs ``docker stack deploy``."""
        return self.managers[0]

    def node(self, host: str) -> Node:
        """The node of inventory host ``host`` (KeyError when not in the cluster)."""
        return next(n for n in self.nodes if n.host == host)

    def by_addr(self, addr: str) -> Node | None:
        """The node advertising ``addr`` (a Swarm node's ``Status.Addr``), or None."""
        return next((n for n in self.nodes if n.addr == addr), None)


def _labels(host: str, value: Any) -> dict[str, str]:
    if value in (None, "", {}):
        return {}
    if not isinstance(value, Mapping):
        raise FerryError(f"{host}: swarm_labels must be a mapping of label: value, not {type(value).__name__}")
    out = {}
    for key, val in value.items():
        key = str(key)
        if not _LABEL_KEY.match(key):
            raise FerryError(f"{host}: swarm_labels: '{key}' is not a valid label name "
                             "(letters, digits, '.', '_', '-', '/')")
        if isinstance(val, (Mapping, list)) or val is None:
            raise FerryError(f"{host}: swarm_labels.{key} must be a string, number or boolean")
        text = str(val).lower() if isinstance(val, bool) else str(val)
        if not _LABEL_VALUE.match(text):
            raise FerryError(f"{host}: swarm_labels.{key}: the value holds control characters")
        out[key] = text
    return out


def _addr(host: str, variables: Mapping[str, Any], default: str) -> str:
    given = variables.get("swarm_advertise_addr") or default or host
    try:
        return str(ipaddress.ip_address(str(given)))
    except ValueError:
        key = "swarm_advertise_addr" if variables.get("swarm_advertise_addr") else "ansible_host"
        raise FerryError(f"{host}: {key} '{given}' is not an IP address: set swarm_advertise_addr to the "
                         "address the other nodes reach this host at") from None


def plan_cluster(hosts: Sequence[tuple[str, Mapping[str, Any]]], addresses: Mapping[str, str] | None = None) -> Cluster:
    """The cluster of ``hosts`` (``(inventory name, merged variables)``, inventory order);
    see the module docstring for the roles' defaults.

    Args:
        hosts: the selected hosts.
        addresses: each host's address as Ferry connects to it (its SSH connection's
            ``ansible_host``), the default advertise address; absent: the host's name.

    Raises:
        FerryError: no host, a ``swarm_role`` other than manager/worker, an advertise
            address that is not an IP address or used twice, bad ``swarm_labels``, or
            no manager (each names the host and variable).
    """
    if not hosts:
        raise FerryError("a swarm needs at least one host")
    roles: dict[str, str | None] = {}
    for name, variables in hosts:
        role = variables.get("swarm_role") or None
        if role is not None and role not in ROLES:
            raise FerryError(f"{name}: swarm_role: '{role}' must be manager or worker")
        roles[name] = role
    if not any(r == "manager" for r in roles.values()):
        if any(r == "worker" for r in roles.values()) and all(roles.values()):
            raise FerryError("no host of the swarm is a manager (swarm_role): "
                             + ", ".join(n for n, _ in hosts) + " are all workers")
        undecided = [n for n, _ in hosts if roles[n] is None]
        count = QUORUM_MANAGERS if len(hosts) >= QUORUM_MANAGERS else 1
        default_managers = set(undecided[:count])
    else:
        default_managers = set()
    nodes, seen = [], {}
    for name, variables in hosts:
        addr = _addr(name, variables, (addresses or {}).get(name, ""))
        if addr in seen:
            raise FerryError(f"{name}: advertise address {addr} is also {seen[addr]}'s (swarm_advertise_addr)")
        seen[addr] = name
        role = roles[name] or ("manager" if name in default_managers else "worker")
        nodes.append(Node(name, role, addr, _labels(name, variables.get("swarm_labels")), roles[name] is not None))
    cluster = Cluster(nodes)
    managers = len(cluster.managers)
    if managers % 2 == 0:
        cluster.warnings.append(f"the swarm has {managers} managers: an even number tolerates no more lost "
                                f"managers than {managers - 1} would (Raft needs a majority)")
    return cluster


# -- placement -------------------------------------------------------------------------

_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s*(==|!=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class NodeFacts:
    """What placement constraints can test of a node (``hostname`` from the host,
    ``id`` once it is in the swarm)."""

    host: str
    hostname: str
    role: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    id: str = ""


def _matches(constraint: str, node: NodeFacts) -> bool | None:
    """Whether ``node`` satisfies one constraint; None when Ferry cannot tell (an
    attribute it does not know, such as ``engine.labels``)."""
    m = _CONSTRAINT.match(constraint)
    if not m:
        return None
    attr, op, want = m.group(1), m.group(2), m.group(3)
    if attr == "node.hostname":
        have: str | None = node.hostname
    elif attr == "node.id":
        have = node.id or None
    elif attr == "node.role":
        have = node.role
    elif attr.startswith("node.labels."):
        have = node.labels.get(attr[len("node.labels."):])
        if have is None:
            return op == "!="
    else:
        return None
    if have is None:
        return None
    equal = have.lower() == want.lower() if attr in ("node.hostname", "node.role") else have == want
    return equal if op == "==" else not equal


def eligible_nodes(constraints: Iterable[str], nodes: Sequence[NodeFacts]) -> list[str]:
    """Inventory names of the nodes that may satisfy every constraint (a node counts
    when Ferry cannot tell, so the result is never too small)."""
    constraints = list(constraints)
    return [n.host for n in nodes if all(_matches(c, n) is not False for c in constraints)]


def data_services(model: ComposeModel, stack: Any, data_roots: Sequence[str]) -> dict[str, str]:
    """``{service: what data it holds}`` for every service that keeps data on a node's
    disk: a named volume, a bind mount under one of ``data_roots`` (the stack's data
    dir, and each release's ``./x`` data paths), an entry of stack.yml's ``backup:``
    (sqlite, mysql, redis)."""
    out: dict[str, str] = {}
    volumes = named_volumes(model)
    roots = [r.rstrip("/") for r in data_roots]
    spec = getattr(stack, "backup", None)
    declared = {e["service"]: f"backup.{kind}" for kind in ("sqlite", "mysql", "redis")
                for e in (getattr(spec, kind, None) or [])}
    for name, svc in model.services.items():
        reasons = [f"volume {volumes.get(v, v)}" for v, _ in svc.volumes]
        reasons += [f"bind mount {b.source}" for b in svc.binds
                    if any(b.source == r or b.source.startswith(r + "/") for r in roots)]
        if name in declared:
            reasons.append(f"stack.yml {declared[name]}")
        if reasons:
            out[name] = ", ".join(reasons)
    return out


def constraints_of(raw: Mapping[str, Any]) -> list[str]:
    """A service's placement constraints (Compose's model: ``deploy.placement.constraints``)."""
    return [str(c) for c in ((((raw.get("deploy") or {}).get("placement") or {}).get("constraints")) or [])]


def data_pins(model: ComposeModel, stack: Any, data_roots: Sequence[str], nodes: Sequence[NodeFacts]) -> dict[str, str]:
    """The node each data service is pinned to (``{service: inventory host}``).

    Raises:
        FerryError: a data service whose constraints do not select exactly one node of
            the cluster (names the service, its data and the nodes it could run on), or a
            data service deployed ``mode: global``.
    """
    pins = {}
    for name, what in sorted(data_services(model, stack, data_roots).items()):
        raw = model.services[name].raw
        if ((raw.get("deploy") or {}).get("mode") or "replicated") == "global":
            raise FerryError(f"services.{name}: holds data ({what}) and runs on every node (deploy.mode global): "
                             "pin it to one node with a placement constraint")
        constraints = constraints_of(raw)
        can = eligible_nodes(constraints, nodes)
        if len(can) != 1:
            where = (f"its constraints {constraints} allow {', '.join(can) or 'no node'}" if constraints
                     else "it has no placement constraint")
            raise FerryError(f"services.{name}: holds data ({what}) but is not pinned to one node of the swarm: "
                             f"{where}; add deploy.placement.constraints such as 'node.hostname == "
                             f"{nodes[0].hostname if nodes else 'HOST'}' or a label only one node has "
                             "(swarm_labels)")
        pins[name] = can[0]
    return pins


# -- the stack file --------------------------------------------------------------------

#: Service keys of the Compose file format 3.8 that ``docker stack deploy`` uses.
SERVICE_KEYS = frozenset({
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "dns", "dns_search", "entrypoint",
    "environment", "extra_hosts", "healthcheck", "hostname", "image", "init", "isolation", "labels", "logging",
    "networks", "ports", "read_only", "secrets", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty",
    "stdin_open", "ulimits", "user", "volumes", "working_dir", "expose"})

#: Keys Swarm services cannot honour: refused (the service would run without them).
UNSUPPORTED = {
    "privileged": "Swarm services cannot run privileged",
    "devices": "Swarm services cannot map host devices",
    "network_mode": "Swarm services cannot use network_mode (attach them to networks)",
    "pid": "Swarm services cannot share the host's PID namespace",
    "ipc": "Swarm services cannot share an IPC namespace",
    "userns_mode": "Swarm services cannot set userns_mode",
    "security_opt": "Swarm services cannot set security_opt",
    "cgroup_parent": "Swarm services cannot set cgroup_parent",
    "links": "Swarm services cannot use links (use the service name)",
    "external_links": "Swarm services cannot use external_links",
    "shm_size": "Swarm services cannot set shm_size (mount a tmpfs at /dev/shm)",
}

#: Keys dropped because Swarm does their job differently (a note says so).
DROPPED = {
    "container_name": "Swarm names containers itself",
    "restart": "Swarm restarts tasks by deploy.restart_policy",
    "depends_on": "Swarm starts services in no order (each waits by its own healthcheck and retries)",
    "pull_policy": "images come from the bundle (--resolve-image never)",
    "build": "images come from the bundle",
    "profiles": "",
    "env_file": "",
    "mem_limit": "use deploy.resources.limits.memory",
    "cpus": "use deploy.resources.limits.cpus",
}

_DEPLOY_KEYS = {
    "mode", "replicas", "endpoint_mode", "labels", "placement", "resources", "restart_policy",
    "rollback_config", "update_config"}
_UPDATE_KEYS = {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}
_HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}


def _duration(value: Any) -> Any:
    return value if isinstance(value, str) else f"{value}s" if isinstance(value, (int, float)) else value


def _ports(name: str, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, p in enumerate(ports):
        if p.get("host_ip") and p.get("host_ip") not in ("0.0.0.0", "::"):
            raise FerryError(f"services.{name}.ports[{i}]: Swarm publishes on every address; "
                             f"host_ip {p['host_ip']} cannot be kept")
        published = str(p.get("published") or "")
        first, _, last = published.partition("-")
        base = {k: p[k] for k in ("mode", "protocol") if p.get(k)}
        target = str(p.get("target") or "")
        t_first, _, t_last = target.partition("-")
        if not published:
            out.append({**base, "target": int(t_first)})
            continue
        for offset, port in enumerate(range(int(first), int(last or first) + 1)):
            out.append({**base, "target": int(t_first) + (offset if t_last else 0), "published": port})
    return out


def _volumes(name: str, volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for v in volumes:
        item = {k: v[k] for k in ("type", "source", "target", "read_only", "consistency") if k in v}
        if v.get("bind", {}).get("propagation"):
            item["bind"] = {"propagation": v["bind"]["propagation"]}
        if "nocopy" in (v.get("volume") or {}):
            item["volume"] = {"nocopy": v["volume"]["nocopy"]}
        if (v.get("tmpfs") or {}).get("size"):
            item["tmpfs"] = {"size": int(v["tmpfs"]["size"])}
        out.append(item)
    return out


def _resources(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("limits", "reservations"):
        part = res.get(kind) or {}
        item = {}
        if part.get("cpus") not in (None, "", 0):
            item["cpus"] = str(part["cpus"])
        if part.get("memory") not in (None, "", 0):
            item["memory"] = str(part["memory"])
        if part.get("generic_resources") and kind == "reservations":
            item["generic_resources"] = part["generic_resources"]
        if item:
            out[kind] = item
    return out


def _deploy(name: str, deploy: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in deploy.items():
        if key not in _DEPLOY_KEYS:
            notes.append(f"services.{name}.deploy.{key}: not in the Compose file format 3.8 docker stack "
                         "deploy reads: left out")
            continue
        if key in ("update_config", "rollback_config"):
            value = {k: (_duration(v) if k in ("delay", "monitor") else v) for k, v in (value or {}).items()
                     if k in _UPDATE_KEYS}
        elif key == "resources":
            value = _resources(value or {})
        elif key == "restart_policy":
            value = {k: (_duration(v) if k in ("delay", "window") else v) for k, v in (value or {}).items()
                     if k in ("condition", "delay", "max_attempts", "window")}
        elif key == "placement":
            value = {k: v for k, v in (value or {}).items() if k in ("constraints", "preferences",
                                                                      "max_replicas_per_node") and v}
        if value in ({}, None, []):
            continue
        out[key] = value
    return out


def stack_file(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Compose file (format 3.8, as a dict to write as JSON) that ``docker stack
    deploy`` reads, from Compose's normalized model of a release.

    Args:
        config: the parsed output of ``docker compose config --format json`` (with
            ``environment``: env files inlined), paths as on the hosts.

    Returns:
        ``(file, notes)``: notes say what was left out and why (``container_name``:
        Swarm names containers itself...), one line each.

    Raises:
        FerryError: a service uses what Swarm services cannot do (``privileged``,
            ``devices``, ``network_mode``, a port bound to one host address...): names
            the key.
    """
    config = copy.deepcopy(dict(config))
    notes: list[str] = []
    services: dict[str, Any] = {}
    for name, svc in (config.get("services") or {}).items():
        svc = dict(svc or {})
        out: dict[str, Any] = {}
        for key, value in svc.items():
            if key.startswith("x-"):
                continue
            if key in UNSUPPORTED and value not in (None, False, [], {}, ""):
                raise FerryError(f"services.{name}.{key}: {UNSUPPORTED[key]} (docker stack deploy would ignore it)")
            if key in DROPPED:
                if DROPPED[key] and value not in (None, False, [], {}, ""):
                    notes.append(f"services.{name}.{key}: left out: {DROPPED[key]}")
                continue
            if key not in SERVICE_KEYS:
                if value not in (None, False, [], {}, ""):
                    notes.append(f"services.{name}.{key}: not in the Compose file format 3.8 docker stack "
                                 "deploy reads: left out")
                continue
            if value is None:
                continue
            if key == "ports":
                value = _ports(name, value)
            elif key == "volumes":
                value = _volumes(name, value)
            elif key == "deploy":
                value = _deploy(name, value, notes)
            elif key == "healthcheck":
                value = {k: (_duration(v) if k in ("interval", "timeout", "start_period") else v)
                         for k, v in value.items() if k in _HEALTH_KEYS}
            elif key == "extra_hosts" and isinstance(value, Mapping):
                value = [f"{h}:{ip}" for h, ips in value.items() for ip in (ips if isinstance(ips, list) else [ips])]
            elif key == "expose":
                value = [str(x) for x in value]
            elif key == "networks":
                value = {n: ({k: v for k, v in (o or {}).items() if k in ("aliases", "ipv4_address", "ipv6_address")}
                             or None) for n, o in value.items()}
            elif key in ("configs", "secrets"):
                value = [{k: v for k, v in (item.items() if isinstance(item, Mapping) else {"source": item}.items())
                          if k in ("source", "target", "uid", "gid", "mode")} for item in value]
            if value in ({}, []) and key not in ("environment",):
                continue
            out[key] = value
        services[name] = out
    result: dict[str, Any] = {"version": "3.8", "services": services}
    for kind, keys in (("networks", ("name", "driver", "driver_opts", "ipam", "external", "internal", "attachable",
                                     "labels")),
                       ("volumes", ("name", "driver", "driver_opts", "external", "labels")),
                       ("configs", ("name", "file", "external", "labels")),
                       ("secrets", ("name", "file", "external", "labels"))):
        items = config.get(kind) or {}
        if items:
            result[kind] = {k: {key: v[key] for key in keys if key in (v or {}) and v[key] not in (None, {}, [])}
                            for k, v in items.items()}
    for key, value in (result.get("networks") or {}).items():
        ipam = value.get("ipam")
        if ipam is not None:
            value["ipam"] = {k: v for k, v in ipam.items() if k in ("driver", "config") and v}
            if not value["ipam"]:
                del value["ipam"]
    return result, sorted(set(notes))
