"""A scripted transport for role tests: no network, every call recorded.

A test gives a *handler* that plays the host: it receives the argument list (and the
bytes sent on stdin, or streamed by ``send``) and returns ``(rc, stdout, stderr)``.
Roles under test cannot tell it from :class:`ferry.host.transport.ssh.SSHTransport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Iterable, Sequence

from ..answers import answered_by
from . import Result, check_result

Handler = Callable[[list[str], bytes], "tuple[int, bytes | str, bytes | str]"]


@dataclass
class Call:
    """One recorded call: the argv, the stdin bytes, and whether they were streamed
    (:meth:`FakeTransport.send`) rather than passed as ``input``."""

    argv: list[str]
    input: bytes = b""
    streamed: bool = False


@dataclass
class FakeTransport:
    """Transport whose host is a Python function.

    Args:
        handler: ``handler(argv, stdin_bytes) -> (rc, stdout, stderr)``.
        host: inventory name reported in errors.
    """

    handler: Handler
    host: str = "fake-1"
    calls: list[Call] = field(default_factory=list)

    def _result(self, argv: Sequence[str], data: bytes) -> Result:
        rc, out, err = self.handler(list(argv), data)
        out = out.encode() if isinstance(out, str) else out
        err = err.encode() if isinstance(err, str) else err
        return Result(list(argv), rc, out, err)

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Record the call and answer it with the handler (see Transport.run)."""
        self.calls.append(Call(list(argv), input or b""))
        result = self._result(argv, input or b"")
        answered_by(self.host)
        return check_result(self.host, result) if check else result

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], check: bool = True) -> Result:
        """Record the streamed bytes and answer with the handler (see Transport.send)."""
        data = b"".join(chunks)
        self.calls.append(Call(list(argv), data, streamed=True))
        result = self._result(argv, data)
        return check_result(self.host, result, "send") if check else result

    def stream(self, argv: Sequence[str], timeout: float | None = None,
               check: bool = True) -> Generator[bytes, None, Result]:
        """Like :meth:`run`, stdout yielded in 64 KiB blocks; returns the Result."""
        result = self.run(argv, check=check)
        out = result.stdout
        for i in range(0, len(out), 1 << 16):
            yield out[i:i + (1 << 16)]
        return Result(result.argv, result.rc, b"", result.stderr)

    def close(self) -> None:
        """Nothing to close."""
        pass

    def commands(self) -> list[list[str]]:
        """The argv of every call so far."""
        return [c.argv for c in self.calls]
