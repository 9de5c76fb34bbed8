"""Fact parsers: pure functions from a command's output (see ``commands``) to data.

Each parser names the builder whose output it reads. No I/O.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass


@dataclass
class HostFacts:
    """Parsed :func:`ferry.commands.host_facts` output.

    Attributes:
        machine: ``uname -m`` (``x86_64``, ``aarch64``).
        dpkg_arch: Debian architecture (``amd64``) or None on non-Debian hosts.
        systemd: True when systemd is PID 1 (``/run/systemd/system`` exists).
        docker_version: dockerd version (``20.10.24+dfsg1``) or None.
        compose_version: Compose plugin version (``2.40.3``) or None.
        docker_active: the docker unit is active.
    """

    machine: str
    dpkg_arch: str | None
    systemd: bool
    docker_version: str | None
    compose_version: str | None
    docker_active: bool


def parse_host_facts(text: str) -> HostFacts:
    """Parse :func:`ferry.commands.host_facts`. Raises ValueError on short output."""
    lines = [l.strip() for l in text.splitlines()]
    if len(lines) < 5:
        raise ValueError(f"host facts: expected at least 5 lines, got {len(lines)}")
    m = re.search(r"version ([^\s,]+)", lines[3])
    docker = m.group(1) if lines[3] != "no-docker" and m else None
    compose = None if lines[4] == "no-compose" else lines[4].lstrip("v")
    return HostFacts(
        machine=lines[0],
        dpkg_arch=None if lines[1] == "-" else lines[1],
        systemd=lines[2] == "systemd",
        docker_version=docker,
        compose_version=compose,
        docker_active=len(lines) > 5 and lines[5] == "active",
    )


def parse_lines(text: str) -> list[str]:
    """Non-empty stripped lines (for :func:`ferry.commands.list_dir`)."""
    return [l.strip() for l in text.splitlines() if l.strip()]


def parse_links(text: str) -> dict[str, str]:
    """``{relpath: target}`` from :func:`ferry.commands.list_links`."""
    out = {}
    for line in parse_lines(text):
        rel, _, target = line.partition(" ")
        out[rel] = target
    return out


def parse_dpkg_status(text: str) -> dict[str, str]:
    """``{package: version}`` of *installed* packages from :func:`ferry.commands.dpkg_status`."""
    out = {}
    for line in parse_lines(text):
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("ii"):
            out[parts[0]] = parts[1]
    return out


def parse_images(text: str) -> dict[str, set[str]]:
    """``{image_id: {repo:tag, ...}}`` from :func:`ferry.commands.docker_images`.
    Untagged images (``<none>:<none>``) map to an empty set."""
    out: dict[str, set[str]] = {}
    for line in parse_lines(text):
        image_id, _, ref = line.partition("\t")
        tags = out.setdefault(image_id.strip(), set())
        if ref and "<none>" not in ref:
            tags.add(ref.strip())
    return out


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
    """Parse :func:`ferry.commands.compose_ps`: JSON lines (Compose >= 2.21) or one JSON
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


@dataclass(frozen=True)
class Container:
    """A project container from :func:`ferry.commands.project_containers`."""

    id: str
    started_at: str
    status: str        # running, exited, created, ...
    health: str        # healthy, unhealthy, starting, or "" without healthcheck

    @property
    def healthy(self) -> bool:
        """Running, and healthy if it has a healthcheck."""
        return self.status == "running" and self.health in ("", "healthy")


def parse_project_containers(text: str) -> dict[str, Container]:
    """``{service: Container}`` from :func:`ferry.commands.project_containers`."""
    out = {}
    for line in text.splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 4 and parts[0].strip():
            out[parts[1]] = Container(parts[0].strip(), parts[2], parts[3], parts[4] if len(parts) > 4 else "")
    return out


def parse_tar(data: bytes) -> dict[str, bytes]:
    """``{path: content}`` of the regular files in a tar stream (:func:`ferry.commands.read_tar`)."""
    if not data:
        return {}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                out[member.name] = f.read()
    return out


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file (comments and blanks skipped, one level of
    matching quotes removed), as Compose reads ``env_file``."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def config_values(name: str, data: bytes) -> dict[str, str]:
    """The leaf values of a config file, keyed for a "changed keys" diff: dotted paths
    (``weConfig.corpSecret``, ``api_keys[0].api``) for ``*.json``/``*.yaml``/``*.yml``
    files that parse, else ``KEY=VALUE`` lines as in :func:`parse_dotenv`. Values are
    compared, never shown."""
    text = data.decode("utf-8", "replace")
    if name.endswith((".json", ".yaml", ".yml")):
        try:
            import yaml   # JSON is YAML
            tree = yaml.safe_load(text)
        except Exception:  # noqa: BLE001 - unparsable: compare as lines below
            tree = None
        if isinstance(tree, (dict, list)):
            out: dict[str, str] = {}

            def walk(node, path: str) -> None:
                if isinstance(node, dict):
                    for k, v in node.items():
                        walk(v, f"{path}.{k}" if path else str(k))
                elif isinstance(node, list) and node and all(isinstance(x, (dict, list)) for x in node):
                    for i, v in enumerate(node):
                        walk(v, f"{path}[{i}]")
                else:
                    out[path] = repr(node)
            walk(tree, "")
            return out
    return parse_dotenv(text)
