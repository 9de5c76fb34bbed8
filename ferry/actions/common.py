"""What every action needs: the hosts of a stack (or of a whole host), with their merged
variables; the current release's compose file; remote processes that stop on Ctrl-C."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from ..controller.inventory import Host, Inventory, load_inventory
from ..errors import HostError
from ..host import containers, files
from ..host.session import HostSession, open_hosts
from ..host.transport import Result, drain
from ..host.transport.ssh import connect_host
from ..model.paths import HostPaths
from ..model.stack import Stack
from ..model.vars import merge_vars
from ..roles import DEPLOY_ROLES, all_role_defaults


def host_variables(host: Host, stack: Stack | None, sets: dict[str, Any]) -> dict[str, Any]:
    """Merged variables for one host: role defaults (deploy roles and backup) < stack
    defaults (none for a host-wide command) < inventory variables < ``--set``, inventory
    Jinja rendered with all of them visible (:meth:`ferry.controller.inventory.Host.resolve`).

    Raises:
        FerryError: an inventory value Ferry needs cannot be rendered (names it).
    """
    return host.resolve(merge_vars(all_role_defaults(DEPLOY_ROLES + ["backup"]), stack.defaults if stack else {}),
                        sets)


@contextlib.contextmanager
def stack_hosts(inventory_path: Inventory | Path, pattern: str, stack: Stack | None, sets: dict[str, Any],
                bundle: str = "") -> Iterator[list[HostSession]]:
    """Open every host ``pattern`` selects in ``inventory_path`` (an
    :class:`~ferry.controller.inventory.Inventory` or its path) for ``stack`` (None: for
    a command that spans a host's stacks, such as ``prune``; ``paths.root`` is then
    what it uses).

    Raises:
        FerryError: bad inventory or pattern; HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(pattern)
    with open_hosts(hosts, lambda h: host_variables(h, stack, sets),
                    lambda name, v: HostPaths(str(v["ferry_root"]), stack.name if stack else "", bundle),
                    lambda h: connect_host(h, inventory)) as sessions:
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
        return drain(self.s.t.stream(containers.with_pid(self.argv, self.merge_stderr), check=False), take)

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
