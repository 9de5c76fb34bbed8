"""Verification with testinfra, derived from the stack and its rendered compose file.

For every service of the current release on a host it asserts:

- the container is running, and healthy when it has a healthcheck;
- each published port is listening on the host, and the service's health path
  (``health_paths`` in stack.yml) answers HTTP 200 on it, requested on the host;
- each declared bind mount or volume is mounted at its target, and a bind mount's
  source exists on the host.

testinfra runs over Ferry's own SSH connection (:class:`FerryBackend`), so the host
key was verified like every other command. (testinfra's paramiko backend would accept
unknown host keys.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from ferry.host.containers import parse_compose_ps
from ferry.model.stack import Stack
from ferry.model.compose import bind_mounts, compose_services, published_ports
from ferry.host import containers, shell


class FerryBackend(BaseBackend):
    """A testinfra backend that runs commands on a :class:`ferry.host.transport.Transport`."""

    NAME = "ferry"

    def __init__(self, transport: Any, *args: Any, **kwargs: Any):
        self.transport = transport
        super().__init__(transport.host, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        """Run ``command`` (testinfra's shell string) through the transport as ``sh -c``."""
        command = self.get_command(command, *args)
        res = self.transport.run(["sh", "-c", command], check=False)
        return self.result(res.rc, self.encode(command), res.stdout, res.stderr)


def infra_host(transport: Any) -> testinfra.host.Host:
    """A testinfra ``host`` object (``host.docker``, ``host.socket``, ``host.file``...)
    whose commands go through ``transport``."""
    return testinfra.host.Host(FerryBackend(transport))


@dataclass
class Check:
    """One verification result row."""

    host: str
    kind: str       # container | port | http | mount
    target: str
    ok: bool
    detail: str


def verify_host(transport: Any, stack: Stack, compose_text: bytes, current_dir: str) -> list[Check]:
    """Run every check for one host.

    Args:
        transport: the host's transport.
        stack: the deployed stack (service list, health paths).
        compose_text: the current release's ``compose.yml`` (as on the host).
        current_dir: host path of the ``current`` release.

    Returns:
        One :class:`Check` per assertion; the caller decides the exit status.
    """
    host = infra_host(transport)
    name = transport.host
    services = compose_services(compose_text)
    ps = {c.service: c for c in parse_compose_ps(
        transport.run(containers.compose_ps(stack.name, f"{current_dir}/compose.yml", current_dir), check=False).out)}
    listening = {s for s in host.socket.get_listening_sockets() if s.startswith("tcp://")}

    def is_listening(ip: str, port: int) -> bool:
        wanted = {f"tcp://{ip}:{port}", f"tcp://0.0.0.0:{port}", f"tcp://:::{port}"}
        return bool(wanted & listening)

    def check_service(svc_name: str, svc: dict) -> list[Check]:
        checks: list[Check] = []
        c = ps.get(svc_name)
        if c is None:
            return [Check(name, "container", svc_name, False, "no container")]
        container = host.docker(c.name)
        info = container.inspect()
        state = info["State"]
        health = (state.get("Health") or {}).get("Status", "")
        ok = container.is_running and health in ("", "healthy")
        checks.append(Check(name, "container", svc_name, ok,
                            f"{state['Status']}{', ' + health if health else ''} ({c.name})"))
        for ip, port, proto in published_ports(svc):
            if proto != "tcp":
                continue           # listening sockets and HTTP checks are TCP
            up = is_listening(ip, port)
            checks.append(Check(name, "port", f"{svc_name} {ip}:{port}", up, "listening" if up else "not listening"))
            path = stack.health_paths.get(svc_name)
            if path:
                url = f"http://127.0.0.1:{port}{path}"
                code = host.run(" ".join(shell.q(a) for a in containers.http_status(url))).stdout.strip()
                checks.append(Check(name, "http", f"{svc_name} {url}", code == "200", f"HTTP {code}"))
        mounts = {m.get("Destination"): m for m in info.get("Mounts") or []}
        for src, target in bind_mounts(svc):
            m = mounts.get(target)
            if m is None:
                checks.append(Check(name, "mount", f"{svc_name} {target}", False, "not mounted"))
            elif src.startswith("/"):
                exists = host.file(src).exists
                checks.append(Check(name, "mount", f"{svc_name} {target}", exists,
                                    f"{m.get('Type')} from {src}" + ("" if exists else " (source missing)")))
            else:
                checks.append(Check(name, "mount", f"{svc_name} {target}", m.get("Type") == "volume",
                                    f"{m.get('Type')} {m.get('Name', src)}"))
        return checks

    # one SSH connection, several channels at once: services are checked concurrently
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda item: check_service(item[0], item[1] or {}), services.items())
    return [c for group in results for c in group]
