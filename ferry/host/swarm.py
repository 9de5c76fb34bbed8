"""Docker Swarm on a host: command builders and, next to each, the parser of its output.
Pure: argument lists in, data out; nothing here does I/O.

Joining a swarm needs a join token, a secret: it never appears in an argument list.
:func:`swarm_api` talks to the Docker Engine API over the local socket with ``curl``,
the request body (which holds the token) fed on stdin; the token itself is read with
:func:`swarm_api` too (``GET /swarm``), so it only ever travels inside SSH channels'
data, never in a command line a ``ps`` could show or a log could keep.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import HostError
from ..model.swarm import STACK_FILE, NodeFacts
from . import containers
from .shell import q, sh

DOCKER_SOCKET = "/var/run/docker.sock"
SWARM_PORT = 2377
"""The managers' cluster management port (TCP)."""


# -- facts -----------------------------------------------------------------------------

def node_facts() -> list[str]:
    """One command: the host's name (``uname -n``), ``docker info``'s ``Swarm`` part as
    JSON (``null`` without Docker) and, on a manager, ``docker node inspect`` of every
    node; sections ``==hostname``, ``==swarm``, ``==nodes``."""
    return sh("echo ==hostname; uname -n; echo ==swarm; "
              "docker info --format '{{json .Swarm}}' 2>/dev/null || echo null; echo ==nodes; "
              "ids=$(docker node ls -q 2>/dev/null); "
              "if [ -n \"$ids\" ]; then docker node inspect $ids; else echo '[]'; fi")


@dataclass(frozen=True)
class SwarmNode:
    """A node of the swarm, from ``docker node inspect``.

    Attributes:
        id, hostname: the node's ID and its host's name.
        addr: its address (``Status.Addr``; a manager's from ``ManagerStatus.Addr``).
        role: ``manager`` or ``worker`` (``Spec.Role``).
        availability: ``active``, ``pause`` or ``drain``.
        state: ``ready``, ``down``, ``unknown``, ``disconnected``.
        reachability: a manager's ``reachable`` / ``unreachable`` (``""`` for workers).
        leader: the Raft leader.
        labels: node labels (``Spec.Labels``).
        engine: Docker version of the node.
    """

    id: str
    hostname: str
    addr: str
    role: str
    availability: str
    state: str
    reachability: str = ""
    leader: bool = False
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    engine: str = ""
    version: int = 0


@dataclass
class SwarmFacts:
    """One host's Swarm facts (:func:`node_facts`).

    Attributes:
        hostname: ``uname -n``.
        docker: Docker answers on the host.
        state: ``LocalNodeState``: ``inactive``, ``pending``, ``active``, ``error``, ``locked``.
        node_id, node_addr: this host's node ID and advertise address in the swarm.
        control: this host is a manager that can answer for the cluster.
        cluster_id: the swarm's ID (managers only).
        error: Docker's error about the swarm state, if any.
        nodes: every node of the swarm (managers only).
    """

    hostname: str = ""
    docker: bool = False
    state: str = "inactive"
    node_id: str = ""
    node_addr: str = ""
    control: bool = False
    cluster_id: str = ""
    error: str = ""
    managers: list[str] = field(default_factory=list)
    nodes: list[SwarmNode] = field(default_factory=list)

    @property
    def in_swarm(self) -> bool:
        """The host is part of a swarm (``active``)."""
        return self.state == "active"


def _sections(text: str, names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("==") and line.strip()[2:] in names:
            name = line.strip()[2:]
            out[name] = ""
        elif name:
            out[name] += line
    return out


def parse_node(info: dict[str, Any]) -> SwarmNode:
    """A :class:`SwarmNode` from one ``docker node inspect`` object."""
    spec, status = info.get("Spec") or {}, info.get("Status") or {}
    manager = info.get("ManagerStatus") or {}
    addr = str(status.get("Addr") or "")
    if addr in ("", "0.0.0.0") and manager.get("Addr"):
        addr = str(manager["Addr"]).rsplit(":", 1)[0]
    return SwarmNode(
        id=str(info.get("ID", "")), hostname=str((info.get("Description") or {}).get("Hostname", "")), addr=addr,
        role=str(spec.get("Role", "")), availability=str(spec.get("Availability", "")),
        state=str(status.get("State", "")), reachability=str(manager.get("Reachability", "")),
        leader=bool(manager.get("Leader")), labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        engine=str(((info.get("Description") or {}).get("Engine") or {}).get("EngineVersion", "")),
        version=int((info.get("Version") or {}).get("Index") or 0))


def parse_node_facts(text: str) -> SwarmFacts:
    """Parse :func:`node_facts`."""
    parts = _sections(text, ("hostname", "swarm", "nodes"))
    facts = SwarmFacts(hostname=parts.get("hostname", "").strip())
    raw = parts.get("swarm", "").strip()
    try:
        swarm = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        swarm = None
    if isinstance(swarm, dict):
        facts.docker = True
        facts.state = str(swarm.get("LocalNodeState") or "inactive")
        facts.node_id = str(swarm.get("NodeID") or "")
        facts.node_addr = str(swarm.get("NodeAddr") or "")
        facts.control = bool(swarm.get("ControlAvailable"))
        facts.cluster_id = str((swarm.get("Cluster") or {}).get("ID") or "")
        facts.error = str(swarm.get("Error") or "")
        facts.managers = [str(m.get("Addr", "")).rsplit(":", 1)[0] for m in swarm.get("RemoteManagers") or []]
    nodes = parts.get("nodes", "").strip()
    if nodes.startswith("["):
        facts.nodes = [parse_node(n) for n in json.loads(nodes)]
    return facts


def placement_facts(host: str, facts: SwarmFacts, role: str, labels: dict[str, str]) -> NodeFacts:
    """What placement constraints can test of a host (its hostname, its role and labels
    as the inventory wants them, its node ID if it is in the swarm)."""
    return NodeFacts(host, facts.hostname, role, dict(labels), facts.node_id)


# -- the Engine API over the local socket (secrets on stdin) ---------------------------

def swarm_api(method: str, path: str, body: bool = False) -> list[str]:
    """``curl`` of the Docker Engine API on the host's socket (``method path``), the
    JSON request body read from stdin when ``body``; prints the response body, then the
    HTTP status on a last line of its own."""
    argv = ["curl", "-sS", "--unix-socket", DOCKER_SOCKET, "-X", method, "-w", "\n%{http_code}"]
    if body:
        argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    return argv + [f"http://localhost{path}"]


def parse_api(host: str, what: str, text: str) -> Any:
    """The JSON body of a :func:`swarm_api` answer.

    Raises:
        HostError: an HTTP status other than 2xx (with Docker's ``message``).
    """
    body, _, status = text.rstrip("\n").rpartition("\n")
    try:
        data = json.loads(body) if body.strip() else None
    except json.JSONDecodeError:
        data = body.strip()
    if not status.isdigit() or not 200 <= int(status) < 300:
        message = data.get("message") if isinstance(data, dict) else (data or f"HTTP {status}")
        raise HostError(host, f"{what}: {message}")
    return data


def init_request(addr: str, default_addr_pool: Sequence[str] = ()) -> bytes:
    """The body of ``POST /swarm/init``: listen on all addresses, advertise ``addr``."""
    body: dict[str, Any] = {"ListenAddr": f"0.0.0.0:{SWARM_PORT}", "AdvertiseAddr": f"{addr}:{SWARM_PORT}"}
    if default_addr_pool:
        body["DefaultAddrPool"] = list(default_addr_pool)
    return json.dumps(body).encode()


def join_request(addr: str, manager: str, token: str) -> bytes:
    """The body of ``POST /swarm/join`` (holds the join token: send it on stdin only)."""
    return json.dumps({"ListenAddr": f"0.0.0.0:{SWARM_PORT}", "AdvertiseAddr": f"{addr}:{SWARM_PORT}",
                       "RemoteAddrs": [f"{manager}:{SWARM_PORT}"], "JoinToken": token}).encode()


def join_tokens(data: Any) -> dict[str, str]:
    """``{"manager": token, "worker": token}`` from ``GET /swarm``."""
    tokens = (data or {}).get("JoinTokens") or {}
    return {"manager": str(tokens.get("Manager") or ""), "worker": str(tokens.get("Worker") or "")}


def node_update(node_id: str, role: str | None = None, labels: dict[str, str] | None = None) -> list[str]:
    """``docker node update`` of one node: its role and the labels to add or change."""
    argv = ["docker", "node", "update"]
    if role:
        argv += ["--role", role]
    for key, value in sorted((labels or {}).items()):
        argv += ["--label-add", f"{key}={value}"]
    return argv + [node_id]


# -- a stack on the swarm ----------------------------------------------------------------

def stack_state(stack: str) -> list[str]:
    """One command on a manager: the host clock (``date +%s``), then ``docker service
    inspect`` of the stack's services, ``docker inspect`` of their tasks (history
    included) and ``docker node inspect`` of every node, in sections ``==services``,
    ``==tasks``, ``==nodes`` (``[]`` when there are none)."""
    label = q(f"label=com.docker.stack.namespace={stack}")
    return sh("date +%s; echo ==services; ids=$(docker service ls -q --filter " + label + "); "
              "if [ -n \"$ids\" ]; then docker service inspect $ids; else echo '[]'; fi; echo ==tasks; "
              "tids=$(for s in $ids; do docker service ps -q --no-trunc \"$s\"; done); "
              "if [ -n \"$tids\" ]; then docker inspect --type task $tids; else echo '[]'; fi; echo ==nodes; "
              "nids=$(docker node ls -q); if [ -n \"$nids\" ]; then docker node inspect $nids; else echo '[]'; fi")


@dataclass(frozen=True)
class Task:
    """One task of a service (``docker inspect --type task``).

    Attributes:
        state: ``Status.State`` (``new`` ... ``starting``, ``running``, ``complete``,
            ``failed``, ``rejected``, ``shutdown``...): a task with a healthcheck is
            ``starting`` until it is healthy.
        desired: ``DesiredState`` (``running``, ``shutdown``...).
        since: seconds since the epoch of the last state change.
        error: ``Status.Err`` (``task: non-zero exit (1)``, ``no suitable node ...``).
        current: the task runs the service's current spec.
    """

    id: str
    service: str
    slot: int
    node: str
    state: str
    desired: str
    since: float
    error: str
    message: str
    container: str
    current: bool
    created: float = 0.0


@dataclass
class Service:
    """One service of the stack (``docker service inspect``) with its tasks.

    Attributes:
        name: the stack's service name (``backend``); ``full``: Swarm's
            (``llm-chat_backend``).
        mode: ``replicated`` or ``global``; ``replicas``: the replicas wanted
            (replicated only).
        update: ``UpdateStatus.State`` (``updating``, ``completed``, ``paused``,
            ``rollback_started``, ``rollback_completed``...), ``""`` when none;
            ``update_started`` (epoch seconds) and ``update_message``.
        healthcheck: the task spec has a healthcheck (ready = Swarm says running).
        host_ports: published ports in ``mode: host`` (``[(port, protocol)]``).
        constraints: placement constraints.
    """

    name: str
    full: str
    id: str
    mode: str
    replicas: int
    update: str
    update_started: float
    update_message: str
    healthcheck: bool
    image: str
    host_ports: list[tuple[int, str]] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)

    def live(self) -> list[Task]:
        """The tasks Swarm wants running (desired state ``running``)."""
        return [t for t in self.tasks if t.desired == "running"]


@dataclass
class StackState:
    """A stack on the swarm as a manager reports it (:func:`stack_state`).

    Attributes:
        now: the manager's clock (epoch seconds).
        services: ``{service name in the stack: Service}``.
        nodes: ``{node id: SwarmNode}``.
    """

    now: float
    services: dict[str, Service]
    nodes: dict[str, SwarmNode]

    def node_name(self, node_id: str) -> str:
        """A node's hostname (its ID when unknown)."""
        n = self.nodes.get(node_id)
        return n.hostname if n else node_id[:12]


_CONTAINER_KEYS = ("Image", "Labels", "Command", "Args", "Env", "Dir", "User", "Mounts", "Healthcheck", "Hosts",
                   "Configs", "Secrets", "ReadOnly", "Init", "Sysctls", "CapabilityAdd", "CapabilityDrop", "Ulimits",
                   "TTY", "OpenStdin", "StopSignal", "Hostname")


def _spec_key(spec: dict[str, Any]) -> str:
    """What of a task spec defines the container: the service's ``TaskTemplate`` as the
    API shows it carries defaults (``StopGracePeriod``, ``RestartPolicy``, ``Runtime``)
    that its tasks' specs lack, so the two are compared on these keys only, empty
    values left out."""
    spec = spec or {}
    container = spec.get("ContainerSpec") or {}
    picked = {k: container[k] for k in _CONTAINER_KEYS if container.get(k) not in (None, {}, [], "", False)}
    picked["Resources"] = {k: v for k, v in (spec.get("Resources") or {}).items() if v}
    picked["Constraints"] = sorted((spec.get("Placement") or {}).get("Constraints") or [])
    picked["Networks"] = sorted(json.dumps(n, sort_keys=True) for n in spec.get("Networks") or [])
    picked["ForceUpdate"] = spec.get("ForceUpdate") or 0
    return json.dumps(picked, sort_keys=True)


def _same_spec(task_spec: dict[str, Any], service_spec: dict[str, Any]) -> bool:
    return _spec_key(task_spec) == _spec_key(service_spec)


def parse_stack_state(stack: str, text: str) -> StackState:
    """Parse :func:`stack_state` (service names without the ``<stack>_`` prefix)."""
    first, _, rest = text.partition("\n")
    now = float(first.strip()) if first.strip().isdigit() else 0.0
    parts = _sections(rest, ("services", "tasks", "nodes"))

    def load(name: str) -> list[dict[str, Any]]:
        raw = parts.get(name, "").strip()
        return json.loads(raw) if raw.startswith("[") else []

    nodes = {n.id: n for n in (parse_node(i) for i in load("nodes"))}
    services: dict[str, Service] = {}
    by_id: dict[str, Service] = {}
    specs: dict[str, dict[str, Any]] = {}
    for info in load("services"):
        spec = info.get("Spec") or {}
        full = str(spec.get("Name", ""))
        name = full[len(stack) + 1:] if full.startswith(stack + "_") else full
        template = spec.get("TaskTemplate") or {}
        container = template.get("ContainerSpec") or {}
        mode = "global" if "Global" in (spec.get("Mode") or {}) else "replicated"
        update = info.get("UpdateStatus") or {}
        ports = [(int(p.get("PublishedPort")), str(p.get("Protocol") or "tcp"))
                 for p in ((spec.get("EndpointSpec") or {}).get("Ports") or [])
                 if p.get("PublishMode") == "host" and p.get("PublishedPort")]
        hc = container.get("Healthcheck") or {}
        svc = Service(
            name=name, full=full, id=str(info.get("ID", "")), mode=mode,
            replicas=int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0),
            update=str(update.get("State") or ""), update_started=containers._epoch(str(update.get("StartedAt") or "")),
            update_message=str(update.get("Message") or ""),
            healthcheck=bool(hc.get("Test")) and (hc.get("Test") or [""])[0] != "NONE",
            image=str(container.get("Image", "")), host_ports=ports,
            constraints=[str(c) for c in ((template.get("Placement") or {}).get("Constraints") or [])],
            labels={str(k): str(v) for k, v in (container.get("Labels") or {}).items()})
        services[name] = svc
        by_id[svc.id] = svc
        specs[svc.id] = template
    for info in load("tasks"):
        svc = by_id.get(str(info.get("ServiceID", "")))
        if svc is None:
            continue
        status = info.get("Status") or {}
        svc.tasks.append(Task(
            id=str(info.get("ID", "")), service=svc.name, slot=int(info.get("Slot") or 0),
            node=str(info.get("NodeID") or ""), state=str(status.get("State", "")),
            desired=str(info.get("DesiredState", "")), since=containers._epoch(str(status.get("Timestamp") or "")),
            error=str(status.get("Err") or ""), message=str(status.get("Message") or ""),
            container=str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
            current=_same_spec(info.get("Spec") or {}, specs.get(svc.id) or {}),
            created=containers._epoch(str(info.get("CreatedAt") or ""))))
    return StackState(now, services, nodes)


#: UpdateStatus states of an update still under way.
UPDATING = ("updating", "rollback_started")
#: UpdateStatus states of an update that failed, and what they mean.
UPDATE_FAILED = {"paused": "Swarm paused its update (failure_action: pause)",
                 "rollback_paused": "Swarm paused rolling its update back",
                 "rollback_completed": "Swarm rolled its update back (failure_action: rollback)"}


@dataclass(frozen=True)
class Readiness:
    """Whether one service of a stack is where it should be (:func:`service_readiness`).

    Attributes:
        ready: every replica it should have runs the current spec and counts as ready.
        failed: it cannot get there by waiting (Swarm paused or rolled back its update).
        desired, running: replicas wanted and replicas ready.
        detail: one line: the rule applied and, when not ready, why (each failing task's
            error with its node).
    """

    service: str
    ready: bool
    failed: bool
    desired: int
    running: int
    detail: str


def service_readiness(state: StackState, svc: Service, settle: float, since: float = 0.0) -> Readiness:
    """Whether ``svc`` has its desired replicas running the current spec and ready:
    with a healthcheck Swarm reports a task ``running`` once it is healthy; without one
    a task must have been running ``settle`` seconds (no restart loop).

    Args:
        state: the stack's state (:func:`parse_stack_state`).
        settle: ``compose_settle_seconds``.
        since: the manager's clock when this deploy started: an update Swarm rolled back
            or paused after it is a failure of this deploy (0: any time).
    """
    live = svc.live()
    desired = svc.replicas if svc.mode == "replicated" else len(live)
    ok = [t for t in live if t.state == "running" and t.current
          and (svc.healthcheck or state.now - t.since >= settle)]
    rule = ("healthcheck: Swarm runs a task once healthy" if svc.healthcheck
            else f"no healthcheck: running {settle:g}s without a restart")
    failed = svc.update in UPDATE_FAILED and svc.update_started >= since
    ready = len(ok) >= desired and svc.update not in UPDATING and not failed and (desired > 0 or svc.mode == "global")
    problems = []
    if failed:
        problems.append(f"{UPDATE_FAILED[svc.update]}: {svc.update_message}")
    for t in sorted(svc.tasks, key=lambda t: (t.slot, -t.since)):
        node = state.node_name(t.node) if t.node else "no node"
        if t.desired == "running" and t.state != "running":
            problems.append(f"task {t.slot or node} on {node}: {t.state}" + (f": {t.error}" if t.error else
                            (" (healthcheck not passing yet)" if t.state == "starting" else "")))
        elif t.desired == "running" and not t.current:
            problems.append(f"task {t.slot or node} on {node}: runs the previous spec")
        elif t.state in ("failed", "rejected") and t.since >= since and t.error:
            problems.append(f"task {t.slot or node} on {node}: {t.state}: {t.error}")
    seen, lines = set(), []
    for p in problems:
        if p not in seen:
            seen.add(p)
            lines.append(p)
    detail = f"{len(ok)}/{desired} ready; rule: {rule}" + (f"; {'; '.join(lines[:6])}" if lines and not ready else "")
    return Readiness(svc.name, ready, failed, desired, len(ok), detail)


def service_logs(full_name: str, lines: int) -> list[str]:
    """``docker service logs`` of one service (every node's tasks, on a manager)."""
    return ["docker", "service", "logs", "--no-trunc", "--no-task-ids", "--tail", str(int(lines)), full_name]


# -- making a release the running one --------------------------------------------------

def activate_script() -> str:
    """The text of ``files/ferry-swarm-activate``."""
    from ..resources import data_dir
    return (data_dir("files") / "ferry-swarm-activate").read_text(encoding="utf-8")


def activate(root: str, stack: str, release: str, deploy: bool) -> list[str]:
    """Run ``ferry-swarm-activate`` on a host: switch ``current`` of ``stack`` to
    ``release`` and, with ``deploy`` (on the primary manager), ``docker stack deploy``
    that release's stack file, as one unit (see the script's header).

    Every value is a positional parameter of ``sh -c SCRIPT``: no shell re-parses it."""
    return ["sh", "-c", activate_script(), "ferry-swarm-activate", root, stack, release,
            "deploy" if deploy else "switch"]


def parse_activation(out: str) -> tuple[str, str]:
    """``(result, log)`` of :func:`activate`: ``ok`` or ``failed`` (a missing result
    line reads as ``failed``), and what ``docker stack deploy`` said."""
    m = None
    for m in re.finditer(r"^ferry-swarm-activate: (\w+)\s*$", out, flags=re.M):
        pass
    if m is None or m.group(1) not in ("ok", "failed"):
        return "failed", out
    return m.group(1), out[:m.start()]


def stack_file_path(stack_dir: str, release: str) -> str:
    """The stack file of ``release``: ``<stack_dir>/releases/<release>/swarm-stack.json``."""
    return posixpath.join(stack_dir, "releases", release, STACK_FILE)


def stack_rm(stack: str) -> list[str]:
    """``docker stack rm`` (services, networks, configs and secrets of the stack)."""
    return ["docker", "stack", "rm", stack]


def task_containers(stack: str) -> list[str]:
    """``docker inspect`` (JSON array) of the stack's task containers on this host,
    preceded by the host clock (``date +%s``) on the first line: the same shape as
    :func:`ferry.host.containers.project_containers`."""
    return sh("date +%s; ids=$(docker ps -aq --filter " + q(f"label=com.docker.stack.namespace={stack}")
              + "); if [ -n \"$ids\" ]; then docker inspect $ids; else echo '[]'; fi")
