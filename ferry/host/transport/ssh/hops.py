"""Reaching a host, hop by hop, every host key verified against the same known_hosts.

:func:`open_chain` opens one paramiko client per hop: the first bastion directly (or
through the spec's ProxyCommand), each next hop through a ``direct-tcpip`` channel of
the previous one, the target last. Every client has :class:`paramiko.RejectPolicy` and
the spec's known_hosts only, so an unknown or changed key on ANY hop refuses the
connection, naming the hop.

:func:`openssh_argv` gives the OpenSSH client command for the same route (the bulk
path): ``-F /dev/null`` so no ssh_config can change it, and for bastions an explicit
ProxyCommand ``ssh -W HOST:PORT BASTION`` per hop with ``StrictHostKeyChecking=yes`` and
the same known_hosts (OpenSSH's ``-J`` would not pass these options to the jump).
"""

from __future__ import annotations

import math
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import paramiko

from ....errors import FerryError, HostError
from .spec import ConnectionSpec, Hop

#: Ciphers offered by the OpenSSH bulk path, AES-GCM first (hardware AES, no separate MAC).
OPENSSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"


@dataclass(frozen=True)
class _Node:
    """One SSH server on the route: a bastion or the target."""

    address: str
    port: int
    user: str
    key_files: tuple[Path, ...]
    use_agent: bool
    password: str | None
    hop: Hop | None          # None: the target

    def subject(self) -> str:
        """How messages name it: ``bastion 10.0.0.1: `` for a hop, nothing for the target
        (HostError already names the host)."""
        return f"{self.hop.label}: " if self.hop else ""

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"


def _route(spec: ConnectionSpec) -> list[_Node]:
    nodes = [_Node(h.address, h.port, h.user, h.key_files, not h.key_files, None, h) for h in spec.jumps]
    nodes.append(_Node(spec.address, spec.port, spec.user, spec.key_files, spec.use_agent,
                       spec.password.get_secret_value() if spec.password else None, None))
    return nodes


def _connect(client: paramiko.SSHClient, node: _Node, sock, spec: ConnectionSpec,
             transport_factory: Callable[..., paramiko.Transport]) -> None:
    """Open ``client`` to ``node`` (over ``sock`` when given); HostError naming the node."""
    kh = spec.known_hosts
    what = node.subject()
    try:
        client.connect(node.address, port=node.port, username=node.user, password=node.password,
                       key_filename=[str(k) for k in node.key_files] or None,
                       allow_agent=node.use_agent, look_for_keys=node.use_agent and not node.key_files,
                       timeout=spec.connect_timeout, banner_timeout=spec.connect_timeout,
                       auth_timeout=spec.connect_timeout, channel_timeout=spec.connect_timeout, sock=sock,
                       transport_factory=transport_factory)
    except paramiko.BadHostKeyException:
        raise HostError(spec.host, f"{what}host key of {node.where} differs from {kh}: refusing to connect "
                                   f"(possible man-in-the-middle)") from None
    except paramiko.AuthenticationException:
        raise HostError(spec.host, f"{what}SSH authentication as '{node.user}' refused by {node.where}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostError(spec.host, f"{what}host key of {node.where} not in known_hosts {kh}: "
                                       f"refusing to connect") from None
        raise HostError(spec.host, f"{what}SSH to {node.where} failed: {exc}") from None
    except (socket.timeout, TimeoutError):
        raise HostError(spec.host, f"{what}unreachable: no answer from {node.where} within "
                                   f"{spec.connect_timeout:g}s") from None
    except OSError as exc:
        raise HostError(spec.host, f"{what}unreachable: {node.where}: {exc.strerror or exc}") from None
    except EOFError:
        raise HostError(spec.host, f"{what}{node.where} closed the connection during the handshake") from None


def open_chain(spec: ConnectionSpec, transport_factory: Callable[..., paramiko.Transport]
               ) -> list[paramiko.SSHClient]:
    """Open every hop of ``spec`` and the target; return the clients, target last.

    Raises:
        HostError: a hop or the target unreachable, its host key unknown or changed
            (the message names the bastion), authentication refused, a tunnel refused.
        FerryError: the ProxyCommand cannot be started.
    """
    clients: list[paramiko.SSHClient] = []
    sock = None
    try:
        if spec.proxy_command:
            try:
                sock = paramiko.ProxyCommand(spec.proxy_command)
            except (OSError, paramiko.SSHException) as exc:
                raise FerryError(f"{spec.host}: ProxyCommand {spec.proxy_command!r} cannot start: {exc}") from None
        nodes = _route(spec)
        for i, node in enumerate(nodes):
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.load_host_keys(str(spec.known_hosts))
            clients.append(client)
            _connect(client, node, sock, spec, transport_factory)
            if i + 1 < len(nodes):
                nxt = nodes[i + 1]
                transport = client.get_transport()
                assert transport is not None
                try:
                    sock = transport.open_channel("direct-tcpip", (nxt.address, nxt.port), ("127.0.0.1", 0),
                                                  timeout=spec.connect_timeout)
                except paramiko.ChannelException as exc:
                    raise HostError(spec.host, f"{node.subject()}cannot reach {nxt.where} through it "
                                               f"({exc.text})") from None
                except paramiko.SSHException as exc:
                    raise HostError(spec.host, f"{node.subject()}tunnel to {nxt.where} failed: {exc}") from None
        return clients
    except BaseException:
        close_chain(clients)
        if sock is not None and not clients:
            sock.close()
        raise


def close_chain(clients: Sequence[paramiko.SSHClient]) -> None:
    """Close the clients of :func:`open_chain`, target first."""
    for client in reversed(list(clients)):
        try:
            client.close()
        except Exception:   # closing a dead connection may raise anything; it is closed
            pass


# ---------------------------------------------------------------------------- OpenSSH

def _pct(text: str) -> str:
    """Escape ``%`` for an OpenSSH option that expands %-tokens."""
    return text.replace("%", "%%")


def _quoted(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def _verified(spec: ConnectionSpec, key_files: Sequence[Path]) -> list[str]:
    """Options of every OpenSSH client on the route: no ssh_config, strict host keys from
    the spec's known_hosts only, never a prompt, keepalives, the given keys only."""
    interval = max(1, round(spec.dead_after / 4))
    argv = ["-F", "/dev/null",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={_quoted(_pct(str(spec.known_hosts)))}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "CheckHostIP=no",
            "-o", f"ConnectTimeout={max(1, math.ceil(spec.connect_timeout))}",
            "-o", f"ServerAliveInterval={interval}",
            "-o", f"ServerAliveCountMax={max(1, math.ceil(spec.dead_after / interval))}",
            "-o", f"Ciphers={OPENSSH_CIPHERS}"]
    if key_files:
        argv += ["-o", "IdentitiesOnly=yes"]
        for key in key_files:
            argv += ["-i", _pct(str(key))]
    return argv


def proxy_chain(spec: ConnectionSpec) -> str | None:
    """The ProxyCommand (already %-escaped for OpenSSH) that reaches the target: for each
    bastion ``ssh -W NEXT:PORT BASTION`` with :func:`_verified` options, nested; the
    spec's own ProxyCommand innermost; None for a direct connection."""
    command = _pct(spec.proxy_command) if spec.proxy_command else None
    nodes = list(spec.jumps)
    targets = [(h.address, h.port) for h in nodes[1:]] + [(spec.address, spec.port)]
    for hop, (address, port) in zip(nodes, targets):
        argv = ["ssh", "-T", "-p", str(hop.port), "-l", hop.user, *_verified(spec, hop.key_files)]
        if command:
            argv += ["-o", f"ProxyCommand={command}"]
        argv += ["-W", f"{address}:{port}", "--", hop.address]
        command = _pct(shlex.join(argv))
    return command


def openssh_argv(spec: ConnectionSpec, remote_command: str) -> list[str]:
    """The OpenSSH client command running ``remote_command`` (one word) on the spec's
    host by the same route as the paramiko connection, every hop verified."""
    argv = ["ssh", "-T", "-p", str(spec.port), "-l", spec.user, *_verified(spec, spec.key_files)]
    proxy = proxy_chain(spec)
    if proxy:
        argv += ["-o", f"ProxyCommand={proxy}"]
    return argv + ["--", spec.address, remote_command]


def explain_openssh_failure(spec: ConnectionSpec, stderr: str) -> str:
    """One line for an OpenSSH client that exited 255, naming the bastion when a hop's
    host key was refused (OpenSSH prints the refused host's name)."""
    lines = [l.strip() for l in stderr.replace("\r", "").splitlines() if l.strip()]

    for line in lines:
        m = re.search(r"host key is known for (\S+?)(?: and|$)|Host key for (\S+?) has changed", line)
        if m:
            name = (m.group(1) or m.group(2)).strip("[]")
            address = name.split("]:")[0]
            hop = next((h for h in spec.jumps if h.address == address), None)
            what = "not in known_hosts" if m.group(1) else "differs from known_hosts"
            prefix = f"{hop.label}: " if hop else ""
            return f"{prefix}host key of {name} {what} {spec.known_hosts}: refusing to connect (OpenSSH)"
        if "Timeout, server" in line and "not responding" in line:
            return f"no answer for {spec.dead_after:g} s (ferry_ssh_dead_after)"
    return f"ssh to {spec.address}:{spec.port} failed: {lines[-1] if lines else 'exit status 255'}"
