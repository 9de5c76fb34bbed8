"""Facts gathered ahead: the read-only commands a run will issue on a host, answered in
ONE round trip (:mod:`ferry.host.batch`, run in parallel on the host) and kept until the
run changes anything there.

:class:`Prefetched` wraps a host's transport. :meth:`Prefetched.gather` runs the fact
commands (each role declares its own, the same builders it then runs; see
``facts`` in :mod:`ferry.roles`), optionally behind a *gate* (the stack's lock: the
facts are then read under the lock, in the same round trip). Afterwards a
:meth:`~Prefetched.run` of one of those commands, with no input, is answered from the
gathered answer instead of the host. Any other command, any :meth:`~Prefetched.send`
or :meth:`~Prefetched.stream`, may change the host: it drops every kept answer first,
so nothing read after a change is ever stale. A no-op deploy thus asks the host once.

A gate may also be the change itself, with facts to read right after it: compose-up
activates a release as the gate of the batch that reads the project's containers and
the facts verification needs (one round trip instead of three).

:meth:`Prefetched.defer` queues a small write whose loss costs only time (``up.json``,
the record that lets the next deploy skip ``up``) for the session's last round trip
(:func:`ferry.host.session.guarded` runs it with the audit line, before the lock's
release).
"""

from __future__ import annotations

from typing import Any, Generator, Iterable, Sequence

from ..errors import FerryError, HostError
from . import batch
from .answers import answered_by
from .transport import Result, check_result, join


def key(argv: Sequence[str] | str) -> str:
    """The command line a fact is kept under and run as in a batch: ``SCRIPT`` for
    ``["sh", "-c", SCRIPT]`` (the batch runs every line with ``sh -c``), the quoted
    argument list otherwise (:func:`ferry.host.transport.join`); a string is already a
    command line."""
    if isinstance(argv, str):
        return argv
    if len(argv) == 3 and argv[0] == "sh" and argv[1] == "-c":
        return str(argv[2])
    return join(argv)


class Prefetched:
    """A transport (:class:`ferry.host.transport.Transport`) that answers gathered facts
    without asking the host again (see the module docstring).

    Args:
        t: the host's transport.

    Attributes:
        hits: commands answered from gathered facts so far.
    """

    def __init__(self, t: Any):
        self.t = t
        self.hits = 0
        self._answers: dict[str, batch.Answer] = {}
        self._deferred: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.t, name)          # host, round_trips, cipher, command_log...

    def gather(self, commands: Iterable[Sequence[str] | str], gate: Sequence[str] | None = None,
               gate_input: bytes = b"", timeout: float = 600) -> Result | None:
        """Run ``commands`` (argument lists, read-only) in ONE round trip, all at once on
        the host, and keep their answers; with ``gate``, run it first and the commands
        only when it succeeds.

        Args:
            commands: the facts, argument lists or command lines (duplicates are asked once).
            gate: a command that must succeed first (e.g. :func:`ferry.host.lock.acquire_command`).
            gate_input: UTF-8 text fed to the gate's stdin.
            timeout: seconds for the whole batch.

        Returns:
            The gate's :class:`~ferry.host.transport.Result` (None without a gate); its
            failure keeps no answer. A gate may change the host: the answers kept
            before are dropped; without one they are kept too.

        Raises:
            HostError: the answer came back cut short (the host went away).
        """
        lines = list(dict.fromkeys(key(c) for c in commands))
        if not lines and gate is None:
            return None
        argv = batch.script(lines, gate=key(gate) if gate is not None else None,
                            gate_input=gate_input.decode(), parallel=True)
        res = self.t.run(argv, check=False, timeout=timeout)
        count = len(lines) + (gate is not None)
        try:
            answers = batch.parse(res.stdout, count, gated=gate is not None)
        except FerryError as exc:
            raise HostError(self.t.host, f"gathering facts: {exc}: {res.last_error_line()}") from None
        if gate is None:                   # read-only: what was kept still holds
            self._answers.update(zip(lines, answers))
            return None
        a = answers.pop(0)
        first = Result(list(gate), a.rc, a.stdout, a.stderr)
        if first.ok:
            self._answers = dict(zip(lines, answers))
        return first

    def answer(self, line: str) -> batch.Answer | None:
        """The kept answer of the command line ``line`` (see :func:`key`), or None."""
        found = self._answers.get(line)
        if found is not None:
            self.hits += 1
        return found

    def defer(self, argv: Sequence[str]) -> None:
        """Queue ``argv`` (no stdin; a write whose loss costs only time, never a secret)
        for the session's last round trip (see the module docstring)."""
        self._deferred.append(list(argv))

    def deferred(self) -> list[list[str]]:
        """The queued commands (see :meth:`defer`), handed over once: the queue is
        emptied."""
        out, self._deferred = self._deferred, []
        return out

    def forget(self) -> None:
        """Drop every kept answer (the host may have changed)."""
        self._answers = {}

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """A kept answer for a fact with no input; otherwise forget them all and run it
        (see :meth:`ferry.host.transport.Transport.run`)."""
        if not input:
            found = self.answer(key(argv))
            if found is not None:
                answered_by(self.t.host)          # what a parser now reads came from this host
                result = Result(list(argv), found.rc, found.stdout, found.stderr)
                return check_result(self.t.host, result) if check else result
        self.forget()
        return self.t.run(argv, input=input, check=check, timeout=timeout)

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], *args: Any, **kwargs: Any) -> Result:
        """Forget the kept answers, then :meth:`ferry.host.transport.Transport.send`."""
        self.forget()
        return self.t.send(argv, chunks, *args, **kwargs)

    def stream(self, argv: Sequence[str], *args: Any, **kwargs: Any) -> Generator[bytes, None, Result]:
        """Forget the kept answers, then :meth:`ferry.host.transport.Transport.stream`."""
        self.forget()
        return self.t.stream(argv, *args, **kwargs)

    def close(self) -> None:
        """Close the underlying transport."""
        self.forget()
        self.t.close()


def prefetched(t: Any) -> Prefetched:
    """``t`` as a :class:`Prefetched` (itself when it already is one)."""
    return t if isinstance(t, Prefetched) else Prefetched(t)
