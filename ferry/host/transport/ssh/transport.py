"""The SSH transport: commands and bulk data on one verified connection per host.

A connection is opened from a :class:`~.spec.ConnectionSpec` by :func:`.hops.open_chain`
(paramiko, ``RejectPolicy`` and the spec's known_hosts on every hop; AES-GCM preferred).

Commands run on paramiko exec channels, one per command:

- stdout and stderr are drained concurrently (a thread each), so a command writing
  megabytes to stderr never stalls on the channel window; input is fed from the
  calling thread (so a ``send`` generator's progress and Ctrl-C stay in the caller);
- every command has a deadline: the caller's ``timeout``, else ``ferry_command_timeout``
  (1800 s; for bulk data counted from the last block sent); past it, the channel is
  closed and a :class:`HostError` says so (``math.inf``: no deadline, e.g. ``logs -f``);
- a :class:`Watchdog` sends an OpenSSH keepalive (``keepalive@openssh.com``, reply
  wanted) every ``dead_after / 4`` seconds; when no answer came for ``dead_after``
  (``ferry_ssh_dead_after``, 60 s) the connection is closed and the running command
  fails with ``HOST: no answer for 60 s``. (TCP alone would not notice: a frozen host's
  kernel keeps acknowledging packets.)
- with become, every argument list is wrapped in sudo (:mod:`.become`);
- a connection that died while no command was running (sshd restarted, the session
  killed, a NAT that forgot it) is opened again, once, before the next command starts:
  nothing had been sent on it, so no command runs twice. A command that was running when
  the connection died fails (``SSH connection lost``), and so does a reconnection that
  fails (``SSH connection lost; reconnecting failed: <why>``); a host the watchdog
  declared dead is not reconnected.

Bulk data (:meth:`SSHTransport.send`) goes through the OpenSSH client when it is
installed and the host logs in with keys (measured faster than paramiko, see
``benchmarks/``), by the same route with the same verification (:func:`.hops.openssh_argv`),
or through a paramiko channel otherwise (``ferry_transfer``).
"""

from __future__ import annotations

import itertools
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Generator, Iterable, Sequence

import paramiko

from ....errors import FerryError, HostError
from .. import Result, check_result, join
from . import become as sudo
from .hops import close_chain, explain_openssh_failure, open_chain, openssh_argv
from ...answers import answered_by
from ..interrupts import sending
from .spec import ConnectionSpec, warn_once

# paramiko logs a failed handshake (a port that is not sshd, a peer that hangs up) with
# its traceback from its own thread; with no handler, Python's last-resort handler would
# print it on stderr. Ferry reports the failure itself, in one line naming the host.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CHUNK = 1 << 20
"""Bytes read per receive call and sent per block (1 MiB)."""

POLL = 0.5
"""Seconds between checks of deadlines and the watchdog while waiting on a channel."""

DEATH_NOTICED = 2.0
"""Seconds a failed channel request waits for paramiko to notice that the connection
died (then it is opened again); a live connection's refusal is reported."""

# AES-GCM first: an AEAD cipher needs no separate HMAC pass, the cheapest choice for
# paramiko's packetizer (+12% upload rate measured on the sandbox). The rest of
# paramiko's list follows, so servers without GCM still negotiate.
GCM_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport_factory(*args, **kwargs) -> paramiko.Transport:
    """paramiko Transport with AES-GCM moved to the front of the cipher preference."""
    t = paramiko.Transport(*args, **kwargs)
    opts = t.get_security_options()
    opts.ciphers = [c for c in GCM_FIRST if c in opts.ciphers] + \
        [c for c in opts.ciphers if c not in GCM_FIRST]
    return t


class Watchdog(threading.Thread):
    """Detects a dead peer: keepalives that want a reply, on the target's connection.

    Args:
        transport: the target's paramiko transport (through every hop: a dead bastion
            silences it too).
        dead_after: seconds without any answer before the peer is declared dead.
        on_dead: called once when it is (closes the connection).

    Attributes:
        dead: None while alive, else the one-line reason (``no answer for 60 s``).
    """

    def __init__(self, transport: paramiko.Transport, dead_after: float, on_dead):
        super().__init__(name="ferry-ssh-watchdog", daemon=True)
        self.transport = transport
        self.dead_after = dead_after
        self.interval = max(0.2, min(15.0, dead_after / 4))
        self.on_dead = on_dead
        self.dead: str | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the watchdog (the connection is being closed on purpose)."""
        self._stop.set()

    def _ping(self, wait: float) -> bool:
        """Send one keepalive; True when any answer came within ``wait`` seconds."""
        answered = threading.Event()

        def ask() -> None:
            try:
                self.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:   # a connection closing under the request: see is_active below
                pass
            finally:
                answered.set()
        threading.Thread(target=ask, name="ferry-ssh-keepalive", daemon=True).start()
        return answered.wait(max(0.0, wait))

    def run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            if not self.transport.is_active():
                return
            if self._ping(last + self.dead_after - time.monotonic()) and self.transport.is_active():
                last = time.monotonic()
                continue
            if self._stop.is_set() or not self.transport.is_active():
                return
            self.dead = f"no answer for {self.dead_after:g} s (ferry_ssh_dead_after)"
            self.on_dead()
            return


class _Deadline:
    """When a command must be done: ``timeout`` seconds after it started or, for bulk
    data (``sliding``), after the last block went out (a 10 GB upload on a slow link is
    not a hung command; a receiver that stops reading is)."""

    def __init__(self, timeout: float, sliding: bool = False):
        self.timeout, self.sliding = timeout, sliding
        self.at = time.monotonic() + timeout

    def moved(self) -> None:
        """Data went out: a sliding deadline starts again."""
        if self.sliding:
            self.at = time.monotonic() + self.timeout

    def passed(self) -> bool:
        return time.monotonic() > self.at


class _Drain(threading.Thread):
    """Reads one stream of a channel (stdout or stderr) until EOF, into memory."""

    def __init__(self, recv, name: str):
        super().__init__(name=f"ferry-ssh-{name}", daemon=True)
        self.recv = recv
        self.parts: list[bytes] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while True:
                try:
                    block = self.recv(CHUNK)
                except socket.timeout:
                    continue
                if not block:
                    return
                self.parts.append(block)
        except (OSError, EOFError, paramiko.SSHException):
            return
        finally:
            self.done.set()

    def data(self) -> bytes:
        return b"".join(self.parts)


class SSHTransport:
    """One SSH connection to one inventory host (see the module docstring).

    Args:
        spec: the validated :class:`~.spec.ConnectionSpec`.

    Attributes:
        host: inventory name.
        transfer: ``openssh`` or ``paramiko`` (what carries :meth:`send`).
        reconnects: how many times a connection that died between commands was opened
            again (see the module docstring).
        round_trips: remote commands run so far on this connection (each exec channel,
            each :meth:`send`; the sudo probe at connect too), for benchmarks and tests.
        command_log: the first 120 characters of each of those commands, in order.

    Raises (from :meth:`connect`):
        HostError: a hop or the host unreachable, a host key unknown or changed (naming
            the bastion when it is one), authentication refused, sudo refused.
    """

    def __init__(self, spec: ConnectionSpec):
        self.spec = spec
        self.host = spec.host
        self.transfer = spec.transfer
        self._clients: list[paramiko.SSHClient] = []
        self._watchdog: Watchdog | None = None
        self._sudo_password = False
        self._reconnecting = threading.Lock()
        self._reconnecting_thread: int | None = None
        self.connect_seconds = 0.0
        self.reconnects = 0
        self.round_trips = 0
        self.command_log: list[str] = []
        self._count_lock = threading.Lock()

    # -- connection ------------------------------------------------------------------

    def connect(self) -> "SSHTransport":
        """Open the connection through every hop, start the watchdog, probe sudo
        (idempotent). See the class docstring for errors."""
        if self._clients and self._transport.is_active():
            return self
        self.close()
        started = time.monotonic()
        warn_once(self.spec)
        self._clients = open_chain(self.spec, _transport_factory)
        self._watchdog = Watchdog(self._transport, self.spec.dead_after, self._drop)
        self._watchdog.start()
        try:
            if self.spec.become is not None:
                self._sudo_password = sudo.probe(self._probe_run, self.host, self.spec.user, self.spec.become)
        except BaseException:
            self.close()
            raise
        self.connect_seconds = time.monotonic() - started
        return self

    @property
    def _transport(self) -> paramiko.Transport:
        if not self._clients:
            raise HostError(self.host, "not connected")
        t = self._clients[-1].get_transport()
        if t is None:
            raise HostError(self.host, "SSH connection lost")
        return t

    def _drop(self) -> None:
        """Close every hop's connection (the watchdog found the peer dead)."""
        close_chain(self._clients)

    @property
    def alive(self) -> bool:
        """The connection is open and the peer was not declared dead (a caller that keeps
        a transport across an SSH loss opens a new one when False)."""
        return bool(self._clients) and not (self._watchdog is not None and self._watchdog.dead) and \
            self._clients[-1].get_transport() is not None and self._transport.is_active()

    def cipher(self) -> str:
        """The negotiated outbound cipher (for benchmarks and debugging)."""
        return self._transport.local_cipher

    def close(self) -> None:
        """Close the connection and every hop (idempotent)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        with sending():
            close_chain(self._clients)
        self._clients = []

    # -- commands --------------------------------------------------------------------

    def _command(self, argv: Sequence[str]) -> tuple[str, bytes]:
        """The command line to execute for ``argv`` and the stdin bytes sudo reads first."""
        become = self.spec.become
        if become is None:
            return join(argv), b""
        return (join(sudo.wrap(argv, become, self._sudo_password)),
                sudo.stdin_prefix(become) if self._sudo_password else b"")

    def _check(self, what: str, deadline: _Deadline, timeout: float) -> None:
        """Raise HostError when the host is dead, the connection lost or the deadline past."""
        if self._watchdog is not None and self._watchdog.dead:
            raise HostError(self.host, self._watchdog.dead)
        if not self._clients or not self._transport.is_active():
            raise HostError(self.host, "SSH connection lost")
        if deadline.passed():
            raise HostError(self.host, f"'{what}' did not finish within {timeout:g} s "
                                       f"(ferry_command_timeout or the command's own timeout)")

    def _reconnect(self) -> None:
        """Open the connection again after it died with no command running (see the
        module docstring); once per death, whichever thread gets here first.

        Raises:
            HostError: the watchdog had declared the host dead (its reason), or the new
                connection failed (``SSH connection lost; reconnecting failed: ...``).
        """
        if self._watchdog is not None and self._watchdog.dead:
            raise HostError(self.host, self._watchdog.dead)
        if self._reconnecting_thread == threading.get_ident():
            # the new connection died already (during its sudo probe): no second try
            raise HostError(self.host, "SSH connection lost; reconnecting failed: the new connection died too")
        with self._reconnecting:
            if self.alive:
                return          # another thread reconnected meanwhile
            self._reconnecting_thread = threading.get_ident()
            try:
                self.connect()
            except HostError as exc:
                reason = str(exc).removeprefix(f"{self.host}: ")
                raise HostError(self.host, f"SSH connection lost; reconnecting failed: {reason}") from None
            finally:
                self._reconnecting_thread = None
            self.reconnects += 1

    def _count(self, line: str) -> None:
        """One more remote command (see ``round_trips``)."""
        with self._count_lock:
            self.round_trips += 1
            self.command_log.append(line[:120])

    def _open(self, line: str) -> paramiko.Channel:
        """A channel executing ``line``. A connection found dead before the command was
        sent is opened again first (:meth:`_reconnect`)."""
        self._count(line)
        if not self.alive:
            self._reconnect()
        try:
            with sending():
                chan = self._transport.open_session(timeout=self.spec.connect_timeout)
        except paramiko.ChannelException as exc:      # the server said no (MaxSessions...)
            raise HostError(self.host, f"SSH channel refused: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if self._watchdog is not None and self._watchdog.dead:
                raise HostError(self.host, self._watchdog.dead) from None
            # the connection may have died under the request, paramiko's reader not
            # knowing yet: no channel was opened, so nothing ran
            noticed = time.monotonic() + DEATH_NOTICED
            while self.alive and time.monotonic() < noticed:
                time.sleep(0.05)
            if self.alive:
                raise HostError(self.host, f"SSH channel refused: {exc}") from None
            self._reconnect()
            try:
                with sending():
                    chan = self._transport.open_session(timeout=self.spec.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as again:
                raise HostError(self.host, f"SSH channel refused: {again}") from None
        try:
            with sending():
                chan.settimeout(POLL)
                chan.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError):
            if self._watchdog is not None and self._watchdog.dead:
                raise HostError(self.host, self._watchdog.dead) from None
            # the command may have started: it is not sent again
            raise HostError(self.host, "SSH connection lost") from None
        return chan

    def _exchange(self, argv: Sequence[str], blocks: Iterable[bytes], timeout: float | None,
                  raw: bool = False, sliding: bool = False) -> Result:
        """Run ``argv``, feed ``blocks`` to its stdin, collect stdout and stderr
        concurrently, wait for its exit status, all within the deadline."""
        timeout = timeout or self.spec.command_timeout
        deadline = _Deadline(timeout, sliding)
        what = join(argv)[:80]
        line, prefix = (join(argv), b"") if raw else self._command(argv)
        chan = self._open(line)
        out, err = _Drain(chan.recv, "stdout"), _Drain(chan.recv_stderr, "stderr")
        out.start()
        err.start()
        try:
            self._feed(chan, itertools.chain([prefix], blocks), what, deadline, timeout)
            rc = self._exit_status(chan, [out, err], what, deadline, timeout)
        finally:
            with sending():
                chan.close()
        return Result(list(argv), rc, out.data(), err.data())

    def _exit_status(self, chan: paramiko.Channel, drains: list[_Drain], what: str, deadline: _Deadline,
                     timeout: float) -> int:
        """Wait for the drains to reach EOF and for the exit status, checking the deadline
        and the watchdog; a channel closed without a status (the connection died) raises."""
        for drain in drains:
            while not drain.done.wait(POLL):
                self._check(what, deadline, timeout)
        while not chan.status_event.wait(POLL):
            self._check(what, deadline, timeout)
        if chan.exit_status == -1:
            self._check(what, deadline, timeout)
        return chan.exit_status

    def _feed(self, chan: paramiko.Channel, blocks: Iterable[bytes], what: str, deadline: _Deadline,
              timeout: float) -> None:
        """Send ``blocks`` to the channel's stdin, then EOF. A command that exits before
        reading all of it (a held lock, a digest mismatch) ends the sending quietly:
        its exit status says why."""
        try:
            for block in blocks:
                view = memoryview(block)
                while view:
                    try:
                        with sending():
                            sent = chan.send(view)
                    except socket.timeout:
                        self._check(what, deadline, timeout)
                        continue
                    if sent == 0:
                        return
                    view = view[sent:]
                    deadline.moved()
            with sending():
                chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            return

    def _probe_run(self, argv: list[str], data: bytes) -> tuple[int, str]:
        res = self._exchange(argv, [data], self.spec.connect_timeout + 20, raw=True)
        return res.rc, res.err

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Run ``argv`` on the host. See :meth:`ferry.host.transport.Transport.run`;
        ``timeout`` (seconds) defaults to ``ferry_command_timeout``."""
        result = self._exchange(argv, [input] if input else [], timeout)
        answered_by(self.host)
        return check_result(self.host, result) if check else result

    def stream(self, argv: Sequence[str], timeout: float | None = None,
               check: bool = True) -> Generator[bytes, None, Result]:
        """Run ``argv`` and yield its stdout in blocks as they arrive (for downloads too
        big for memory, logs); stderr is drained meanwhile. When it ends, raises
        :class:`HostError` if it exited non-zero and ``check``, or when the deadline
        passed or the host died; the generator's return value is the :class:`Result`
        (exit status and stderr; stdout was yielded)."""
        timeout = timeout or self.spec.command_timeout
        deadline = _Deadline(timeout)
        what = join(argv)[:80]
        line, prefix = self._command(argv)
        chan = self._open(line)
        err = _Drain(chan.recv_stderr, "stderr")
        err.start()
        try:
            self._feed(chan, [prefix], what, deadline, timeout)
            while True:
                try:
                    with sending():        # a window adjust may send
                        block = chan.recv(CHUNK)
                except socket.timeout:
                    self._check(what, deadline, timeout)
                    continue
                if not block:
                    break
                yield block
            rc = self._exit_status(chan, [err], what, deadline, timeout)
        finally:
            with sending():
                chan.close()
        result = Result(list(argv), rc, b"", err.data())
        return check_result(self.host, result) if check else result

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], check: bool = True,
             timeout: float | None = None) -> Result:
        """Stream ``chunks`` into the stdin of ``argv`` on the host.

        Carried by the OpenSSH client or by a paramiko channel (see ``transfer``); both
        take the same route and verify every hop's host key against the same
        known_hosts. ``timeout`` (default ``ferry_command_timeout``) counts from the last
        block sent, and then to the command's end. If the remote command exits early (e.g. a digest mismatch), sending
        stops and its exit status and stderr are returned (or raised, with ``check``).
        """
        if self.transfer == "openssh":
            result = self._send_openssh(argv, chunks, timeout)
        else:
            result = self._exchange(argv, chunks, timeout, sliding=True)
        return check_result(self.host, result, join(argv)[:40] + "...") if check else result

    def _send_openssh(self, argv: Sequence[str], chunks: Iterable[bytes], timeout: float | None) -> Result:
        timeout = timeout or self.spec.command_timeout
        deadline = _Deadline(timeout, sliding=True)
        line, prefix = self._command(argv)
        self._count(line)
        proc = subprocess.Popen(openssh_argv(self.spec, line), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        widen_pipe(proc.stdin.fileno())
        out, err = _Drain(proc.stdout.read1, "ssh-stdout"), _Drain(proc.stderr.read1, "ssh-stderr")
        out.start()
        err.start()
        late = HostError(self.host, f"'{join(argv)[:80]}' did not finish within {timeout:g} s "
                                    f"(ferry_command_timeout or the command's own timeout)")
        try:
            try:
                for block in itertools.chain([prefix], chunks):
                    if deadline.passed():
                        raise late       # never an EOF after part of the data
                    proc.stdin.write(block)
                    deadline.moved()
                proc.stdin.close()
            except BrokenPipeError:
                pass   # the remote command ended early: its status says why
            proc.stdin = None   # closed above; wait() must not flush it
            while True:
                try:
                    proc.wait(timeout=POLL)
                    break
                except subprocess.TimeoutExpired:
                    if deadline.passed():
                        raise late from None
            out.join()
            err.join()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 255:
            raise HostError(self.host, explain_openssh_failure(self.spec, err.data().decode(errors="replace")))
        return Result(list(argv), proc.returncode, out.data(), err.data())


F_SETPIPE_SZ = 1031


def widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Let a pipe hold ``size`` bytes (Linux ``F_SETPIPE_SZ``; default 64 KiB): the
    writer hands ssh 1 MiB per wake-up, which on a busy machine keeps the stream moving.
    Refused (another OS, a lower ``/proc/sys/fs/pipe-max-size``): nothing changes."""
    try:
        import fcntl
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except (OSError, ImportError):
        pass


def has_openssh() -> bool:
    """An OpenSSH client (``ssh``) is installed on the controller."""
    return shutil.which("ssh") is not None


_ASKED: dict[str, str] = {}


def set_become_password(password: str | None) -> None:
    """The password typed at ``--ask-become-pass``: used for every host with
    ``ansible_become`` and no ``ansible_become_password`` of its own (as Ansible's ``-K``)."""
    if password is None:
        _ASKED.pop("password", None)
    else:
        _ASKED["password"] = password


def connection_spec(host: Any, inventory: Any, timeout: float | None = None) -> ConnectionSpec:
    """Validate an inventory host's connection (no connection is made).

    Args:
        host: :class:`ferry.controller.inventory.Host` (its ``name`` and ``vars``).
        inventory: its inventory (relative paths resolve against ``inventory.base_dir``,
            else the directory of ``inventory.path``).
        timeout: overrides the connect timeout (seconds).

    Raises:
        FerryError: one line naming the host, the variable and the rule.
    """
    base = getattr(inventory, "base_dir", None) or Path(getattr(inventory, "path", ".")).parent
    spec = ConnectionSpec.from_vars(host.name, dict(host.vars), Path(base), _ASKED.get("password"),
                                    has_openssh())
    if timeout is not None:
        from dataclasses import replace
        spec = replace(spec, connect_timeout=float(timeout))
    return spec


def connection_specs(hosts: Iterable[Any], inventory: Any) -> dict[str, ConnectionSpec]:
    """:func:`connection_spec` of every host, all validated before any is contacted."""
    return {h.name: connection_spec(h, inventory) for h in hosts}


def connect(spec: ConnectionSpec) -> SSHTransport:
    """Open an :class:`SSHTransport` for ``spec`` (see :meth:`SSHTransport.connect`)."""
    return SSHTransport(spec).connect()


def connect_host(host: Any, inventory: Any, timeout: float | None = None) -> SSHTransport:
    """Validate and open an inventory host's connection (:func:`connection_spec`, then
    :func:`connect`)."""
    return connect(connection_spec(host, inventory, timeout))
