"""The SSH boundary's pure parts: the OpenSSH command and the transfer choice."""

from pathlib import Path

import pytest

from ferry.errors import FerryError
from ferry.host.transport.ssh import SSHTransport, openssh_argv


def test_openssh_argv_verifies_host_keys_strictly_and_only_from_ferry_known_hosts():
    argv = openssh_argv("10.0.0.5", 2222, "deploy", Path("/k/id"), Path("/inv/known_hosts"), 7,
                        "sh -c 'cat > /x'")
    pairs = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {"StrictHostKeyChecking=yes", "UserKnownHostsFile=/inv/known_hosts",
            "GlobalKnownHostsFile=/dev/null", "BatchMode=yes", "IdentitiesOnly=yes",
            "ConnectTimeout=7"} <= pairs
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
    assert argv[-3:] == ["--", "10.0.0.5", "sh -c 'cat > /x'"]   # remote command: one argument


def test_transfer_setting_is_validated():
    with pytest.raises(FerryError, match="ferry_transfer"):
        SSHTransport("h", "10.0.0.5", transfer="rsync")
    assert SSHTransport("h", "10.0.0.5", transfer="paramiko").transfer == "paramiko"


def test_run_reports_status_when_the_command_exits_before_reading_input():
    """A remote command that exits without reading stdin (a held lock) must yield its
    exit status, not a socket error, however the race between send and exit goes."""
    class EarlyExitChannel:
        stderr = [b"held by alice\n"]

        def settimeout(self, t): pass
        def exec_command(self, c): pass
        def sendall(self, data): raise OSError("Socket is closed")
        def shutdown_write(self): raise OSError("Socket is closed")
        def recv(self, n): return b""
        def recv_stderr(self, n): return self.stderr.pop() if self.stderr else b""
        def recv_exit_status(self): return 75
        def close(self): pass

    t = SSHTransport("h", "10.0.0.5", transfer="paramiko")
    t._open = lambda argv, timeout: EarlyExitChannel()
    res = t.run(["sh", "-c", "exit 75"], input=b"{}" * 1000, check=False)
    assert res.rc == 75 and res.err == "held by alice\n"
