"""Docker and Compose on a host: command builders and, next to each, the parser of its
output. Pure: argument lists in, data out; nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

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
        items = json.loads(text)
    else:
        items = [json.loads(l) for l in text.splitlines() if l.strip()]
    return [ContainerState(service=i.get("Service", ""), id=i.get("ID", ""), name=i.get("Name", ""),
                           state=i.get("State", ""), health=i.get("Health", "") or "",
                           publishers=i.get("Publishers") or [])
            for i in items]


def project_containers(project: str) -> list[str]:
    """``ID<TAB>SERVICE<TAB>STARTED_AT<TAB>STATUS<TAB>HEALTH<TAB>CONFIG_HASH`` of the
    project's containers, from Docker's labels (works without a compose file; HEALTH is
    empty without a healthcheck; CONFIG_HASH is Compose's ``com.docker.compose.config-hash``)."""
    return sh("ids=$(docker ps -aq --filter " + q(f"label=com.docker.compose.project={project}")
              + "); [ -z \"$ids\" ] || docker inspect --format "
              + q('{{.Id}}\t{{index .Config.Labels "com.docker.compose.service"}}\t{{.State.StartedAt}}'
                  '\t{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{end}}'
                  '\t{{index .Config.Labels "com.docker.compose.config-hash"}}')
              + " $ids")


@dataclass(frozen=True)
class Container:
    """A project container from :func:`ferry.host.containers.project_containers`."""

    id: str
    started_at: str
    status: str        # running, exited, created, ...
    health: str        # healthy, unhealthy, starting, or "" without healthcheck
    config_hash: str = ""   # Compose's hash of the service config the container was made from

    @property
    def healthy(self) -> bool:
        """Running, and healthy if it has a healthcheck."""
        return self.status == "running" and self.health in ("", "healthy")


def parse_project_containers(text: str) -> dict[str, Container]:
    """``{service: Container}`` from :func:`ferry.host.containers.project_containers`."""
    out = {}
    for line in text.splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 4 and parts[0].strip():
            out[parts[1]] = Container(parts[0].strip(), parts[2], parts[3], parts[4] if len(parts) > 4 else "",
                                      parts[5].strip() if len(parts) > 5 else "")
    return out


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


def config_hashes(project: str, compose_file: str, project_dir: str) -> list[str]:
    """``SERVICE HASH`` per line: the config hash Compose would give each service of
    ``compose_file`` (``docker compose config --hash '*'``), to compare with the
    ``config_hash`` of the running containers: equal means they run that file."""
    return compose(project, compose_file, project_dir, "config", "--hash", "*")


def parse_config_hashes(text: str) -> dict[str, str]:
    """``{service: hash}`` from :func:`config_hashes`."""
    out = {}
    for line in parse_lines(text):
        service, _, value = line.partition(" ")
        if value.strip():
            out[service] = value.strip()
    return out
