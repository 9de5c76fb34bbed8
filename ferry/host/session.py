"""Sessions: the one way Ferry opens hosts, and the one guard around every change.

:func:`open_hosts` connects to every selected host in parallel (host keys verified,
see :mod:`ferry.host.transport.ssh`) before anything happens anywhere; if one host
fails, every connection is closed and the first failure (in inventory order) is raised.

:func:`guarded` wraps every command that changes a host (deploy, rollback, backup,
restore, remove, lock.release...), as Kamal's ``modify(lock: true)`` does: it takes the
stack's lock on every host first, all hosts at once (:mod:`ferry.host.lock`; a deploy
gathers its facts in the same round trip, :mod:`ferry.host.facts`), yields a
:class:`Change` in which the action records each host's outcome, and writes one audit
line per host (:mod:`ferry.host.audit`) however the block ends, in the same round trip
as the lock's release: ``ok``/``failed`` as recorded, the error of a
:class:`~ferry.errors.FerryError`, or ``interrupted`` on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import FerryError, HostError
from .answers import AnswerError, last_host
from ..model.paths import HostPaths
from . import audit, lock
from .facts import prefetched


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
    reopen: Callable[[], Any] | None = None
    spent_round_trips: int = 0
    """Round trips of the connections replaced by :meth:`reconnected`."""

    @property
    def round_trips(self) -> int:
        """Remote commands sent to the host so far, over every connection of the session."""
        return self.spent_round_trips + int(getattr(self.t, "round_trips", 0))

    def reconnected(self) -> Any:
        """A fresh transport to the host after the connection was lost (the old one is
        closed and replaced), for the lock release and the audit line that must reach
        the host whatever happened to the run.

        Raises:
            FerryError: the host cannot be reached again, or no way to reopen was given.
        """
        if self.reopen is None:
            raise FerryError(f"{self.name}: connection lost")
        self.spent_round_trips = self.round_trips
        try:
            self.t.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is replaced
            pass
        self.t = self.reopen()
        return self.t


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
        HostError: a host's answer the block could not use (an
            :class:`~ferry.host.answers.AnswerError` raised in the block), put on the
            host that gave it.
    """
    hosts = list(hosts)
    merged = {h.name: variables(h) for h in hosts}
    results = each_host(hosts, connect)
    opened = {n: r for n, r in results.items() if not isinstance(r, BaseException)}
    sessions: list[HostSession] = []
    try:
        for h in hosts:
            if isinstance(results.get(h.name), BaseException):
                raise results[h.name]
        sessions = [HostSession(h.name, opened[h.name], merged[h.name], paths(h.name, merged[h.name]),
                                functools.partial(connect, h)) for h in hosts]
        try:
            yield sessions
        except AnswerError as exc:      # a host's answer no parser could use: name the host
            host = sessions[0].name if len(sessions) == 1 else last_host()
            raise (HostError(host, str(exc)) if host else exc) from None
    finally:
        for t in {id(t): t for t in [*opened.values(), *(s.t for s in sessions)]}.values():
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
    tokens: dict[str, str] = field(default_factory=dict)
    """host -> token of the stack's lock held there (none in check mode)."""

    def done(self, host: str, result: str = "ok", detail: str = "", release: str | None = None,
             version: str | None = None) -> None:
        """Record ``host``'s outcome (``ok``, ``failed``, ``rolled-back``...)."""
        self.outcomes[host] = Outcome(result, detail, release, version)


def each_host(sessions: Sequence[Any], action: Callable[[Any], Any]) -> dict[str, Any]:
    """Run ``action(session)`` for every host at once (threads, at most 16; inline for
    one host) and wait for all of them.

    Args:
        sessions: :class:`HostSession` or inventory hosts (anything with a ``name``).

    Returns:
        ``{host name: what action returned, or the exception it raised}`` (an
        :class:`~ferry.host.answers.AnswerError` as a :class:`HostError` of that host),
        in the order of ``sessions``.
    """
    done: dict[str, Any] = {}

    def one(s: HostSession) -> None:
        try:
            done[s.name] = action(s)
        except AnswerError as exc:    # what this host answered (on its own thread)
            done[s.name] = HostError(s.name, str(exc))
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, per host
            done[s.name] = exc
    if len(sessions) == 1:
        one(sessions[0])
    elif sessions:
        with ThreadPoolExecutor(max_workers=min(16, len(sessions))) as pool:
            list(pool.map(one, sessions))
    return {s.name: done[s.name] for s in sessions if s.name in done}


def raise_first_error(results: dict[str, Any]) -> None:
    """Raise the first exception of :func:`each_host`'s results (in host order), if any."""
    for value in results.values():
        if isinstance(value, BaseException):
            raise value


@contextlib.contextmanager
def guarded(sessions: Sequence[HostSession], stack: str | Mapping[str, Sequence[str]], task: str, version: str = "",
            message: str = "", wait: float = 0.0, check: bool = False,
            facts: Callable[[HostSession], Sequence[Sequence[str]]] | None = None,
            refuse: Callable[[HostSession], None] | None = None) -> Iterator[Change]:
    """Lock the stack on every host, run the block, audit every host.

    Every host's lock is taken at once (in parallel), and every host's audit line is
    written together with the release of its locks, in one round trip per host (with
    the writes the run deferred, :meth:`ferry.host.facts.Prefetched.defer`, before the
    release).

    Args:
        sessions: the hosts (from :func:`open_hosts`).
        stack: stack name (the lock and the audit line are per stack); or, for a
            command that spans the stacks of a host (``prune``, ``uninstall``),
            ``{host name: [stack names]}``: each host's stacks are all locked (in name
            order, so two such runs cannot deadlock) and its one audit line names them
            all (a host with no stack is neither locked nor audited).
        task: ``deploy``, ``rollback``, ``backup``...
        version: recorded in the lock and the audit line.
        message: ``--message``, recorded in the lock and the audit line.
        wait: seconds to wait for a lock held by another run.
        check: check mode: no lock, no audit.
        facts: the read-only commands each host's run will issue, gathered in the same
            round trip as its (last) lock, under it (:mod:`ferry.host.facts`: the
            sessions' transports become :class:`~ferry.host.facts.Prefetched`); in check
            mode gathered alone.
        refuse: read-only checks of one host (a deploy's preflight), run for every host
            at once after the locks and facts, before the block: what it raises is
            raised (the first host's in order) after the locks are released, with no
            audit line (nothing was changed).

    Raises:
        HostError: a lock is held by another run (nothing was changed; locks already
            taken are released); what ``refuse`` raises; and whatever the block raises,
            after the audit lines are written.
    """
    def stacks_of(s: HostSession) -> list[str]:
        return [stack] if isinstance(stack, str) else sorted(set(stack.get(s.name, ())))

    if facts is not None:
        for s in sessions:
            s.t = prefetched(s.t)
    change = Change(task, stack if isinstance(stack, str) else "", version)
    if check:
        if facts is not None:
            raise_first_error(each_host(sessions, lambda s: s.t.gather(facts(s))))
        if refuse is not None:
            raise_first_error(each_host(sessions, refuse))
        yield change
        return
    held: list[tuple[HostSession, lock.Lock]] = []
    held_guard = threading.Lock()         # the hosts take their locks on threads
    failure = ""

    def release(s: HostSession) -> None:
        for h, taken in held:
            if h is s:
                _on_host(s, lambda t, taken=taken: lock.Lock(t, taken.path, taken.token, taken.created).release(True))

    try:
        names = sorted({n for s in sessions for n in stacks_of(s)})
        for name in names:
            def take(s: HostSession, name: str = name) -> None:
                last = name == stacks_of(s)[-1]
                # held before it is taken: Ctrl-C during the round trip that takes it
                # still releases it (by token: a lock that is not ours is left alone)
                mark = (s, lock.Lock(s.t, lock.lock_dir(s.paths.root, name), lock.new_token()))
                with held_guard:
                    held.append(mark)
                try:
                    taken = lock.acquire(s.t, s.paths.root, name, task, version, message, wait,
                                         facts=facts(s) if facts is not None and last else (), token=mark[1].token)
                except Exception:
                    with held_guard:
                        held[:] = [h for h in held if h is not mark]
                    raise
                with held_guard:
                    held[:] = [(s, taken) if h is mark else h for h in held]
            raise_first_error(each_host([s for s in sessions if name in stacks_of(s)], take))
        if refuse is not None:
            raise_first_error(each_host(sessions, refuse))
    except BaseException:
        each_host(sessions, release)
        raise
    change.tokens = {s.name: taken.token for s, taken in held}
    try:
        yield change
    except (KeyboardInterrupt, SystemExit):
        failure = "interrupted"
        raise
    except FerryError as exc:
        failure = str(exc)
        raise
    except BaseException as exc:    # a bug in Ferry (a traceback follows): never audited as "ok"
        failure = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        raise
    finally:
        def finish(s: HostSession) -> None:
            mine = [taken for h, taken in held if h is s]
            if not mine:
                return
            o = change.outcomes.get(s.name)
            if o is None:
                o = Outcome("interrupted" if failure == "interrupted" else ("failed" if failure else "ok"),
                            "" if failure == "interrupted" else failure)
            detail = " ".join(x for x in (o.detail, f'"{message}"' if message else "") if x)
            rec = audit.entry(task, ",".join(stacks_of(s)), o.version or version, o.release, o.result, detail)
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
            later = getattr(s.t, "deferred", None)       # Prefetched.defer: before the release
            then = (later() if later else []) + [lock.release_command(taken.path, taken.token) for taken in mine]
            _on_host(s, lambda t: t.run(audit.append_then_command(s.paths.root, then), input=line))
        each_host(sessions, finish)


def _on_host(s: HostSession, action: Callable[[Any], None]) -> None:
    """Run ``action(transport)`` on the host; if the connection was lost, once more on a
    new connection. A host that stays unreachable is left as it is (the lock, if any,
    is then explained by ``lock.status``)."""
    try:
        action(s.t)
        return
    except (FerryError, OSError, EOFError):
        pass
    try:
        action(s.reconnected())
    except (FerryError, OSError, EOFError):
        pass
