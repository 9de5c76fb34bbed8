"""Docker and Compose on a host: command builders and, next to each, the parser of its
output. Pure: argument lists in, data out; nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

from .answers import AnswerError, json_doc, snippet
from ..model.imagelayers import EngineImages
from .files import parse_lines
from .shell import q, sh

def docker_images() -> list[str]:
    """Every local image: ``ID<TAB>REPO:TAG`` per line (ID is ``sha256:<hex>``)."""
    return ["docker", "images", "--no-trunc", "--format", "{{.ID}}\t{{.Repository}}:{{.Tag}}"]


def parse_images(text: str) -> dict[str, set[str]]:
    """``{image_id: {repo:tag, ...}}`` from :func:`ferry.host.containers.docker_images`.
    Untagged images (``<none>:<none>``) map to an empty set."""
    out: dict[str, set[str]] = {}
    for line in parse_lines(text):
        image_id, _, ref = line.partition("\t")
        tags = out.setdefault(image_id.strip(), set())
        if ref and "<none>" not in ref:
            tags.add(ref.strip())
    return out


def docker_load(path: str) -> list[str]:
    """``docker load`` of one image tarball (``path`` on the host), quietly."""
    return ["docker", "load", "-q", "-i", path]


def docker_tag(image_id: str, ref: str) -> list[str]:
    """Tag an image (by ID) with ``ref``."""
    return ["docker", "tag", image_id, ref]


def compose(project: str, compose_file: str, project_dir: str, *args: str) -> list[str]:
    """``docker compose`` bound to one project, file and directory (Compose v2 CLI)."""
    return ["docker", "compose", "-p", project, "-f", compose_file,
            "--project-directory", project_dir, *args]


def compose_up(project: str, compose_file: str, project_dir: str, wait_timeout: int) -> list[str]:
    """``up -d --wait --pull never --remove-orphans``: never reaches for a registry, waits
    until every service with a healthcheck is healthy (``wait_timeout`` seconds)."""
    return compose(project, compose_file, project_dir, "up", "-d", "--wait",
                   "--wait-timeout", str(int(wait_timeout)), "--pull", "never", "--remove-orphans")


def compose_ps(project: str, compose_file: str, project_dir: str) -> list[str]:
    """All containers of the project as JSON (one object per line, Compose >= 2.21)."""
    return compose(project, compose_file, project_dir, "ps", "-a", "--format", "json")


@dataclass
class ContainerState:
    """One container of a Compose project, from ``docker compose ps --format json``."""

    service: str
    id: str
    name: str
    state: str            # running, exited, ...
    health: str           # healthy, unhealthy, starting, or "" without healthcheck
    publishers: list[dict]


def parse_compose_ps(text: str) -> list[ContainerState]:
    """Parse :func:`ferry.host.containers.compose_ps`: JSON lines (Compose >= 2.21) or one JSON
    array (older Compose v2)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json_doc(text, "docker compose ps", list)
    else:
        items = [json_doc(l, "docker compose ps", dict) for l in text.splitlines() if l.strip()]
    if not all(isinstance(i, dict) for i in items):
        raise AnswerError(f"docker compose ps: the host's answer is not a list of objects: {snippet(text)}")
    return [ContainerState(service=str(i.get("Service", "")), id=str(i.get("ID", "")), name=str(i.get("Name", "")),
                           state=str(i.get("State", "")), health=str(i.get("Health", "") or ""),
                           publishers=[p for p in (i.get("Publishers") or []) if isinstance(p, dict)]
                           if isinstance(i.get("Publishers"), list) else [])
            for i in items]


def project_containers(project: str) -> list[str]:
    """``docker inspect`` (JSON array) of every container of a Compose project, found by
    Docker's labels (works without a compose file), preceded by the host's clock
    (``date +%s``) on the first line. Full JSON, no Go template: on Docker 20.10 a
    template reading ``.State.Health`` fails for a container without a healthcheck."""
    return sh("date +%s; ids=$(docker ps -aq --filter " + q(f"label=com.docker.compose.project={project}")
              + "); if [ -n \"$ids\" ]; then docker inspect $ids; else echo '[]'; fi")


@dataclass(frozen=True)
class Container:
    """A project container, from :func:`ferry.host.containers.project_containers`.

    Attributes:
        started_at: ``State.StartedAt`` as Docker prints it (RFC 3339).
        started: the same in seconds since the epoch (0.0 if never started).
        health: ``healthy``, ``unhealthy``, ``starting``, or ``""`` without healthcheck
            (none in the compose file nor in the image).
        restarts: ``RestartCount`` (restarts by the restart policy).
    """

    id: str
    started_at: str
    status: str        # running, exited, created, restarting...
    health: str
    name: str = ""
    restarts: int = 0
    exit_code: int = 0
    started: float = 0.0
    image: str = ""
    ports: tuple = ()  # ((host_ip, host_port, "tcp"|"udp"), ...)
    config_hash: str = ""   # Compose's hash of the service config the container was made from

    @property
    def healthy(self) -> bool:
        """Running, and healthy if it has a healthcheck."""
        return self.status == "running" and self.health in ("", "healthy")


def _epoch(stamp: str) -> float:
    import datetime
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp or "")
    if not m or m.group(1).startswith("0001"):
        return 0.0
    when = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
    return when.timestamp() + float(m.group(2) or 0)


def _obj(value) -> dict:
    """``value`` if it is a JSON object, else ``{}`` (a field of an odd ``docker inspect``)."""
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    """``value`` if it is a JSON array, else ``[]``."""
    return value if isinstance(value, list) else []


def _int(value) -> int:
    """``value`` as an int, 0 for anything that is not a whole number."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def container_from_inspect(info: dict) -> tuple[str, Container]:
    """``(service, Container)`` from one ``docker inspect`` object (fields of the wrong
    type read as absent)."""
    state = _obj(info.get("State"))
    labels = _obj(_obj(info.get("Config")).get("Labels"))
    ports = []
    for spec, binds in _obj(_obj(info.get("NetworkSettings")).get("Ports")).items():
        proto = spec.partition("/")[2] or "tcp"
        for b in binds if isinstance(binds, list) else []:
            if _int(_obj(b).get("HostPort")):
                ports.append((str(b.get("HostIp") or "0.0.0.0"), _int(b["HostPort"]), proto))
    return str(labels.get("com.docker.compose.service", "")), Container(
        id=str(info.get("Id", "")), started_at=str(state.get("StartedAt", "")), status=str(state.get("Status", "")),
        health=str(_obj(state.get("Health")).get("Status", "")), name=str(info.get("Name", "")).lstrip("/"),
        restarts=_int(info.get("RestartCount")), exit_code=_int(state.get("ExitCode")),
        started=_epoch(str(state.get("StartedAt", ""))), image=str(info.get("Image", "")), ports=tuple(ports),
        config_hash=str(labels.get("com.docker.compose.config-hash", "")))


def parse_inspect(text: str) -> list[dict]:
    """The objects of ``docker inspect`` output (``[]`` for none or no output).

    Raises:
        AnswerError: output that starts like a JSON array but is not a list of objects.
    """
    text = text.strip()
    if not text.startswith("["):
        return []
    items = json_doc(text, "docker inspect", list)
    if not all(isinstance(i, dict) for i in items):
        raise AnswerError(f"docker inspect: the host's answer is not a list of objects: {snippet(text)}")
    return items


def parse_project_state(text: str) -> tuple[float, dict[str, Container]]:
    """``(host clock in seconds, {service: Container})`` from
    :func:`ferry.host.containers.project_containers`."""
    first, _, rest = text.partition("\n")
    now = float(first.strip()) if first.strip().isdigit() else 0.0
    return now, dict(container_from_inspect(i) for i in parse_inspect(rest))


def parse_project_containers(text: str) -> dict[str, Container]:
    """``{service: Container}`` from :func:`ferry.host.containers.project_containers`."""
    return parse_project_state(text)[1]


def compose_config(project: str, compose_file: str, project_dir: str) -> list[str]:
    """Compose's model of the project as the host resolves it (JSON)."""
    return compose(project, compose_file, project_dir, "config", "--format", "json")


def host_facts() -> list[str]:
    """What other stacks and processes hold on the host, for preflight: every
    container's inspect JSON, the networks' inspect JSON and the listening sockets
    (``ss -Hltnup``), in sections ``==containers``, ``==networks``, ``==sockets``.
    Works without Docker (empty sections)."""
    return sh("echo ==containers; ids=$(docker ps -aq 2>/dev/null); "
              "if [ -n \"$ids\" ]; then docker inspect $ids; else echo '[]'; fi; "
              "echo ==networks; nets=$(docker network ls -q 2>/dev/null); "
              "if [ -n \"$nets\" ]; then docker network inspect $nets; else echo '[]'; fi; "
              "echo ==sockets; ss -Hltnup 2>/dev/null || true")


def parse_host_facts(text: str) -> dict:
    """``{"containers": [{name, project, ports: [(ip, port, proto)]}], "networks":
    [{name, project, subnets}], "listening": [(proto, ip, port, process)]}`` from
    :func:`ferry.host.containers.host_facts`. A container publishes only while running."""
    sections: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("==") and line.strip()[2:] in ("containers", "networks", "sockets"):
            name = line.strip()[2:]
            sections[name] = ""
        elif name:
            sections[name] += line
    containers = []
    for info in parse_inspect(sections.get("containers", "")):
        _, c = container_from_inspect(info)
        labels = _obj(_obj(info.get("Config")).get("Labels"))
        containers.append({"name": c.name, "project": labels.get("com.docker.compose.project", ""),
                           "ports": list(c.ports) if c.status == "running" else []})
    networks = [{"name": str(n.get("Name", "")),
                 "project": str(_obj(n.get("Labels")).get("com.docker.compose.project", "")),
                 "subnets": [str(cfg.get("Subnet")) for cfg in _list(_obj(n.get("IPAM")).get("Config"))
                             if _obj(cfg).get("Subnet")]}
                for n in parse_inspect(sections.get("networks", ""))]
    listening = []
    for line in sections.get("sockets", "").splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        ip, _, port = parts[4].rpartition(":")
        if not port.isdigit():
            continue
        m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        proc = f"{m.group(1)} (pid {m.group(2)})" if m else ""
        if m and m.group(1) == "docker-proxy":
            continue                    # a published port: the containers say whose
        listening.append((parts[0], ip.strip("[]").split("%")[0] or "0.0.0.0", int(port), proc))
    return {"containers": containers, "networks": networks, "listening": listening}


def stack_state(found: dict[str, Container], services: list[str] | None = None) -> str:
    """One word for a stack's containers (from :func:`parse_project_containers`):
    ``running`` (every service running and healthy), ``stopped`` (none running),
    ``degraded`` (some running, or unhealthy), ``absent`` (no container at all).

    Args:
        services: the services of the current release; a missing one is not running.
    """
    names = set(services or []) | set(found)
    if not found:
        return "absent"
    running = [n for n in names if n in found and found[n].status == "running"]
    if not running:
        return "stopped"
    if len(running) == len(names) and all(found[n].healthy for n in names):
        return "running"
    return "degraded"


def http_status(url: str, timeout: int = 5) -> list[str]:
    """The HTTP status code of ``GET url`` requested on the host (``000`` if no answer)."""
    return ["curl", "-s", "-o", "/dev/null", "-m", str(timeout), "-w", "%{http_code}", url]


def remove_containers(ids: Sequence[str]) -> list[str]:
    """``docker rm -f`` the containers ``ids`` (stop and remove)."""
    return ["docker", "rm", "-f", "--", *ids]


def project_dirs(project: str) -> list[str]:
    """The Compose project directory (label ``com.docker.compose.project.working_dir``)
    of every container of ``project``, one per line, sorted and unique; nothing when
    Docker is absent."""
    return sh("docker ps -a --filter " + q(f"label=com.docker.compose.project={project}")
              + " --format " + q('{{.Label "com.docker.compose.project.working_dir"}}')
              + " 2>/dev/null | sort -u || true")


def container_images() -> list[str]:
    """The image ID of every container on the host, running or not, one per line."""
    return sh("docker ps -aq --no-trunc | xargs -r docker inspect --format '{{.Image}}'")


def remove_image(image_id: str, tags: set[str] | None = None) -> list[str]:
    """``docker rmi`` of an image: by its tags when it has some (an image with several
    tags cannot be removed by ID without ``-f``), else by ID. Refused by Docker, and so
    harmless, while a container uses it."""
    return ["docker", "rmi", *(sorted(tags) if tags else [image_id])]


# -- day-2 commands on the current release (ferry.actions.logs, .execute, .services) ----

def with_pid(argv: list[str], merge_stderr: bool = False) -> list[str]:
    """Run ``argv`` after printing its PID on the first line of stdout (``exec``: the PID
    is the command's own), so that the caller can stop it on the host with
    :func:`kill` when the user interrupts (closing an SSH channel does not).
    ``merge_stderr``: its stderr goes to stdout (one stream, in order)."""
    return ["sh", "-c", 'echo "$$"; exec "$@"' + (" 2>&1" if merge_stderr else ""), "sh", *argv]


def kill(pid: int) -> list[str]:
    """Stop process ``pid`` of :func:`with_pid` and what it started, quietly (they may
    have ended already): SIGTERM to its process group (under sshd the command leads
    one), to its children and to itself. The children matter: the ``docker`` CLI ignores
    SIGTERM while a plugin such as ``docker compose`` runs, and waits for the plugin."""
    p = int(pid)
    return sh(f"kill -TERM -- -{p} 2>/dev/null; "
              f"for c in $(cat /proc/{p}/task/*/children 2>/dev/null); do kill -TERM \"$c\" 2>/dev/null; done; "
              f"kill -TERM {p} 2>/dev/null; true")


def compose_logs(project: str, compose_file: str, project_dir: str, services: list[str], follow: bool = False,
                 since: str | None = None, tail: str | None = None) -> list[str]:
    """``docker compose logs --no-color`` of ``services`` (all when empty); ``since``
    and ``tail`` as validated by :func:`ferry.model.options.since` and
    :func:`ferry.model.options.tail`."""
    args = ["logs", "--no-color"]
    if follow:
        args.append("--follow")
    if since:
        args += ["--since", since]
    if tail is not None:
        args += ["--tail", str(tail)]
    return compose(project, compose_file, project_dir, *args, "--", *services)


def compose_exec(project: str, compose_file: str, project_dir: str, service: str, command: list[str]) -> list[str]:
    """``docker compose exec -T SERVICE COMMAND...``: no TTY, stdin closed; each word of
    ``command`` reaches the container as one argument (no shell in between)."""
    return compose(project, compose_file, project_dir, "exec", "-T", service, *command)


def compose_lifecycle(project: str, compose_file: str, project_dir: str, action: str, services: list[str],
                      timeout: int | None = None) -> list[str]:
    """``docker compose restart|stop|start [SERVICE...]`` (``timeout``: seconds a
    container gets to stop before it is killed; restart and stop only)."""
    if action not in ("restart", "stop", "start"):
        raise ValueError(action)
    args = [action]
    if timeout is not None and action != "start":
        args += ["--timeout", str(int(timeout))]
    return compose(project, compose_file, project_dir, *args, *services)


def engine_images() -> list[str]:
    """Every image the host's engine holds, one line each:
    ``ID<TAB>RepoTags as JSON<TAB>RootFS.Layers as JSON`` (nothing when Docker is absent
    or not running)."""
    return sh("command -v docker >/dev/null 2>&1 || exit 0; "
              "ids=$(docker images -aq --no-trunc 2>/dev/null | sort -u); [ -z \"$ids\" ] && exit 0; "
              "docker image inspect --format " + q("{{.Id}}\t{{json .RepoTags}}\t{{json .RootFS.Layers}}")
              + " $ids 2>/dev/null || true")


def parse_engine_images(text: str) -> EngineImages:
    """:class:`ferry.model.imagelayers.EngineImages` from :func:`engine_images`. Lines
    that do not parse (an image removed while listed) are skipped."""
    engine = EngineImages()
    for line in parse_lines(text):
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].startswith("sha256:"):
            continue
        try:
            tags, layers = json.loads(parts[1]) or [], json.loads(parts[2]) or []
        except ValueError:
            continue
        engine.add(parts[0], tags, layers)
    return engine


def load_blobs(store: str, blobs: Sequence[str]) -> list[str]:
    """``docker load`` an archive assembled on the host from store files, no copy made:
    stdin is the archive's ``manifest.json`` (see
    :func:`ferry.model.imagelayers.load_manifest`), ``blobs`` the sha256 names (store
    files) it refers to. ``tar -cf -`` streams ``manifest.json`` and those files straight
    from ``store`` into ``docker load``; a layer the engine already has may be absent.
    Exit status 6: a blob is missing from the store; tar's own failure is reported too.
    """
    names = " ".join(q(b) for b in blobs)
    st = q(store)
    return sh("set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; cat > \"$d/manifest.json\"; "
              f"for b in {names}; do [ -f {st}/\"$b\" ] || {{ echo \"missing from the store: $b\" >&2; exit 6; }}; done; "
              f"{{ tar -cf - -C \"$d\" manifest.json -C {st} {names}; echo $? > \"$d/tar.rc\"; }} | docker load -q; "
              "[ \"$(cat \"$d/tar.rc\")\" = 0 ] || { echo 'tar of the store files failed' >&2; exit 7; }")


def up_dry_run(project: str, compose_file: str, project_dir: str) -> list[str]:
    """``docker compose up -d --dry-run --pull never``: what Compose WOULD do to make the
    project match ``compose_file``, changing nothing. Its own convergence rule, so
    "Running" for every container means they run exactly that file's configuration."""
    return compose(project, compose_file, project_dir, "up", "-d", "--dry-run", "--pull", "never")


def parse_up_dry_run(text: str) -> dict[str, str]:
    """``{container name: first action}`` from :func:`up_dry_run`'s output lines
    ``DRY-RUN MODE -  Container NAME  ACTION`` (``Running`` when nothing would change;
    ``Recreate``, ``Create``, ``Starting``... otherwise). Compose writes them on stderr."""
    out: dict[str, str] = {}
    for m in re.finditer(r"Container (\S+)\s+(\w+)", text):
        out.setdefault(m.group(1), m.group(2))
    return out


def config_hashes(project: str, compose_file: str, project_dir: str) -> list[str]:
    """``SERVICE HASH`` per line for each service of ``compose_file`` (``docker compose
    config --hash '*'``): the services as Compose reads the file. (The hashes are not
    always those ``up`` puts on containers - it differs for services with ``env_file`` -
    so "does it run this file" is asked with :func:`up_dry_run`.)"""
    return compose(project, compose_file, project_dir, "config", "--hash", "*")


def parse_config_hashes(text: str) -> dict[str, str]:
    """``{service: hash}`` from :func:`config_hashes`."""
    out = {}
    for line in parse_lines(text):
        service, _, value = line.partition(" ")
        if value.strip():
            out[service] = value.strip()
    return out
