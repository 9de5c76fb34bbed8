"""The SSH boundary's pure parts: the connection spec (validation, ssh_config and
ssh-argument precedence, hops), the OpenSSH command for the same route, sudo wrapping
and the sudo probe's verdicts, and the channel pump's early-exit handling."""

import shlex
import threading
from pathlib import Path

import pytest

from ferry.errors import FerryError, HostError
from ferry.host.transport.ssh import ConnectionSpec, SSHTransport, openssh_argv
from ferry.host.transport.ssh import become as sudo
from ferry.host.transport.ssh.hops import explain_openssh_failure, proxy_chain
from ferry.host.transport.ssh.spec import Become


@pytest.fixture
def base(tmp_path):
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id_ed25519").write_text("key")
    (tmp_path / "bastion_key").write_text("key")
    return tmp_path


def spec(base, **variables):
    v = {"ferry_known_hosts": "known_hosts", "ansible_ssh_private_key_file": "id_ed25519", **variables}
    return ConnectionSpec.from_vars("web-1", v, base)


@pytest.mark.parametrize("variables, message", [
    ({"ansible_port": "abc"}, "web-1: ansible_port='abc': must be a port number, an integer from 1 to 65535"),
    ({"ansible_port": 0}, "web-1: ansible_port=0: must be a port number"),
    ({"ansible_ssh_port": 70000}, "web-1: ansible_ssh_port=70000: must be a port number"),
    ({"ferry_connect_timeout": "soon"}, "web-1: ferry_connect_timeout='soon': must be a number of seconds > 0"),
    ({"ferry_connect_timeout": 0}, "web-1: ferry_connect_timeout=0: must be a number of seconds > 0"),
    ({"ferry_ssh_dead_after": -1}, "web-1: ferry_ssh_dead_after=-1: must be a number of seconds > 0"),
    ({"ferry_command_timeout": "x"}, "web-1: ferry_command_timeout='x': must be a number of seconds > 0"),
    ({"ansible_become_method": "su"}, "web-1: ansible_become_method='su': only 'sudo' is supported"),
    ({"ansible_become": "perhaps"}, "web-1: ansible_become='perhaps': must be true or false"),
    ({"ansible_become_password": ["x"]}, "web-1: ansible_become_password=(hidden): must be a string"),
    ({"ansible_host": "-oProxyCommand=touch /tmp/x"}, "web-1: ansible_host='-oProxyCommand=touch /tmp/x': must be"),
    ({"ansible_user": "root; rm -rf /"}, "web-1: ansible_user='root; rm -rf /': must be a user name"),
    ({"ferry_transfer": "rsync"}, "web-1: ferry_transfer='rsync': must be auto, openssh or paramiko"),
    ({"ansible_connection": "winrm"}, "web-1: ansible_connection='winrm': must be ssh"),
    ({"ferry_known_hosts": "missing"}, "web-1: known_hosts file"),
    ({"ansible_ssh_private_key_file": "nokey"}, "web-1: ansible_ssh_private_key_file"),
    ({"ansible_ssh_common_args": "-o StrictHostKeyChecking=no"}, "StrictHostKeyChecking=no refused"),
    ({"ansible_ssh_common_args": "-o 'ProxyJump=a"}, "web-1: ansible_ssh_common_args: No closing quotation"),
    ({"ansible_ssh_extra_args": "bastion"}, "web-1: ansible_ssh_extra_args: unexpected word 'bastion'"),
    ({"ansible_ssh_common_args": "-J"}, "option -J needs a value"),
    ({"ansible_ssh_common_args": "-o Port=http"}, "'http' for ansible_port (from ansible_ssh_*_args or ssh config)"),
    ({"ansible_ssh_common_args": "-J 'a b@c'"}, "ProxyJump 'a b@c'"),
])
def test_bad_connection_variables_are_one_line_naming_host_variable_and_rule(base, variables, message):
    with pytest.raises(FerryError) as err:
        spec(base, **variables)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_numbers_and_booleans_as_ansible_writes_them_are_converted(base):
    s = spec(base, ansible_port="2222", ferry_connect_timeout="2.5", ansible_user="deploy", ansible_become="yes",
             ansible_become_password=123456, ferry_ssh_dead_after=5)
    assert (s.port, s.connect_timeout, s.dead_after, s.user) == (2222, 2.5, 5.0, "deploy")
    assert s.become.user == "root" and s.become.password.get_secret_value() == "123456"
    assert "123456" not in repr(s)     # secrets never in a repr, a log or a message
    assert spec(base, ansible_user="root", ansible_become=True).become is None   # root becoming root: no sudo


def test_password_login_sends_bulk_data_over_paramiko(base):
    s = ConnectionSpec.from_vars("h", {"ferry_known_hosts": "known_hosts", "ansible_password": "pw"}, base)
    assert s.transfer == "paramiko" and s.password.get_secret_value() == "pw"
    with pytest.raises(FerryError, match="ferry_transfer=openssh cannot log in with ansible_password"):
        ConnectionSpec.from_vars("h", {"ferry_known_hosts": "known_hosts", "ansible_password": "pw",
                                       "ferry_transfer": "openssh"}, base)


def test_ssh_config_is_honoured_below_inventory_variables(base):
    (base / "ssh_config").write_text(
        "Host web-alias\n  HostName 10.0.0.5\n  User admin\n  Port 2200\n  IdentityFile %d/bastion_key\n"
        "  ConnectTimeout 4\n  ServerAliveInterval 5\n  ServerAliveCountMax 2\n"
        "Host *\n  User nobody\n".replace("%d", str(base)))
    v = {"ferry_known_hosts": "known_hosts", "ansible_host": "web-alias", "ansible_ssh_common_args": "-F ssh_config"}
    s = ConnectionSpec.from_vars("web-1", v, base)
    # ssh_config over Ferry's defaults (Ferry used to force root and 22 here)
    assert (s.address, s.user, s.port, s.key_files) == ("10.0.0.5", "admin", 2200, (base / "bastion_key",))
    assert (s.connect_timeout, s.dead_after) == (4.0, 10.0)
    # inventory variables over ssh_config
    s = ConnectionSpec.from_vars("web-1", {**v, "ansible_user": "deploy", "ansible_port": 22,
                                           "ansible_ssh_private_key_file": "id_ed25519",
                                           "ferry_connect_timeout": 9, "ferry_ssh_dead_after": 30}, base)
    assert (s.address, s.user, s.port, s.key_files) == ("10.0.0.5", "deploy", 22, (base / "id_ed25519",))
    assert (s.connect_timeout, s.dead_after, s.use_agent) == (9.0, 30.0, False)
    # the inventory name is looked up when there is no ansible_host
    s = ConnectionSpec.from_vars("web-alias", {"ferry_known_hosts": "known_hosts",
                                               "ansible_ssh_common_args": "-F ssh_config"}, base)
    assert (s.address, s.port) == ("10.0.0.5", 2200)


def test_ssh_args_beat_ssh_config_and_first_value_wins(base):
    (base / "ssh_config").write_text("Host *\n  User cfguser\n  Port 2200\n  ProxyJump cfgjump\n")
    s = spec(base, ansible_ssh_common_args="-F ssh_config -o User=argsuser -l second -p 2300",
             ansible_ssh_extra_args="-o Port=2400 -o ProxyJump=none")
    assert (s.user, s.port, s.jumps, s.proxy_command) == ("argsuser", 2300, (), None)


def test_proxyjump_hops_from_args_and_ssh_config(base):
    (base / "ssh_config").write_text(
        f"Host gw\n  HostName 10.1.0.1\n  User jump\n  Port 2022\n  IdentityFile {base}/bastion_key\n"
        "  ProxyJump outer.example:22\n")
    s = spec(base, ansible_host="10.2.0.7",
             ansible_ssh_common_args="-F ssh_config -o ProxyJump=gw,admin@[fd00::1]:2222")
    assert [(h.address, h.port, h.user) for h in s.jumps] == [
        ("outer.example", 22, s.jumps[0].user), ("10.1.0.1", 2022, "jump"), ("fd00::1", 2222, "admin")]
    assert s.jumps[1].key_files == (base / "bastion_key",)     # the hop's own IdentityFile
    assert s.jumps[2].key_files == (base / "id_ed25519",)      # else the target's key
    assert s.jumps[1].label == "bastion 10.1.0.1:2022"
    s = spec(base, ansible_ssh_common_args="-J jump@10.1.0.1")
    assert [(h.address, h.user) for h in s.jumps] == [("10.1.0.1", "jump")]
    # bulk data through bastions: paramiko's tunnel (measured faster than the ssh -W chain)
    assert s.transfer == "paramiko" and spec(base).transfer == "openssh"
    assert spec(base, ansible_ssh_common_args="-J jump@10.1.0.1", ferry_transfer="openssh").transfer == "openssh"


def test_proxycommand_tokens_expanded_and_run_without_shell(base):
    s = spec(base, ansible_host="10.2.0.7", ansible_port=2222, ansible_user="deploy",
             ansible_ssh_common_args="-o ProxyCommand='ssh -W %h:%p -q jump@gw' -o ControlMaster=auto")
    assert s.proxy_command == "ssh -W 10.2.0.7:2222 -q jump@gw" and s.jumps == ()
    assert s.warnings == ()      # ControlMaster is harmless: dropped silently
    assert "-C" in spec(base, ansible_ssh_extra_args="-C").warnings[0]


def _options(argv):
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def test_openssh_argv_verifies_host_keys_strictly_with_no_ssh_config(base):
    s = spec(base, ansible_host="10.0.0.5", ansible_port=2222, ansible_user="deploy", ferry_connect_timeout=7,
             ferry_ssh_dead_after=20)
    argv = openssh_argv(s, "sh -c 'cat > /x'")
    opts = _options(argv)
    assert argv[:4] == ["ssh", "-T", "-p", "2222"] and argv[argv.index("-l") + 1] == "deploy"
    assert argv[argv.index("-F") + 1] == "/dev/null"     # no ssh_config can change the route
    assert {"StrictHostKeyChecking=yes", f"UserKnownHostsFile={base}/known_hosts", "GlobalKnownHostsFile=/dev/null",
            "BatchMode=yes", "IdentitiesOnly=yes", "ConnectTimeout=7", "ServerAliveInterval=5",
            "ServerAliveCountMax=4"} <= set(opts)
    assert not any(o.startswith("ProxyCommand") for o in opts)
    assert argv[-3:] == ["--", "10.0.0.5", "sh -c 'cat > /x'"]   # remote command: one argument


def test_openssh_route_verifies_every_hop_with_the_same_known_hosts(base):
    s = spec(base, ansible_host="10.2.0.7", ansible_ssh_common_args="-J jump@10.1.0.1,admin@10.1.5.5:2022")
    proxy = [o for o in _options(openssh_argv(s, "true")) if o.startswith("ProxyCommand=")][0]
    outer = shlex.split(proxy[len("ProxyCommand="):].replace("%%", "%"))
    # the last hop forwards to the target, itself reached through the first hop
    assert outer[-4:] == ["-W", "10.2.0.7:22", "--", "10.1.5.5"] and outer[outer.index("-l") + 1] == "admin"
    assert {"StrictHostKeyChecking=yes", f"UserKnownHostsFile={base}/known_hosts", "BatchMode=yes"} <= set(
        _options(outer))
    inner = shlex.split([o for o in _options(outer) if o.startswith("ProxyCommand=")][0][len("ProxyCommand="):]
                        .replace("%%", "%"))
    assert inner[-4:] == ["-W", "10.1.5.5:2022", "--", "10.1.0.1"] and inner[inner.index("-l") + 1] == "jump"
    assert {"StrictHostKeyChecking=yes", f"UserKnownHostsFile={base}/known_hosts", "-F"} <= set(
        _options(inner)) | {"-F"}
    assert proxy_chain(spec(base)) is None


def test_a_percent_in_a_path_survives_openssh_token_expansion(base):
    odd = base / "a%hb"
    odd.mkdir()
    (odd / "kh").write_text("")
    s = spec(base, ferry_known_hosts=str(odd / "kh"), ansible_ssh_common_args="-J 10.1.0.1")
    argv = openssh_argv(s, "true")
    assert f"UserKnownHostsFile={base}/a%%hb/kh" in _options(argv)
    assert "a%%%%hb" in [o for o in _options(argv) if o.startswith("ProxyCommand=")][0]   # two expansions


def test_openssh_refusals_name_the_hop(base):
    s = spec(base, ansible_host="10.2.0.7", ansible_ssh_common_args="-J jump@10.1.0.1")
    missing = ("No ED25519 host key is known for 10.1.0.1 and you have requested strict checking.\r\n"
               "Host key verification failed.\r\nConnection closed by UNKNOWN port 65535\r\n")
    assert explain_openssh_failure(s, missing).startswith("bastion 10.1.0.1: host key of 10.1.0.1 not in known_hosts")
    changed = "Host key for 10.1.0.1 has changed and you have requested strict checking.\nHost key verification failed.\n"
    assert explain_openssh_failure(s, changed).startswith("bastion 10.1.0.1: host key of 10.1.0.1 differs")
    target = "No ED25519 host key is known for 10.2.0.7 and you have requested strict checking.\n"
    assert explain_openssh_failure(s, target).startswith("host key of 10.2.0.7 not in known_hosts")
    assert explain_openssh_failure(s, "Timeout, server 10.2.0.7 not responding.\n") == \
        "no answer for 60 s (ferry_ssh_dead_after)"


def test_sudo_wrapping_is_an_argument_list_and_the_password_only_on_stdin():
    b = Become("root", None)
    assert sudo.wrap(["sh", "-c", "echo 'a b'"], b, False) == ["sudo", "-n", "-u", "root", "--", "sh", "-c", "echo 'a b'"]
    from pydantic import SecretStr
    b = Become("app", SecretStr("s3cret word"))
    argv = sudo.wrap(["cat"], b, True)
    assert argv == ["sudo", "-S", "-p", "", "-k", "-u", "app", "--", "cat"] and "s3cret word" not in " ".join(argv)
    assert sudo.stdin_prefix(b) == b"s3cret word\n"


def _sudo_host(nopasswd=False, password="right", sudoers=True):
    def run(argv, data):
        if argv[:2] == ["sudo", "-n"]:
            return (0, "") if nopasswd and sudoers else (1, "sudo: a password is required\n")
        if not sudoers:
            return 1, "deploy is not in the sudoers file.\n"
        ok = data == password.encode() + b"\n"
        return (0, "") if ok else (1, "Sorry, try again.\nsudo: no password was provided\nsudo: 1 incorrect password attempt\n")
    return run


def test_sudo_probe_tells_each_case_in_one_line():
    from pydantic import SecretStr
    assert sudo.probe(_sudo_host(nopasswd=True), "h", "deploy", Become()) is False
    assert sudo.probe(_sudo_host(), "h", "deploy", Become("root", SecretStr("right"))) is True
    with pytest.raises(HostError, match="h: sudo as root: a password is required for 'deploy'"):
        sudo.probe(_sudo_host(), "h", "deploy", Become())
    with pytest.raises(HostError, match="h: sudo as root: incorrect password for 'deploy'") as err:
        sudo.probe(_sudo_host(), "h", "deploy", Become("root", SecretStr("wrong")))
    assert "wrong" not in str(err.value)
    with pytest.raises(HostError, match="not allowed to"):
        sudo.probe(_sudo_host(sudoers=False), "h", "deploy", Become("root", SecretStr("right")))
    with pytest.raises(HostError, match="sudo is not installed"):
        sudo.probe(lambda argv, data: (127, "sh: 1: sudo: not found\n"), "h", "deploy", Become())


class _EarlyExitChannel:
    """A channel whose command exited without reading its input (a held lock)."""

    def __init__(self):
        self.stderr = [b"held by alice\n"]
        self.status_event = threading.Event()
        self.status_event.set()
        self.exit_status = 75

    def settimeout(self, t): pass
    def send(self, data): raise OSError("Socket is closed")
    def shutdown_write(self): raise OSError("Socket is closed")
    def recv(self, n): return b""
    def recv_stderr(self, n): return self.stderr.pop() if self.stderr else b""
    def close(self): pass


def test_run_reports_status_when_the_command_exits_before_reading_input(base):
    """A remote command that exits without reading stdin (a held lock) must yield its
    exit status, not a socket error, however the race between send and exit goes."""
    t = SSHTransport(spec(base, ferry_transfer="paramiko"))
    t._open = lambda line: _EarlyExitChannel()
    t._check = lambda *a: None
    res = t.run(["sh", "-c", "exit 75"], input=b"{}" * 1000, check=False)
    assert res.rc == 75 and res.err == "held by alice\n"


def test_a_password_with_a_newline_is_refused_without_showing_it(base):
    with pytest.raises(FerryError) as err:
        spec(base, ansible_become=True, ansible_user="deploy", ansible_become_pass="a\nb")
    assert str(err.value) == ("web-1: ansible_become_pass=(hidden): must be one line "
                              "(sudo reads it up to the first newline)")
