"""SSH transport on Fabric/paramiko, with host keys verified against known_hosts.

Fabric's ``Connection`` installs paramiko's auto-add policy (any host key is
accepted). Ferry replaces it with ``RejectPolicy`` and loads the inventory's
known_hosts file, so a host whose key is unknown or differs is refused before any
command runs.

Commands run on paramiko exec channels (one per command, on one SSH connection per
host). Files are streamed into the stdin of a remote command; measured on the sandbox
this is faster than SFTP ``put`` (see ``benchmarks/``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Generator, Iterable, Sequence

import paramiko
from fabric import Connection

from ...errors import FerryError, HostError
from . import Result, check_result, join

CHUNK = 1 << 20
"""Bytes read from a local file per send call (1 MiB)."""

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


class SSHTransport:
    """One SSH connection to one inventory host.

    Args:
        host: inventory name (used in messages).
        address: ``ansible_host`` (IP or DNS name).
        port: ``ansible_port`` (default 22).
        user: ``ansible_user``.
        key_file: ``ansible_ssh_private_key_file`` or None (then agent/default keys).
        known_hosts: known_hosts file the host key must be in (OpenSSH format).
        connect_timeout: seconds for TCP connect and SSH handshake.
        transfer: how :meth:`send` carries bulk data: ``"openssh"`` (the OpenSSH client,
            same key, same known_hosts, ``StrictHostKeyChecking=yes``), ``"paramiko"``
            (an exec channel on this connection), or ``"auto"`` (openssh when an ``ssh``
            binary is installed). Inventory variable ``ferry_transfer``.

    Raises (from :meth:`connect`):
        HostError: unreachable within the timeout, host key unknown or changed,
            authentication refused.
        FerryError: the known_hosts or key file does not exist.
    """

    def __init__(self, host: str, address: str, port: int = 22, user: str = "root",
                 key_file: Path | None = None, known_hosts: Path | None = None,
                 connect_timeout: float = 10.0, transfer: str = "auto"):
        if transfer not in ("auto", "openssh", "paramiko"):
            raise FerryError(f"{host}: ferry_transfer must be auto, openssh or paramiko, not '{transfer}'")
        if transfer == "auto":
            transfer = "openssh" if shutil.which("ssh") else "paramiko"
        self.transfer = transfer
        self.host = host
        self.address = address
        self.port = int(port)
        self.user = user
        self.key_file = key_file
        self.known_hosts = known_hosts or Path("~/.ssh/known_hosts").expanduser()
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None

    # -- connection ------------------------------------------------------------------

    def connect(self) -> "SSHTransport":
        """Open the SSH connection (idempotent). See the class docstring for errors."""
        if self._conn is not None and self._conn.is_connected:
            return self
        if not self.known_hosts.is_file():
            raise FerryError(f"{self.host}: known_hosts file {self.known_hosts} not found "
                             f"(set ferry_known_hosts in the inventory)")
        kwargs: dict = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout,
                        "transport_factory": _transport_factory}
        if self.key_file is not None:
            if not Path(self.key_file).is_file():
                raise FerryError(f"{self.host}: ansible_ssh_private_key_file {self.key_file} not found")
            kwargs.update(key_filename=str(self.key_file), allow_agent=False, look_for_keys=False)
        conn = Connection(self.address, user=self.user, port=self.port,
                          connect_timeout=int(max(1, self.connect_timeout)), connect_kwargs=kwargs)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_host_keys(str(self.known_hosts))
        where = f"{self.address}:{self.port}"
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise HostError(self.host, f"host key of {where} differs from {self.known_hosts}: "
                            f"refusing to connect (possible man-in-the-middle)") from None
        except paramiko.AuthenticationException:
            raise HostError(self.host, f"SSH authentication as '{self.user}' refused by {where}") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(self.host, f"host key of {where} is not in {self.known_hosts}: "
                                f"refusing to connect") from None
            raise HostError(self.host, f"SSH to {where} failed: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise HostError(self.host, f"unreachable: no answer from {where} within "
                            f"{self.connect_timeout:g}s") from None
        except OSError as exc:
            raise HostError(self.host, f"unreachable: {where}: {exc.strerror or exc}") from None
        transport = conn.client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        self._conn = conn
        return self

    @property
    def _transport(self) -> paramiko.Transport:
        self.connect()
        assert self._conn is not None
        t = self._conn.client.get_transport()
        assert t is not None
        return t

    def cipher(self) -> str:
        """The negotiated outbound cipher (for benchmarks and debugging)."""
        return self._transport.local_cipher

    def close(self) -> None:
        """Close the SSH connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- commands --------------------------------------------------------------------

    def _open(self, argv: Sequence[str], timeout: float | None) -> paramiko.Channel:
        try:
            chan = self._transport.open_session()
        except paramiko.SSHException as exc:
            raise HostError(self.host, f"SSH channel failed: {exc}") from None
        chan.settimeout(timeout)
        chan.exec_command(join(argv))
        return chan

    def _finish(self, chan: paramiko.Channel, argv: Sequence[str]) -> Result:
        try:
            out = b"".join(iter(lambda: chan.recv(CHUNK), b""))
            err = b"".join(iter(lambda: chan.recv_stderr(CHUNK), b""))
            rc = chan.recv_exit_status()
        except socket.timeout:
            chan.close()
            raise HostError(self.host, f"'{join(argv)[:80]}' timed out") from None
        chan.close()
        return Result(list(argv), rc, out, err)

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            timeout: float | None = None) -> Result:
        """Run ``argv`` on the host. See :meth:`ferry.host.transport.Transport.run`."""
        chan = self._open(argv, timeout)
        try:
            if input:
                chan.sendall(input)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass   # the command ended before reading its input (e.g. a held lock): its status says why
        result = self._finish(chan, argv)
        return check_result(self.host, result) if check else result

    def stream(self, argv: Sequence[str], timeout: float | None = None,
               check: bool = True) -> Generator[bytes, None, Result]:
        """Run ``argv`` and yield its stdout in blocks as they arrive (for downloads too
        big for memory, logs). When it ends, raises :class:`HostError` if it exited
        non-zero and ``check``; the generator's return value is the :class:`Result`
        (exit status and stderr; stdout was yielded)."""
        chan = self._open(argv, timeout)
        chan.shutdown_write()
        try:
            for block in iter(lambda: chan.recv(CHUNK), b""):
                yield block
            err = b"".join(iter(lambda: chan.recv_stderr(CHUNK), b""))
            rc = chan.recv_exit_status()
        except socket.timeout:
            raise HostError(self.host, f"'{join(argv)[:80]}' timed out") from None
        finally:
            chan.close()
        result = Result(list(argv), rc, b"", err)
        return check_result(self.host, result) if check else result

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], check: bool = True) -> Result:
        """Stream ``chunks`` into the stdin of ``argv`` on the host.

        Carried by the OpenSSH client or by a paramiko channel (see ``transfer``); both
        verify the host key against the same known_hosts. If the remote command exits
        early (e.g. a digest mismatch), sending stops and its exit status and stderr
        are returned (or raised, with ``check``).
        """
        if self.transfer == "openssh":
            result = self._send_openssh(argv, chunks)
        else:
            result = self._send_paramiko(argv, chunks)
        return check_result(self.host, result, join(argv)[:40] + "...") if check else result

    def _send_paramiko(self, argv: Sequence[str], chunks: Iterable[bytes]) -> Result:
        chan = self._open(argv, None)
        try:
            for block in chunks:
                chan.sendall(block)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass   # the remote command ended early: its status says why
        return self._finish(chan, argv)

    def _send_openssh(self, argv: Sequence[str], chunks: Iterable[bytes]) -> Result:
        ssh_argv = openssh_argv(self.address, self.port, self.user, self.key_file, self.known_hosts,
                                self.connect_timeout, join(argv))
        proc = subprocess.Popen(ssh_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        widen_pipe(proc.stdin.fileno())
        try:
            for block in chunks:
                proc.stdin.write(block)
            proc.stdin.close()
        except BrokenPipeError:
            pass   # the remote command ended early: its status says why
        proc.stdin = None   # closed above; communicate() must not flush it
        out, err = proc.communicate()
        if proc.returncode == 255:
            raise HostError(self.host, f"ssh to {self.address}:{self.port} failed: "
                                       f"{err.decode(errors='replace').strip().splitlines()[-1:] or '?'}")
        return Result(list(argv), proc.returncode, out, err)


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


def openssh_argv(address: str, port: int, user: str, key_file: Path | None, known_hosts: Path,
                 connect_timeout: float, remote_command: str) -> list[str]:
    """The OpenSSH client command for one remote command, host key strictly verified.

    ``StrictHostKeyChecking=yes`` with Ferry's known_hosts only (the global file is not
    read), ``BatchMode`` (never prompt), and the inventory's key only. The user's
    ``~/.ssh/config`` still applies to what is not set here (e.g. ProxyJump).
    """
    argv = ["ssh", "-T", "-p", str(port), "-l", user,
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={int(max(1, connect_timeout))}",
            "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"]
    if key_file is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(key_file)]
    return argv + ["--", address, remote_command]


def connect_host(host, inventory, timeout: float | None = None) -> SSHTransport:
    """Build and open an :class:`SSHTransport` from an inventory host's Ansible variables.

    Args:
        host: :class:`ferry.controller.inventory.Host` (its merged ``vars`` are read).
        inventory: :class:`ferry.controller.inventory.Inventory` (relative paths resolve against it).
        timeout: connect timeout in seconds; default ``ferry_connect_timeout`` or 10.
    """
    v = host.vars
    key = v.get("ansible_ssh_private_key_file")
    known = v.get("ferry_known_hosts", "~/.ssh/known_hosts")
    t = SSHTransport(
        host.name,
        address=str(v.get("ansible_host", host.name)),
        port=int(v.get("ansible_port", 22)),
        user=str(v.get("ansible_user", "root")),
        key_file=inventory.resolve_path(str(key)) if key else None,
        known_hosts=inventory.resolve_path(str(known)),
        connect_timeout=float(timeout if timeout is not None else v.get("ferry_connect_timeout", 10)),
        transfer=str(v.get("ferry_transfer", "auto")),
    )
    started = time.monotonic()
    t.connect()
    t.connect_seconds = time.monotonic() - started
    return t
