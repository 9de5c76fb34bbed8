"""Sessions: the one way Ferry opens hosts, and the one guard around every change.

:func:`open_hosts` connects to every selected host in parallel (host keys verified,
see :mod:`ferry.host.transport.ssh`) before anything happens anywhere; if one host
fails, every connection is closed and the first failure (in inventory order) is raised.

:func:`guarded` wraps every command that changes a host (deploy, rollback, backup,
restore, remove, lock.release...), as Kamal's ``modify(lock: true)`` does: it takes the
stack's lock on every host first (:mod:`ferry.host.lock`), yields a :class:`Change` in
which the action records each host's outcome, and writes one audit line per host
(:mod:`ferry.host.audit`) however the block ends: ``ok``/``failed`` as recorded, the
error of a :class:`~ferry.errors.FerryError`, or ``interrupted`` on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import FerryError
from ..model.paths import HostPaths
from . import audit, lock


@dataclass
class HostSession:
    """One connected host.

    Attributes:
        name: inventory name (every message about the host uses it).
        t: its transport (:class:`ferry.host.transport.Transport`).
        vars: merged variables (defaults < inventory < ``--set``).
        paths: :class:`ferry.model.paths.HostPaths` for the stack.
    """

    name: str
    t: Any
    vars: dict[str, Any]
    paths: HostPaths


@contextlib.contextmanager
def open_hosts(hosts: Sequence[Any], variables: Callable[[Any], dict[str, Any]],
               paths: Callable[[str, dict[str, Any]], HostPaths],
               connect: Callable[[Any], Any]) -> Iterator[list[HostSession]]:
    """Connect to every host in parallel; close them all when the block ends.

    Args:
        hosts: inventory hosts (:class:`ferry.controller.inventory.Host`), in order.
        variables: a host's merged variables.
        paths: ``(host name, variables) -> HostPaths``.
        connect: opens a host's transport (raises :class:`~ferry.errors.HostError`).

    Yields:
        One :class:`HostSession` per host, in the order of ``hosts``.

    Raises:
        FerryError: a host is unreachable, its key unknown or changed, login refused
            (no host has been changed; the first failure in inventory order).
    """
    hosts = list(hosts)
    merged = {h.name: variables(h) for h in hosts}
    results: dict[str, Any] = {}

    def one(h: Any) -> None:
        try:
            results[h.name] = connect(h)
        except FerryError as exc:
            results[h.name] = exc

    if len(hosts) == 1:
        one(hosts[0])
    elif hosts:
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            list(pool.map(one, hosts))
    opened = {n: r for n, r in results.items() if not isinstance(r, BaseException)}
    try:
        for h in hosts:
            if isinstance(results.get(h.name), BaseException):
                raise results[h.name]
        yield [HostSession(h.name, opened[h.name], merged[h.name], paths(h.name, merged[h.name]))
               for h in hosts]
    finally:
        for t in opened.values():
            t.close()


@dataclass
class Outcome:
    """One host's outcome of a guarded change, for its audit line."""

    result: str = "ok"
    detail: str = ""
    release: str | None = None
    version: str | None = None


@dataclass
class Change:
    """Handed to the body of :func:`guarded`: record each host's outcome with :meth:`done`."""

    task: str
    stack: str
    version: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def done(self, host: str, result: str = "ok", detail: str = "", release: str | None = None,
             version: str | None = None) -> None:
        """Record ``host``'s outcome (``ok``, ``failed``, ``rolled-back``...)."""
        self.outcomes[host] = Outcome(result, detail, release, version)


@contextlib.contextmanager
def guarded(sessions: Sequence[HostSession], stack: str | Mapping[str, Sequence[str]], task: str, version: str = "",
            message: str = "", wait: float = 0.0, check: bool = False) -> Iterator[Change]:
    """Lock the stack on every host, run the block, audit every host.

    Args:
        sessions: the hosts (from :func:`open_hosts`).
        stack: stack name (the lock and the audit line are per stack); or, for a
            command that spans the stacks of a host (``prune``, ``uninstall``),
            ``{host name: [stack names]}``: each host's stacks are all locked (in name
            order, so two such runs cannot deadlock) and its audit line names them all.
        task: ``deploy``, ``rollback``, ``backup``...
        version: recorded in the lock and the audit line.
        message: ``--message``, recorded in the lock and the audit line.
        wait: seconds to wait for a lock held by another run.
        check: check mode: no lock, no audit.

    Raises:
        HostError: a lock is held by another run (nothing was changed; locks already
            taken are released); and whatever the block raises, after the audit lines
            are written.
    """
    def stacks_of(s: HostSession) -> list[str]:
        return [stack] if isinstance(stack, str) else sorted(set(stack.get(s.name, ())))

    change = Change(task, stack if isinstance(stack, str) else "", version)
    if check:
        yield change
        return
    with contextlib.ExitStack() as locks:
        for name in sorted({n for s in sessions for n in stacks_of(s)}):
            locks.enter_context(lock.holding([(s.t, s.paths.root) for s in sessions if name in stacks_of(s)],
                                             name, task, version, message, wait))
        failure = ""
        try:
            yield change
        except (KeyboardInterrupt, SystemExit):
            failure = "interrupted"
            raise
        except FerryError as exc:
            failure = str(exc)
            raise
        finally:
            for s in sessions:
                o = change.outcomes.get(s.name)
                if o is None:
                    o = Outcome("interrupted" if failure == "interrupted" else ("failed" if failure else "ok"),
                                "" if failure == "interrupted" else failure)
                detail = " ".join(x for x in (o.detail, f'"{message}"' if message else "") if x)
                audit.record(s.t, s.paths.root, audit.entry(task, ",".join(stacks_of(s)), o.version or version,
                                                           o.release, o.result, detail))
