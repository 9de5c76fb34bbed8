"""Verification with testinfra, on Compose's own model of what runs on the host.

The facts are gathered in two SSH round trips (:mod:`ferry.host.batch`): first the
host's Compose model of the current release (``docker compose config --format json``),
``docker inspect`` of every container of the project and the listening TCP sockets;
then, knowing the model, one batch with the health URLs (``curl``) and the bind-mount
sources (``test -e``). testinfra's own modules then assert on those answers: its
backend (:class:`FerryBackend`) answers each command testinfra issues from the gathered
batch (keyed by the exact command line), and runs anything else for real.

For every service of the model it asserts, saying which rule it applied:

- **healthcheck**: a container with a healthcheck (the compose file's or the image's)
  must be running and ``healthy``;
- **completed**: a one-shot service that others wait for with ``condition:
  service_completed_successfully`` must have exited with status 0;
- **settle**: any other container must be running, not restarting, and up for at
  least ``compose_settle_seconds`` (no restart loop);
- each published TCP port listens on the host, and the service's ``health_paths``
  entry answers HTTP 200 on it (requested on the host);
- each bind mount and named volume is mounted at its target, a bind source exists.

testinfra runs over Ferry's own SSH connection, so the host key was verified like for
every other command (testinfra's paramiko backend would accept unknown host keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.modules.file import GNUFile
from testinfra.modules.socket import LinuxSocketSS

from ferry.errors import FerryError, HostError
from ferry.host import batch, containers, shell
from ferry.host.answers import json_doc
from ferry.model.compose import ComposeModel, parse_model
from ferry.model.stack import Stack

SOCKETS = "ss --numeric --listening --tcp"
"""The command testinfra's ``socket`` module runs for listening TCP sockets (``ss``)."""


class FerryBackend(BaseBackend):
    """A testinfra backend that runs commands on a :class:`ferry.host.transport.Transport`,
    answering from gathered batches first (:meth:`gather`)."""

    NAME = "ferry"

    def __init__(self, transport: Any, *args: Any, **kwargs: Any):
        self.transport = transport
        self.answers: dict[str, CommandResult] = {}
        super().__init__(transport.host, *args, **kwargs)

    def remember(self, command: str, rc: int, stdout: bytes, stderr: bytes = b"") -> None:
        """Answer ``command`` (the exact line testinfra will issue) with this result."""
        self.answers[command] = self.result(rc, self.encode(command), stdout, stderr)

    def gather(self, commands: list[str]) -> list[batch.Answer]:
        """Run ``commands`` in one round trip and remember every answer; no round trip
        when the transport already gathered them all (:class:`ferry.host.facts.Prefetched`:
        a deploy that changed nothing since)."""
        kept = getattr(self.transport, "answer", None)
        answers = [kept(c) for c in commands] if kept else []
        if kept and None in answers:
            self.transport.gather(commands, timeout=300)      # read-only: keeps what it had
            answers = [kept(c) for c in commands]
        if not answers or None in answers:
            res = self.transport.run(batch.script(commands), check=False, timeout=300)
            try:
                answers = batch.parse(res.stdout, len(commands))
            except FerryError as exc:
                raise HostError(self.transport.host, f"verification: {exc}: {res.last_error_line()}") from None
        for cmd, a in zip(commands, answers):
            self.remember(cmd, a.rc, a.stdout, a.stderr)
        return answers

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        """testinfra's command: from the gathered answers, else run as ``sh -c``."""
        command = self.get_command(command, *args)
        if command in self.answers:
            return self.answers[command]
        res = self.transport.run(["sh", "-c", command], check=False)
        return self.result(res.rc, self.encode(command), res.stdout, res.stderr)


def infra_host(transport: Any) -> testinfra.host.Host:
    """A testinfra ``host`` object (``host.docker``, ``host.socket``, ``host.file``...)
    whose commands go through ``transport``. Its ``socket`` module reads ``ss``
    (iproute2, on every Debian) and its ``file`` module is the GNU one, without probing
    the system first (hosts are Linux: three round trips saved)."""
    backend = FerryBackend(transport)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    host.socket = type("LinuxSocketSS", (LinuxSocketSS,), {"_host": host, "_command": "ss"})
    host.file = type("GNUFile", (GNUFile,), {"_host": host})
    return host


@dataclass
class Check:
    """One verification result row."""

    host: str
    kind: str       # container | port | http | mount
    target: str
    ok: bool
    detail: str


def settle_seconds(variables: dict[str, Any]) -> float:
    """``compose_settle_seconds`` from a host's variables (default 10)."""
    return float(variables.get("compose_settle_seconds", 10))


def one_shot_services(model: ComposeModel) -> set[str]:
    """Services others wait for with ``condition: service_completed_successfully``."""
    return {dep for s in model.services.values() for dep, opts in s.depends_on().items()
            if opts.get("condition") == "service_completed_successfully"}


def readiness(service: str, c: containers.Container | None, now: float, settle: float,
              one_shot: bool) -> tuple[bool, str]:
    """Whether a service's container counts as ready, and a sentence saying by which rule
    (see the module docstring).

    Args:
        c: its container (None: there is none).
        now: the host's clock (seconds since the epoch).
        settle: ``compose_settle_seconds``.
        one_shot: others wait for it to complete.
    """
    if c is None:
        return False, "no container"
    if one_shot:
        ok = c.status == "exited" and c.exit_code == 0
        return ok, f"{c.status} (exit {c.exit_code}); rule: one-shot, must exit 0 ({c.name})"
    if c.health:
        ok = c.status == "running" and c.health == "healthy"
        return ok, f"{c.status}, {c.health}; rule: healthcheck must pass ({c.name})"
    up = max(0.0, now - c.started) if c.started else 0.0
    ok = c.status == "running" and up >= settle
    why = "" if ok or c.status != "running" else f", up only {up:.0f}s"
    return ok, (f"{c.status} for {up:.0f}s, {c.restarts} restarts{why}; rule: no healthcheck, "
                f"running {settle:g}s without a restart ({c.name})")


def facts(stack: Stack, current_dir: str, model: ComposeModel | None = None) -> list[str]:
    """The command lines verification reads, for gathering ahead: without ``model``,
    its first round trip (Compose's model of the release in ``current_dir``, the
    project's containers, the listening sockets; a deploy gathers them with its other
    facts); with the ``model`` of the release that runs, all of it (the containers, the
    sockets and :func:`probes`: rollback reads them in the round trip that activates
    the release)."""
    if model is None:
        return [shell.join(containers.compose_config(stack.name, f"{current_dir}/compose.yml", current_dir)),
                containers.project_containers(stack.name)[-1], SOCKETS]
    urls, tests = probes(stack, model)
    return [containers.project_containers(stack.name)[-1], SOCKETS, *urls.values(), *tests]


def probes(stack: Stack, model: ComposeModel) -> tuple[dict[str, str], list[str]]:
    """What verification asks once it knows the model: ``({health URL: its curl command
    line}, [``test -e`` command line of each bind source])``, as testinfra's backend
    words them (every argument quoted with ``shlex``)."""
    urls = {}
    for svc in model.services.values():
        path = stack.health_paths.get(svc.name)
        for p in svc.ports:
            if path and p.protocol == "tcp":
                url = f"http://127.0.0.1:{p.port}{path}"
                urls[url] = shell.join(containers.http_status(url))
    sources = sorted({b.source for s in model.services.values() for b in s.binds})
    return urls, [BaseBackend.quote("test -e %s", src) for src in sources]


def port_checks(host: Any, name: str, stack: Stack, urls: dict[str, str], service: str, port: int,
                addrs: tuple[str, ...], label: str) -> list[Check]:
    """The ``port`` check (TCP ``port`` listening on any of ``addrs``, IPv4 or IPv6
    addresses as Docker publishes them) and, when ``urls`` has a command for the service's
    health URL on that port, the ``http`` check (HTTP 200), both from testinfra ``host``'s
    gathered answers; ``label`` names the port in the check."""
    up = any(host.socket(f"tcp://{a}:{port}").is_listening for a in addrs)
    out = [Check(name, "port", label, up, "listening" if up else "not listening")]
    url = f"http://127.0.0.1:{port}{stack.health_paths.get(service, '')}"
    if url in urls:
        code = host.run(urls[url]).stdout.strip()
        out.append(Check(name, "http", f"{service} {url}", code == "200", f"HTTP {code}"))
    return out


def verify_host(transport: Any, stack: Stack, current_dir: str, settle: float = 10.0,
                model: ComposeModel | None = None) -> list[Check]:
    """Run every check for one host (two round trips, see the module docstring; none
    when the transport gathered :func:`facts` ahead).

    Args:
        transport: the host's transport.
        stack: the deployed stack (project name, health paths).
        current_dir: host path of the ``current`` release.
        settle: seconds a container without healthcheck must have been running.
        model: Compose's model of the release that runs, as the host resolved it
            (rollback read it before activating); None: read it from ``current_dir``.

    Returns:
        One :class:`Check` per assertion; the caller decides the exit status.

    Raises:
        HostError: Compose on the host cannot read the current release.
    """
    if not isinstance(current_dir, str):
        raise TypeError(f"verify_host: current_dir must be the host path of the release, not {type(current_dir)}")
    host = infra_host(transport)
    backend: FerryBackend = host.backend
    name = transport.host
    gathered = model is not None          # then the first batch asked the probes too
    if model is None:
        config, state, _ = backend.gather(facts(stack, current_dir))
        if config.rc != 0:
            raise HostError(name, f"docker compose config in {current_dir}: "
                                  f"{(config.stderr.decode(errors='replace').strip().splitlines() or ['failed'])[-1]}")
        model = parse_model(json_doc(config.stdout, f"docker compose config in {current_dir}", dict))
    else:
        state = backend.gather(facts(stack, current_dir, model))[0]
    now, by_service = containers.parse_project_state(state.out)
    for info in containers.parse_inspect(state.out.partition("\n")[2]):
        _, c = containers.container_from_inspect(info)
        backend.remember(backend.get_command("docker inspect %s", c.name), 0, json.dumps([info]).encode())
    urls, tests = probes(stack, model)
    second = list(urls.values()) + tests
    if second and not gathered:
        backend.gather(second)
    one_shot = one_shot_services(model)
    checks: list[Check] = []
    for svc in model.services.values():
        c = by_service.get(svc.name)
        ok, detail = readiness(svc.name, c, now, settle, svc.name in one_shot)
        if c is not None:
            info = host.docker(c.name).inspect()          # testinfra, from the gathered answers
            ok = ok and (info["State"]["Running"] or svc.name in one_shot)
        checks.append(Check(name, "container", svc.name, ok, detail))
        if c is None or svc.name in one_shot:
            continue
        for p in svc.ports:
            if p.protocol != "tcp":
                continue           # listening sockets and HTTP checks are TCP
            checks += port_checks(host, name, stack, urls, svc.name, p.port, (p.host_ip, "0.0.0.0", "::"),
                                  f"{svc.name} {p.host_ip}:{p.port}")
        mounts = {m.get("Destination"): m for m in info.get("Mounts") or []}
        for b in svc.binds:
            m = mounts.get(b.target)
            if m is None:
                checks.append(Check(name, "mount", f"{svc.name} {b.target}", False, "not mounted"))
                continue
            exists = host.file(b.source).exists
            checks.append(Check(name, "mount", f"{svc.name} {b.target}", exists,
                                f"{m.get('Type')} from {b.source}" + ("" if exists else " (source missing)")))
        for vol, target in svc.volumes:
            m = mounts.get(target)
            ok = m is not None and m.get("Type") == "volume"
            checks.append(Check(name, "mount", f"{svc.name} {target}", ok,
                                f"volume {m.get('Name')}" if ok else f"volume {vol} not mounted"))
    return checks
