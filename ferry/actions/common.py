"""What every action needs: the hosts of a stack (or of a whole host), with their merged
variables; the current release's compose file; remote processes that stop on Ctrl-C."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..controller.inventory import Host, Inventory, load_inventory
from ..errors import FerryError, HostError
from ..host import containers, files
from ..host.session import HostSession, open_hosts
from ..host.transport import Result, drain
from ..host.transport.ssh import connect, connection_specs
from ..host.transport.ssh.spec import CONNECTION_VARS
from ..model.paths import HostPaths, own_directory
from ..model.stack import Stack
from ..model.vars import Declarations, Layer
from ..roles import role_declarations


def declarations(stack: Stack | None) -> Declarations:
    """Every variable the roles and ``stack`` declare (a stack's new defaults applied;
    the roles' alone for a host-wide command, ``stack`` None).

    Raises:
        FerryError: a stack variable declared by a role too, or a new default for a
            variable nothing declares.
    """
    return (role_declarations() + stack.variables).complete() if stack else role_declarations()


def host_variables(host: Host, stack: Stack | None, sets: dict[str, Any]) -> dict[str, Any]:
    """Merged and checked variables for one host: role defaults < stack defaults (none
    for a host-wide command) < inventory variables < ``--set``; inventory Jinja rendered
    with all of them visible (:meth:`ferry.controller.inventory.Host.resolve`); then
    every declared variable converted to its type and checked
    (:meth:`ferry.model.vars.Declarations.check`; ``--set`` values are text).

    Returns:
        The merged variables (with Ansible's magic variables), declared ones typed.

    Raises:
        FerryError: an inventory value Ferry needs cannot be rendered, or a value breaks
            its declaration: one line naming where it is set (``file:line``, ``--set``),
            the key, the host and the rule.
    """
    decls = declarations(stack)
    merged = host.resolve(decls.defaults(), sets, required=decls.names())
    inventory = {k: merged[k] for k in host.vars if k not in sets}
    origins = {k: host.inventory.origin(host.name, k) for k in inventory} if host.inventory else {}
    layers = [Layer(str(host.inventory.path) if host.inventory else "inventory", inventory, origins),
              Layer("--set", sets, text=True)]
    checked = decls.check(layers, host.name)
    root = checked.get("ferry_root")
    if root is not None and not own_directory(str(root)):
        where = "--set" if "ferry_root" in sets else origins.get("ferry_root") or layers[0].name
        raise FerryError(f"{where}: key 'ferry_root' (host {host.name}): {str(root)!r} is / or a system directory: "
                         f"Ferry's root must be a directory of its own, e.g. /opt/ferry (uninstall removes it)")
    return {**merged, **checked}


def unknown_variable_warnings(hosts: list[Host], stack: Stack, sets: dict[str, Any],
                              known: Iterable[str] = ()) -> list[str]:
    """One line per variable set in the inventory or with ``--set`` that nothing declares
    (a typo?), naming where it is set, its hosts and the closest declared name.

    Args:
        hosts: the selected hosts.
        stack: the stack being run.
        sets: ``--set`` values.
        known: names declared elsewhere (other stacks of the project), not reported;
            nor are the connection variables the SSH transport reads and checks.
    """
    decls = declarations(stack)
    known = {*known, *CONNECTION_VARS}
    found: dict[str, list[Host]] = {}
    for h in hosts:
        for name in decls.unknown([*h.vars, *sets], known):
            found.setdefault(name, []).append(h)
    out = []
    for name, where in sorted(found.items()):
        first = where[0]
        origin = "--set" if name in sets else first.inventory.origin(first.name, name) if first.inventory else "inventory"
        hint = decls.suggest(name)
        out.append(f"{origin}: variable '{name}' (hosts {', '.join(h.name for h in where)}) is declared by no role "
                    f"or stack ({stack.name}): a typo?" + (f" did you mean '{hint}'?" if hint else ""))
    return out


@contextlib.contextmanager
def stack_hosts(inventory_path: Inventory | Path, pattern: str, stack: Stack | None, sets: dict[str, Any],
                bundle: str = "") -> Iterator[list[HostSession]]:
    """Open every host ``pattern`` selects in ``inventory_path`` (an
    :class:`~ferry.controller.inventory.Inventory` or its path) for ``stack`` (None: for
    a command that spans a host's stacks, such as ``prune``; ``paths.root`` is then
    what it uses).

    Raises:
        FerryError: bad inventory, pattern or connection variables (all hosts' are
            checked before any is contacted); HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(pattern)
    specs = connection_specs(hosts, inventory)
    with open_hosts(hosts, lambda h: host_variables(h, stack, sets),
                    lambda name, v: HostPaths(str(v["ferry_root"]), stack.name if stack else "", bundle),
                    lambda h: connect(specs[h.name])) as sessions:
        yield sessions


def current_compose(s: HostSession, stack: str) -> bytes:
    """The current release's ``compose.yml`` on the host of ``s``.

    Raises:
        HostError: the stack has no current release there.
    """
    found = files.parse_tar(s.t.run(files.read_tar(s.paths.stack_dir, ["current/compose.yml"])).stdout)
    if "current/compose.yml" not in found:
        raise HostError(s.name, f"no current release of '{stack}' under {s.paths.stack_dir}")
    return found["current/compose.yml"]


def current_services(s: HostSession, stack: str) -> list[str]:
    """The services of the current release's compose file (sorted), as Compose on the
    host reads it.

    Raises:
        HostError: no current release, or Compose cannot read it.
    """
    current_compose(s, stack)
    res = s.t.run(containers.config_hashes(*compose_args(s, stack)), check=False)
    if not res.ok:
        raise HostError(s.name, f"docker compose cannot read the current release of {stack}: {res.last_error_line()}")
    return sorted(containers.parse_config_hashes(res.out))


def compose_args(s: HostSession, stack: str) -> tuple[str, str, str]:
    """``(project, compose file, project directory)`` of the current release, for the
    builders of :mod:`ferry.host.containers`."""
    return stack, f"{s.paths.current}/compose.yml", s.paths.current


class RemoteProcess:
    """A command on a host whose stdout is streamed to the controller and which can be
    stopped from another thread (Ctrl-C) with :meth:`stop`: it is started through
    :func:`ferry.host.containers.with_pid`, so its PID is known.

    Args:
        s: the host.
        argv: the command.
        merge_stderr: its stderr goes into the stream too (logs); otherwise it comes
            back in the :class:`~ferry.host.transport.Result` at the end.
    """

    def __init__(self, s: HostSession, argv: list[str], merge_stderr: bool = False):
        self.s, self.argv, self.merge_stderr = s, argv, merge_stderr
        self.pid: int | None = None
        self.stopped = False

    def run(self, sink: Callable[[bytes], None]) -> Result:
        """Run to the end, handing stdout blocks (without the PID line) to ``sink``."""
        head = b""

        def take(block: bytes) -> None:
            nonlocal head
            if self.pid is None:
                head += block
                if b"\n" not in head:
                    return
                line, _, block = head.partition(b"\n")
                self.pid = int(line.strip() or b"0")
            if block:
                sink(block)
        # no deadline (logs --follow, exec run until they end or are stopped); a dead host
        # is still noticed by the transport's keepalives
        return drain(self.s.t.stream(containers.with_pid(self.argv, self.merge_stderr), timeout=math.inf,
                                     check=False), take)

    def stop(self) -> None:
        """Stop the command on the host (SIGTERM), if it started."""
        self.stopped = True
        if self.pid:
            self.s.t.run(containers.kill(self.pid), check=False, timeout=15)


class LinePrefixer:
    """Turns blocks of output into whole lines prefixed with ``prefix`` (several hosts
    writing to one terminal); call :meth:`flush` at the end."""

    def __init__(self, prefix: bytes, write: Callable[[bytes], None]):
        self.prefix, self.write, self.rest = prefix, write, b""

    def __call__(self, block: bytes) -> None:
        data = self.rest + block
        *lines, self.rest = data.split(b"\n")
        if lines:
            self.write(b"".join(self.prefix + line + b"\n" for line in lines))

    def flush(self) -> None:
        """Write an unfinished last line."""
        if self.rest:
            self.write(self.prefix + self.rest + b"\n")
            self.rest = b""
