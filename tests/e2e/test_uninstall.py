"""End to end: ``uninstall`` takes Ferry's files off a host (sandbox-3, claimed clean) and
keeps Docker and the stack's data; a later deploy finds the data again; the purges
(``--purge-data --purge-docker --yes``) leave nothing. Through the real command line.

The module's name sorts it last in the default order: the host it leaves without
Docker is the last one any module claims.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stack_e2e import STACKS, Hosts, bundle, deploy_stack, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-3")]
HOST = "sandbox-3"
ROOT = "/opt/ferry/stacks/llm-chat"
FERRY_FILES = "find /opt/ferry /etc/cron.d /var/log/ferry /var/backups/ferry 2>/dev/null | sort"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def v1(tmp_path_factory) -> Path:
    return bundle(STACKS / "llm-chat", tmp_path_factory.mktemp("dist-uninstall"))


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def running(sandbox, hosts, v1) -> dict:
    """llm-chat deployed, a conversation stored, a backup taken and a backup scheduled."""
    deploy_stack(sandbox.inventory, HOST, "llm-chat", v1).assert_green()
    req = urllib.request.Request(f"http://{hosts.ip(HOST)}/api/conversations", method="POST",
                                 data=json.dumps({"title": "kept across uninstall"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
    ok(cli(sandbox, "backup"))
    ok(cli(sandbox, "schedule-backup", "--cron", "0 3 * * *"))
    return {"secret_key": json.loads(hosts.sh(HOST, f"cat {ROOT}/secrets.json"))["SECRET_KEY"]}


def cli(sandbox, task: str, *args: str) -> subprocess.CompletedProcess:
    return inv_cli(task, "--host", HOST, "-i", str(sandbox.inventory), *args)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    for n in needles:
        assert n in line, line


def state(hosts) -> tuple:
    return hosts.sh(HOST, FERRY_FILES), hosts.containers(HOST, "llm-chat")


def conversations(hosts) -> list[str]:
    with urllib.request.urlopen(f"http://{hosts.ip(HOST)}/api/conversations", timeout=10) as resp:
        return [c["title"] for c in json.loads(resp.read())]


def test_uninstall_refuses_while_the_stack_runs_and_changes_nothing(sandbox, hosts, running, audit_dir):
    before = state(hosts)
    one_line_error(cli(sandbox, "uninstall", "--audit-dir", str(audit_dir)),
                   f"{HOST}: stacks still run: llm-chat (3 containers running)", "--force", "nothing was changed")
    one_line_error(cli(sandbox, "uninstall", "--force", "--purge-data", "--audit-dir", str(audit_dir)),
                   "deleting the stacks' data", "confirm with --yes")
    check = ok(cli(sandbox, "uninstall", "--force", "--check", "--audit-dir", str(audit_dir)))
    assert "would bring down llm-chat" in check.stdout and "would remove /opt/ferry/" in check.stdout
    assert "kept: /opt/ferry/stacks/llm-chat/{data,secrets.json}" in check.stdout
    assert state(hosts) == before and not list(audit_dir.iterdir())


def test_uninstall_leaves_no_ferry_files_and_keeps_docker_and_the_data(sandbox, hosts, running, audit_dir):
    images = hosts.sh(HOST, "docker images -q --no-trunc | sort")
    r = ok(cli(sandbox, "uninstall", "--force", "--message", "decommissioned", "--audit-dir", str(audit_dir)))
    assert "bring down llm-chat" in r.stdout
    left = hosts.sh(HOST, FERRY_FILES).split()
    # what stays is the stack's data (and the secrets it was written with) and its backups
    assert [p for p in left if p.startswith("/opt/ferry")] == [
        "/opt/ferry", "/opt/ferry/stacks", "/opt/ferry/stacks/llm-chat", f"{ROOT}/data", f"{ROOT}/data/db",
        f"{ROOT}/data/db/chat.db", f"{ROOT}/secrets.json"], left
    assert not [p for p in left if p.startswith("/etc/cron.d/ferry")]          # the scheduled backup's entry
    assert not [p for p in left if p.startswith("/var/log/ferry")]
    assert any(re.search(r"/var/backups/ferry/llm-chat/llm-chat-\d{8}T\d{6}Z\.ferry-backup\.tar$", p) for p in left)
    # Docker runs on, with its images; the stack's containers are gone and its port is closed
    assert hosts.sh(HOST, "systemctl is-active docker").strip() == "active"
    assert hosts.sh(HOST, "docker images -q --no-trunc | sort") == images
    assert hosts.containers(HOST, "llm-chat") == {}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{hosts.ip(HOST)}/api/health", timeout=5)
    # the audit log went last: its copy on the controller ends with this uninstall, the
    # host's system log says where it went
    [copy] = list(audit_dir.iterdir())
    assert str(copy) in r.stdout and copy.name.startswith(f"{HOST}-audit-")
    last = json.loads(copy.read_text().splitlines()[-1])
    assert (last["task"], last["result"], last["stack"]) == ("uninstall", "ok", "llm-chat")
    assert '"decommissioned"' in last["detail"]
    assert [json.loads(line)["task"] for line in copy.read_text().splitlines()].count("deploy") >= 1
    assert str(copy) in hosts.sh(HOST, "journalctl -t ferry --no-pager -q | tail -1")
    # twice: nothing left to do, and it says so
    again = ok(cli(sandbox, "uninstall", "--audit-dir", str(audit_dir)))
    assert "nothing (no Ferry files)" in again.stdout and len(list(audit_dir.iterdir())) == 1


def test_a_deploy_after_uninstall_finds_the_data_again(sandbox, hosts, running, v1):
    deploy_stack(sandbox.inventory, HOST, "llm-chat", v1).assert_green()
    assert "kept across uninstall" in conversations(hosts)
    assert json.loads(hosts.sh(HOST, f"cat {ROOT}/secrets.json"))["SECRET_KEY"] == running["secret_key"]


def test_purging_data_and_docker_leaves_nothing(sandbox, hosts, running, audit_dir):
    r = ok(cli(sandbox, "uninstall", "--force", "--purge-data", "--purge-docker", "--yes", "--audit-dir",
               str(audit_dir)))
    assert "Docker (packages, images, containers, volumes)" in r.stdout
    assert [p for p in hosts.sh(HOST, FERRY_FILES).split() if not p.startswith("/etc/cron.d")] == []
    assert hosts.sh(HOST, "command -v docker dockerd containerd || echo none").split() == ["none"]
    assert hosts.sh(HOST, "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' docker.io containerd runc "
                          "2>/dev/null | grep '^ii' || echo none").split() == ["none"]
    assert hosts.sh(HOST, "ls -A /var/lib/docker /etc/docker 2>/dev/null | grep -v '^/' | grep . || echo empty"
                    ).split() == ["empty"]
