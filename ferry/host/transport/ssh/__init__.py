"""The SSH transport: the only code that talks to hosts.

- :mod:`.spec`: :class:`ConnectionSpec`, one host's connection typed and validated from
  its variables, ssh arguments and ssh_config (Ansible's precedence), before any
  connection;
- :mod:`.hops`: the route (bastions through ProxyJump/ProxyCommand), every hop's host
  key verified; the OpenSSH command for the same route;
- :mod:`.become`: sudo for every command (``ansible_become``);
- :mod:`.transport`: :class:`SSHTransport` (commands, streams, bulk data, keepalive
  watchdog, timeouts).
"""

from .hops import openssh_argv
from .spec import CONNECTION_VARS, Become, ConnectionSpec, Hop
from .transport import (SSHTransport, connect, connect_host, connection_spec, connection_specs,
                        set_become_password)

__all__ = ["CONNECTION_VARS", "Become", "ConnectionSpec", "Hop", "SSHTransport", "connect", "connect_host",
           "connection_spec", "connection_specs", "openssh_argv", "set_become_password"]
