"""A scripted transport for role tests: no network, every call recorded.

A test gives a *handler* that plays the host: it receives the argument list (and the
bytes sent on stdin, or streamed by ``send``) and returns ``(rc, stdout, stderr)``.
Roles under test cannot tell it from :class:`ferry.host.transport.ssh.SSHTransport`.

With ``unbatch=True`` a batch of commands (:func:`ferry.host.batch.script`: verification,
the facts of a deploy) is answered command by command by the same handler, and framed
as the host's shell would, in one call (one round trip).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterable, Sequence

from .. import batch
from ..answers import answered_by
from . import Result, check_result, join

Handler = Callable[[list[str], bytes], "tuple[int, bytes | str, bytes | str]"]


@dataclass
class Call:
    """One recorded call: the argv, the stdin bytes, and whether they were streamed
    (:meth:`FakeTransport.send`) rather than passed as ``input``."""

    argv: list[str]
    input: bytes = b""
    streamed: bool = False
    batch: list[list[str]] = field(default_factory=list)
    """With ``unbatch``: the commands of a batch, each as the handler received it."""


@dataclass
class FakeTransport:
    """Transport whose host is a Python function.

    Args:
        handler: ``handler(argv, stdin_bytes) -> (rc, stdout, stderr)``.
        host: inventory name reported in errors.
        unbatch: answer each command of a batch with the handler (see the module
            docstring); a command line of the batch reaches it as its argument list
            when it is one (``shlex`` gives back the same line), else as
            ``["sh", "-c", line]``.
    """

    handler: Handler
    host: str = "fake-1"
    calls: list[Call] = field(default_factory=list)
    unbatch: bool = False

    def _result(self, argv: Sequence[str], data: bytes) -> Result:
        rc, out, err = self.handler(list(argv), data)
        out = out.encode() if isinstance(out, str) else out
        err = err.encode() if isinstance(err, str) else err
        return Result(list(argv), rc, out, err)

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Record the call and answer it with the handler (see Transport.run)."""
        unpacked = batch.unpack(argv) if self.unbatch else None
        if unpacked is not None:
            return self._batch(list(argv), unpacked)
        self.calls.append(Call(list(argv), input or b""))
        result = self._result(argv, input or b"")
        answered_by(self.host)
        return check_result(self.host, result) if check else result

    def _batch(self, argv: list[str], unpacked: batch.Unpacked) -> Result:
        call = Call(argv)
        self.calls.append(call)
        answers = []
        lines = ([(unpacked.gate, unpacked.gate_input)] if unpacked.gate is not None else []) + \
            [(line, "") for line in unpacked.commands]
        for line, stdin in lines:
            words = shlex.split(line)
            inner = words if join(words) == line else ["sh", "-c", line]
            call.batch.append(inner)
            rc, out, err = self.handler(inner, stdin.encode())
            answers.append(batch.Answer(rc, out.encode() if isinstance(out, str) else out,
                                        err.encode() if isinstance(err, str) else err))
            if unpacked.gate is not None and len(answers) == 1 and rc != 0:
                break
        answered_by(self.host)
        return Result(argv, 0, batch.frame(answers), b"")

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

    @property
    def round_trips(self) -> int:
        """Remote commands run so far (as :attr:`SSHTransport.round_trips`)."""
        return len(self.calls)

    def commands(self) -> list[list[str]]:
        """The argv of every call so far."""
        return [c.argv for c in self.calls]
