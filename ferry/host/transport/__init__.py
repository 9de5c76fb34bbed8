"""The SSH boundary: the only place Ferry talks to hosts.

Every role goes through a :class:`Transport`; there are two:

- :class:`ferry.host.transport.ssh.SSHTransport`: paramiko (and OpenSSH for bulk data), host keys verified
  against known_hosts (unknown or changed keys are refused);
- :class:`ferry.host.transport.fake.FakeTransport`: scripted, for role tests.

Commands are argument lists (``["docker", "load", "-i", path]``); the transport joins
them with :func:`shlex.join`, so no word built from inventory or user input reaches a
shell unquoted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Generator, Iterable, Protocol, Sequence

from ...errors import HostError


@dataclass
class Result:
    """Outcome of one remote command.

    Attributes:
        argv: the command as run.
        rc: exit status.
        stdout: standard output, bytes.
        stderr: standard error, bytes.
    """

    argv: Sequence[str]
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.rc == 0

    @property
    def out(self) -> str:
        """stdout decoded as UTF-8 (replacement characters for bad bytes)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        """stderr decoded as UTF-8 (replacement characters for bad bytes)."""
        return self.stderr.decode("utf-8", errors="replace")

    def last_error_line(self) -> str:
        """The last non-empty line of stderr (else stdout, else the exit status)."""
        lines = [l for l in (self.err or self.out).strip().splitlines() if l.strip()]
        return lines[-1] if lines else f"exit status {self.rc}"


ProgressFn = Callable[[int], None]
"""Called with the number of bytes sent since the previous call."""


class Transport(Protocol):
    """What a role may do with a host. Implementations: SSH and fake."""

    host: str
    """Inventory name of the host."""

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Run a command (argument list) and wait for it.

        Args:
            argv: the command; each word is quoted with :func:`shlex.quote`.
            input: bytes fed to the command's stdin (then EOF).
            check: raise :class:`HostError` when the exit status is not 0.
            timeout: seconds before the command is abandoned (HostError); None: the
                host's ``ferry_command_timeout`` (1800 s); ``math.inf``: no deadline (a
                dead host is still noticed by keepalives, ``ferry_ssh_dead_after``).
        """
        ...

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], check: bool = True) -> Result:
        """Stream ``chunks`` (bytes) into the stdin of ``argv`` on the host, e.g. the
        upload receiver of ``ferry.host.files.receive_files``. ``check`` as in :meth:`run`."""
        ...

    def stream(self, argv: Sequence[str], timeout: float | None = None,
               check: bool = True) -> Generator[bytes, None, Result]:
        """Run ``argv`` and yield its stdout in blocks. At the end: raises HostError when
        the command failed and ``check``; returns the :class:`Result` (exit status,
        stderr) as the generator's value (see :func:`drain`)."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...


def join(argv: Sequence[str]) -> str:
    """The shell command line for ``argv``: every word quoted with :func:`shlex.quote`."""
    return shlex.join([str(a) for a in argv])


def check_result(host: str, result: Result, what: str | None = None) -> Result:
    """Raise :class:`HostError` naming the host and command when ``result`` failed."""
    if result.rc != 0:
        cmd = what or " ".join(str(a) for a in result.argv[:3])
        raise HostError(host, f"'{cmd}' failed: {result.last_error_line()}")
    return result


def drain(blocks: Generator[bytes, None, Result], sink: Callable[[bytes], None]) -> Result:
    """Hand every block of a :meth:`Transport.stream` to ``sink`` and return the stream's
    :class:`Result` (exit status and stderr)."""
    while True:
        try:
            sink(next(blocks))
        except StopIteration as end:
            return end.value
