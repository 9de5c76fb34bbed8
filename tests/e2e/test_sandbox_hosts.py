"""The sandbox hosts behave like fresh, air-gapped servers reachable over real SSH.

Every check goes over SSH with paramiko, the generated key and strict host key checking
(``RejectPolicy`` + the written ``known_hosts``), except where the point is to look at
the hosts from the outside (docker inspect).

These tests need the hosts fresh (no Docker yet) and change nothing: the module claims
every host ``fresh`` and ``readonly`` (``tests/e2e/conftest.py``), so in the default
order, which runs it first, it costs nothing, and after other modules the hosts are
recreated first.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest
import yaml

from devkit import sandbox as sandbox_mod

pytestmark = [pytest.mark.e2e, pytest.mark.hosts(fresh=True, readonly=True)]


def _client(sb: sandbox_mod.Sandbox, host: sandbox_mod.SandboxHost,
            known_hosts=None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_system_host_keys(str(known_hosts or sb.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.ip, port=22, username="root", key_filename=str(sb.key_file),
                   look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10,
                   auth_timeout=10)
    return client


def run(sb: sandbox_mod.Sandbox, host: sandbox_mod.SandboxHost, command: str,
        timeout: float = 30) -> tuple[int, str, str]:
    """Run ``command`` on ``host`` over SSH; return (exit status, stdout, stderr)."""
    client = _client(sb, host)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode()
        err = stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err
    finally:
        client.close()


def _docker_json(*args: str):
    return json.loads(subprocess.run(["docker", *args], check=True, capture_output=True).stdout)


def test_state_files(sandbox):
    n = len(sandbox.hosts)
    assert n >= 3
    assert [h.name for h in sandbox.hosts] == [f"sandbox-{i}" for i in range(1, n + 1)]
    assert [h.container for h in sandbox.hosts] == [f"{sandbox_mod.CONTAINER_PREFIX}{i}" for i in range(1, n + 1)]
    assert stat.S_IMODE(sandbox.key_file.stat().st_mode) == 0o600
    assert sandbox.key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sandbox.key_file.with_name("id_ed25519.pub").read_text().startswith("ssh-ed25519 ")

    inv = yaml.safe_load(sandbox.inventory.read_text())
    top = inv["all"]
    assert top["vars"]["ansible_user"] == "root"
    assert (sandbox.inventory.parent / top["vars"]["ansible_ssh_private_key_file"]) == sandbox.key_file
    assert (sandbox.inventory.parent / top["vars"]["ferry_known_hosts"]) == sandbox.known_hosts
    prod = top["children"]["prod"]["hosts"]
    staging = top["children"]["staging"]["hosts"]
    assert prod == {"sandbox-1": {"ansible_host": sandbox.hosts[0].ip, "ansible_port": 22}}
    assert staging == {h.name: {"ansible_host": h.ip, "ansible_port": 22} for h in sandbox.hosts[1:]}


def test_root_login_and_hostname(sandbox):
    for host in sandbox.hosts:
        rc, out, err = run(sandbox, host, "id -u && hostname")
        assert rc == 0, err
        assert out.split() == ["0", host.name]


def test_systemd_is_pid1_and_running(sandbox):
    for host in sandbox.hosts:
        rc, out, _ = run(sandbox, host, "cat /proc/1/comm; systemctl is-system-running")
        lines = out.split()
        assert lines[0] == "systemd"
        assert lines[1] in ("running", "degraded"), out


def test_fresh_host_has_no_docker(sandbox):
    for host in sandbox.hosts:
        rc, _, _ = run(sandbox, host, "command -v docker")
        assert rc != 0, f"{host.name}: docker is installed"
        rc, _, _ = run(sandbox, host, "test -e /usr/bin/dockerd")
        assert rc != 0, f"{host.name}: /usr/bin/dockerd exists"
        rc, out, _ = run(sandbox, host, "ls -A /var/lib/docker")
        assert rc == 0 and out.strip() == "", f"{host.name}: /var/lib/docker not empty: {out!r}"
        # ... and it is the host's own named volume (so a Docker engine can use overlay2).
        mounts = _docker_json("container", "inspect", host.container)[0]["Mounts"]
        assert {"Type": "volume", "Name": f"{host.container}-docker", "Destination": "/var/lib/docker"}.items() \
            <= next(m for m in mounts if m["Destination"] == "/var/lib/docker").items()


def test_hosts_cannot_reach_outside(sandbox):
    net = _docker_json("network", "inspect", sandbox_mod.NETWORK)[0]
    assert net["Internal"] is True
    ipam = net["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"]).network_address + 1)

    # An outside address, resolved on the controller so the host's lack of DNS is not
    # what makes the check pass; fall back to a well-known literal.
    try:
        outside_ip = socket.getaddrinfo("deb.debian.org", 80, socket.AF_INET)[0][4][0]
    except OSError:
        outside_ip = "151.101.2.132"
    # Both probes run in parallel on every host (each times out after 5 s).
    probe = ("ip -4 route show default; "
             f"(curl -sS -m 5 -o /dev/null http://{outside_ip}/; echo by-ip=$?) & "
             "(curl -sS -m 5 -o /dev/null http://deb.debian.org/; echo by-name=$?) & wait")
    with ThreadPoolExecutor(len(sandbox.hosts)) as pool:
        results = list(pool.map(lambda h: run(sandbox, h, probe), sandbox.hosts))
    for host, (rc, out, err) in zip(sandbox.hosts, results):
        lines = out.splitlines()
        routes = [line for line in lines if line.startswith("default")]
        # No default route, or one into the internal bridge (which forwards nowhere).
        assert all(f"via {gateway} " in line + " " for line in routes), out
        codes = dict(line.split("=") for line in lines if line.startswith("by-"))
        assert set(codes) == {"by-ip", "by-name"}, out + err
        assert codes["by-ip"] != "0", f"{host.name} reached {outside_ip}"
        assert codes["by-name"] != "0", f"{host.name} reached deb.debian.org"


def test_each_host_has_its_own_host_keys(sandbox):
    by_ip: dict[str, dict[str, str]] = {}
    for line in sandbox.known_hosts.read_text().splitlines():
        ip, kind, key = line.split()
        by_ip.setdefault(ip, {})[kind] = key
    assert set(by_ip) == {h.ip for h in sandbox.hosts}
    for kind in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        keys = [by_ip[h.ip][kind] for h in sandbox.hosts]
        assert len(set(keys)) == len(keys), f"{kind} host keys are shared between hosts"
    # The key the server actually presents is the one recorded for it.
    for host in sandbox.hosts:
        client = _client(sandbox, host)
        try:
            presented = client.get_transport().get_remote_server_key()
            assert by_ip[host.ip][presented.get_name()] == presented.get_base64()
        finally:
            client.close()


def test_wrong_known_hosts_entry_is_rejected(sandbox, tmp_path):
    first, second = sandbox.hosts[0], sandbox.hosts[1]
    second_key = next(line.split()[2] for line in sandbox.known_hosts.read_text().splitlines()
                      if line.startswith(second.ip + " ssh-ed25519 "))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.ip} ssh-ed25519 {second_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _client(sandbox, first, known_hosts=wrong)
    # Unknown host: refused too (no trust on first use).
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _client(sandbox, first, known_hosts=empty)


def test_up_again_reuses_hosts(sandbox):
    def ids():
        return {h.container: _docker_json("container", "inspect", h.container)[0]["Id"]
                for h in sandbox.hosts}

    before = ids()
    again = sandbox_mod.up(count=len(sandbox.hosts), state_dir=sandbox.state_dir)
    assert [(h.name, h.ip, h.container) for h in again.hosts] == \
        [(h.name, h.ip, h.container) for h in sandbox.hosts]
    assert ids() == before
    rc, out, _ = run(again, again.hosts[-1], "id -u")
    assert (rc, out.strip()) == (0, "0")

    st = sandbox_mod.status(sandbox.state_dir)
    assert st is not None and [h.ip for h in st.hosts] == [h.ip for h in sandbox.hosts]
