"""End to end: the SSH boundary against hosts that look like the world.

``world-sudo`` (only ``deploy`` logs in, sudo NOPASSWD), ``world-sudopw`` (sudo wants
``deploy``'s password), ``world-bastion`` (``jump`` on port 2222) and ``world-inner``
(reachable only through the bastion), all with real sshd, real sudo and real host keys:

- stdout and stderr read concurrently (10 MB each), input after the sudo password,
  command timeouts, a frozen host reported dead within ``ferry_ssh_dead_after``;
- connection variables refused before any host is contacted;
- ``~/.ssh/config`` (``-F``) with Ansible's precedence, ProxyJump through it;
- every hop's host key verified on both paths (paramiko and the OpenSSH bulk path);
- sudo: the lock says "permission denied" without become, a missing or wrong password
  is one line, ``--ask-become-pass`` reads it without echo.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ferry.controller.inventory import Inventory
from ferry.errors import HostError
from ferry.host import lock
from ferry.host.transport.ssh import connect_host
from stack_e2e import Hosts, inv_cli

pytestmark = pytest.mark.e2e
MB = 1 << 20


@pytest.fixture(scope="module")
def hosts(world):
    return Hosts(world.inventory)


def container(world, name: str) -> str:
    return next(h.container for h in world.world if h.name == name)


def variant(world, tmp_path: Path, picked: dict[str, dict], **all_vars) -> Path:
    """An inventory in ``tmp_path`` with the world's hosts ``picked`` (name -> variables
    changed or added; None removes one), the sandbox's key and known_hosts by absolute
    path, ``all_vars`` added to ``all``. No host_vars: world-sudopw's password is not in it."""
    data = yaml.safe_load(world.inventory.read_text())
    v = data["all"]["vars"]
    for key in ("ansible_ssh_private_key_file", "ferry_known_hosts"):
        v[key] = str(world.inventory.parent / v[key])
    v.update(all_vars)
    every = {n: hv for g in data["all"]["children"].values() for n, hv in (g.get("hosts") or {}).items()}
    chosen = {}
    for name, changes in picked.items():
        hv = {**every[name], **changes}
        chosen[name] = {k: x for k, x in hv.items() if x is not None}
    data["all"]["children"] = {"picked": {"hosts": chosen}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def logins(world, name: str) -> int:
    """How many SSH logins the host's sshd accepted so far (its journal)."""
    out = subprocess.run(["docker", "exec", container(world, name), "journalctl", "-u", "ssh.service",
                          "--no-pager", "-o", "cat"], capture_output=True, text=True, check=True).stdout
    return out.count("Accepted ")


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The CLI failed with exactly one error line and no traceback; return it."""
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# -- transport --------------------------------------------------------------------------

def test_ten_megabytes_on_stderr_and_stdout_at_once_complete(hosts):
    """The old transport read all of stdout before stderr: 3 MB on stderr stalled."""
    t = hosts.t("world-sudo")
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero; done"
    res = t.run(["sh", "-c", script], timeout=120)
    assert res.ok and len(res.stdout) == 10 * MB and len(res.stderr) == 10 * MB
    assert sum(map(len, t.stream(["sh", "-c", script], timeout=120))) == 10 * MB


def test_input_follows_the_sudo_password_on_both_paths_and_runs_as_root(hosts):
    """world-sudopw: the password goes first on stdin, then the command's own input,
    byte for byte, through paramiko (run) and through OpenSSH (send)."""
    t = hosts.t("world-sudopw")
    assert t.transfer == "openssh" and t.spec.become is not None
    data = bytes(range(256)) * 40000          # 10 MB, every byte value, no newline structure
    digest = hashlib.sha256(data).hexdigest()
    assert t.run(["sha256sum"], input=data).out.split()[0] == digest
    assert t.send(["sha256sum"], (data[i:i + MB] for i in range(0, len(data), MB))).out.split()[0] == digest
    assert t.run(["id", "-u"]).out.strip() == "0"
    assert t.run(["id", "-un"]).out.strip() == "root"
    # sudo's own argv, seen from the command it runs: the password is not in it
    argv = t.run(["sh", "-c", "tr '\\0' ' ' < /proc/$PPID/cmdline"]).out
    assert argv.startswith("sudo -S -p  -k -u root -- sh -c ")
    assert t.spec.become.password.get_secret_value() not in argv


def test_a_command_past_its_timeout_is_stopped_and_named(world, tmp_path):
    inv = Inventory(variant(world, tmp_path, {"world-sudo": {"ferry_command_timeout": 2}}))
    t = connect_host(inv.hosts["world-sudo"], inv)
    try:
        started = time.monotonic()
        with pytest.raises(HostError, match=r"world-sudo: 'sleep 30' did not finish within 2 s"):
            t.run(["sleep", "30"])
        assert time.monotonic() - started < 20
        assert t.run(["sleep", "3"], timeout=30).ok        # a caller's own timeout wins
    finally:
        t.close()


def _frozen(world, tmp_path, action, name="world-sudo", frozen=None):
    """Run ``action(t)`` on ``name`` (ferry_ssh_dead_after 4 s) while ``frozen``'s
    container (default: the host's own) is paused (`docker pause`) a second in; return
    (the error, seconds until it came)."""
    inv = Inventory(variant(world, tmp_path, {name: {"ferry_ssh_dead_after": 4}}))
    t = connect_host(inv.hosts[name], inv)
    box = container(world, frozen or name)
    timer = threading.Timer(1.0, lambda: subprocess.run(["docker", "pause", box], check=True))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(HostError) as err:
            action(t)
        return str(err.value), time.monotonic() - started
    finally:
        timer.join()
        subprocess.run(["docker", "unpause", box], check=True)
        t.close()


def test_a_frozen_host_is_reported_dead_within_ferry_ssh_dead_after(world, tmp_path):
    """docker pause freezes sshd while the kernel still acknowledges TCP: only
    keepalives that want an answer notice. Command, bulk upload, and a host behind a
    frozen bastion."""
    error, seconds = _frozen(world, tmp_path, lambda t: t.run(["sleep", "120"]))
    assert error == "world-sudo: no answer for 4 s (ferry_ssh_dead_after)" and seconds < 4 + 1 + 6

    def upload(t):
        t.send(["sh", "-c", "cat > /dev/null"], iter(lambda: b"x" * MB, None))
    error, seconds = _frozen(world, tmp_path, upload)
    assert "no answer for 4 s" in error and seconds < 4 + 1 + 10

    error, seconds = _frozen(world, tmp_path, lambda t: t.run(["sleep", "120"]), "world-inner", "world-bastion")
    assert error == "world-inner: no answer for 4 s (ferry_ssh_dead_after)" and seconds < 4 + 1 + 6


def test_a_connection_lost_between_commands_is_opened_again_and_runs_each_command_once(world, tmp_path):
    """world-sudo's SSH session killed while no command runs (sshd restarted, a firewall
    that forgot the connection): the next command opens it again (sudo probed again) and
    runs once; with sshd gone, one line says the connection was lost and why reconnecting
    failed."""
    inv = Inventory(variant(world, tmp_path, {"world-sudo": {}}))
    t = connect_host(inv.hosts["world-sudo"], inv)
    box = container(world, "world-sudo")
    try:
        t.run(["rm", "-f", "/root/ran"])
        subprocess.run(["docker", "exec", box, "pkill", "-f", "sshd: deploy"], check=True)
        t.run(["sh", "-c", "echo once >> /root/ran"])
        assert t.reconnects == 1
        assert t.run(["cat", "/root/ran"]).out == "once\n"
        assert t.run(["id", "-un"]).out.strip() == "root"
        subprocess.run(["docker", "exec", box, "systemctl", "stop", "ssh.service", "ssh.socket"], check=True)
        subprocess.run(["docker", "exec", box, "pkill", "-f", "sshd: deploy"], check=True)
        with pytest.raises(HostError) as err:
            t.run(["true"])
        assert str(err.value).startswith("world-sudo: SSH connection lost; reconnecting failed: "), err.value
        assert "\n" not in str(err.value)
    finally:
        subprocess.run(["docker", "exec", box, "systemctl", "start", "ssh.service"], check=True)
        t.close()


# -- connection variables and ssh_config ------------------------------------------------

def test_bad_connection_variables_refused_before_any_host_is_contacted(world, tmp_path):
    before = logins(world, "world-sudo")
    for bad, rule in [({"ansible_port": "ssh"}, "ansible_port='ssh': must be a port number, an integer from 1 to 65535"),
                      ({"ferry_connect_timeout": "fast"}, "ferry_connect_timeout='fast': must be a number of seconds > 0"),
                      ({"ansible_become_method": "su"}, "ansible_become_method='su': only 'sudo' is supported"),
                      ({"ansible_become_password": [1]}, "ansible_become_password=(hidden): must be a string")]:
        inv = variant(world, tmp_path, {"world-sudo": {}, "world-sudopw": bad})
        r = inv_cli("lock.status", "--host", "world-sudo,world-sudopw", "-i", str(inv), "--stack", "llm-chat")
        assert one_line_error(r) == f"error: world-sudopw: {rule}"
    assert logins(world, "world-sudo") == before        # the good host was never contacted


def test_ssh_config_is_honoured_with_ansibles_precedence(world, tmp_path):
    """Host aliases, HostName, User, Port, IdentityFile and ProxyJump from an ssh_config
    (``-F``, as ``~/.ssh/config`` would be); inventory variables still win."""
    ips = {h.name: h.ip for h in world.world}
    (tmp_path / "ssh_config").write_text(
        f"Host gate\n  HostName {ips['world-bastion']}\n  User jump\n  Port 2222\n  IdentityFile {world.key_file}\n\n"
        f"Host inner\n  HostName {ips['world-inner']}\n  ProxyJump gate\n\n"
        f"Host box\n  HostName {ips['world-sudo']}\n  User deploy\n  IdentityFile {world.key_file}\n")
    inv_path = tmp_path / "inventory.yml"
    inv_path.write_text(yaml.safe_dump({"all": {
        "vars": {"ferry_known_hosts": str(world.known_hosts), "ansible_ssh_common_args": "-F ssh_config"},
        "hosts": {"inner": {"ansible_user": "root", "ansible_ssh_private_key_file": str(world.key_file)},
                  "box": {}, "box-as-root": {"ansible_host": "box", "ansible_user": "root"}}}}))
    inv = Inventory(inv_path)
    t = connect_host(inv.hosts["inner"], inv)        # through the bastion, on the config's port 2222
    try:
        assert t.run(["hostname"]).out.strip() == "world-inner" and [h.port for h in t.spec.jumps] == [2222]
        assert t.send(["cat"], iter([b"bulk through the bastion"])).out == "bulk through the bastion"
    finally:
        t.close()
    t = connect_host(inv.hosts["box"], inv)          # ssh_config's User (Ferry used to force root)
    try:
        assert t.run(["id", "-un"]).out.strip() == "deploy"
    finally:
        t.close()
    with pytest.raises(HostError, match="SSH authentication as 'root' refused"):
        connect_host(inv.hosts["box-as-root"], inv)   # the inventory's ansible_user wins over User


# -- bastions ---------------------------------------------------------------------------

def _known_hosts_without(world, tmp_path: Path, address: str, instead_from: str | None = None) -> Path:
    """The sandbox's known_hosts without ``address``'s lines (any port), or with another
    host's keys under its name (a changed key)."""
    lines = world.known_hosts.read_text().splitlines()
    mine = [l for l in lines if l.split()[0] in (address, f"[{address}]:2222")]
    kept = [l for l in lines if l not in mine]
    if instead_from is not None:
        kept += [f"{mine[0].split()[0]} {l.split(' ', 1)[1]}" for l in lines if l.split()[0] == instead_from]
    path = tmp_path / ("changed" if instead_from else "missing")
    path.write_text("\n".join(kept) + "\n")
    return path


def test_the_inner_host_is_reachable_only_through_the_bastion(world, tmp_path):
    inv = Inventory(variant(world, tmp_path, {"world-inner": {"ansible_ssh_common_args": None,
                                                              "ferry_connect_timeout": 3}}))
    with pytest.raises(HostError, match="world-inner: "):
        connect_host(inv.hosts["world-inner"], inv)


@pytest.mark.parametrize("case", ["missing", "changed"])
def test_a_bastion_missing_from_known_hosts_or_with_a_changed_key_is_refused_naming_the_hop(world, tmp_path, case):
    bastion = next(h for h in world.world if h.name == "world-bastion")
    other = next(h for h in world.world if h.name == "world-sudo").ip
    known = _known_hosts_without(world, tmp_path, bastion.ip, other if case == "changed" else None)
    inv = variant(world, tmp_path, {"world-inner": {}}, ferry_known_hosts=str(known))
    before = logins(world, "world-inner")
    r = inv_cli("lock.status", "--host", "world-inner", "-i", str(inv), "--stack", "llm-chat")
    line = one_line_error(r)
    what = "not in known_hosts" if case == "missing" else "differs from"
    assert line.startswith(f"error: world-inner: bastion {bastion.ip}:2222: host key of {bastion.ip}:2222 {what}")
    assert logins(world, "world-inner") == before       # never reached the target
    # the OpenSSH bulk path takes the same route and refuses the same hop by itself
    good = Inventory(variant(world, tmp_path, {"world-inner": {"ferry_transfer": "openssh"}}))
    t = connect_host(good.hosts["world-inner"], good)
    try:
        assert t.transfer == "openssh"
        t.spec = replace(t.spec, known_hosts=known)
        with pytest.raises(HostError) as err:
            t.send(["sh", "-c", "cat > /tmp/never"], iter([b"payload"]))
        assert str(err.value).startswith(f"world-inner: bastion {bastion.ip}:2222: host key of ")
        assert ("not in known_hosts" if case == "missing" else "differs from known_hosts") in str(err.value)
        assert t.run(["sh", "-c", "test -e /tmp/never && echo yes || echo no"]).out.strip() == "no"
    finally:
        t.close()


# -- become ------------------------------------------------------------------------------

def test_without_become_the_lock_says_permission_denied_not_locked(world, tmp_path):
    """The old false "stack is locked": mkdir failing for lack of permission read as held."""
    inv = Inventory(variant(world, tmp_path, {"world-sudo": {"ansible_become": False}}))
    t = connect_host(inv.hosts["world-sudo"], inv)
    try:
        assert t.run(["id", "-un"]).out.strip() == "deploy"
        with pytest.raises(HostError) as err:
            lock.acquire(t, "/opt/ferry", "llm-chat", "deploy", "1.0.0")
        assert "Permission denied" in str(err.value) and "locked" not in str(err.value)
        assert lock.read(t, "/opt/ferry", "llm-chat") is None
    finally:
        t.close()


def test_sudo_password_missing_wrong_or_asked_for(world, tmp_path):
    password = world.become_password.read_text().strip()
    inv = variant(world, tmp_path, {"world-sudopw": {}})
    args = ("lock.status", "--host", "world-sudopw", "-i", str(inv), "--stack", "llm-chat")
    assert one_line_error(inv_cli(*args)) == (
        "error: world-sudopw: sudo as root: a password is required for 'deploy' "
        "(set ansible_become_password or pass --ask-become-pass)")
    r = inv_cli(*args, "--ask-become-pass", input="not-" + password + "\n")
    line = one_line_error(r)
    assert line.startswith("error: world-sudopw: sudo as root: incorrect password for 'deploy'")
    assert password not in r.stdout + r.stderr
    r = inv_cli(*args, "--ask-become-pass", input=password + "\n")
    assert r.returncode == 0 and "world-sudopw: llm-chat is not locked" in r.stdout, r.stdout + r.stderr
    assert password not in r.stdout + r.stderr
