"""The host system: facts (CPU, dpkg, systemd, Docker versions) and package/service
commands. Each builder sits next to the parser of its output; nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .files import parse_lines
from .shell import q, sh

def host_facts() -> list[str]:
    """One line each: ``uname -m``; dpkg architecture or ``-``; ``systemd``/``no-systemd``;
    dockerd version line or ``no-docker``; compose version or ``no-compose``; docker
    service state (``active``/``inactive``/...)."""
    return sh("uname -m; dpkg --print-architecture 2>/dev/null || echo -; "
              "[ -d /run/systemd/system ] && echo systemd || echo no-systemd; "
              "dockerd --version 2>/dev/null || echo no-docker; "
              "docker compose version --short 2>/dev/null || echo no-compose; "
              "systemctl is-active docker 2>/dev/null || true")


@dataclass
class HostFacts:
    """Parsed :func:`ferry.host.system.host_facts` output.

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
    """Parse :func:`ferry.host.system.host_facts`. Raises ValueError on short output."""
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


def dpkg_status(packages: Sequence[str]) -> list[str]:
    """``NAME VERSION STATUS`` per installed package among ``packages`` (others omitted)."""
    return sh("dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' "
              + " ".join(q(p) for p in packages) + " 2>/dev/null || true")


def parse_dpkg_status(text: str) -> dict[str, str]:
    """``{package: version}`` of *installed* packages from :func:`ferry.host.system.dpkg_status`."""
    out = {}
    for line in parse_lines(text):
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("ii"):
            out[parts[0]] = parts[1]
    return out


def apt_install_local(debs: Sequence[str]) -> list[str]:
    """Install local ``.deb`` files with apt (dependencies resolved among them), never
    reaching for a network source: the source lists are pointed at /dev/null."""
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
            "--no-install-recommends",
            "-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dpkg::Options::=--force-confold", *debs]


def install_file(src: str, dest: str, mode: int) -> list[str]:
    """Copy ``src`` to ``dest`` on the host with ``mode`` (``install -D``)."""
    return ["install", "-D", "-m", f"{mode:04o}", src, dest]


def systemctl(*args: str) -> list[str]:
    """``systemctl ARGS...`` (e.g. ``enable docker.service``)."""
    return ["systemctl", *args]


def unit_log(unit: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a systemd unit's journal, messages only."""
    return ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"]
