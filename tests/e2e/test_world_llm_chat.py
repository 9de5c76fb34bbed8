"""End to end: llm-chat on servers as they are, through the real CLI.

``inv deploy``, ``inv rollback``, ``inv backup``, ``inv restore`` and
``inv schedule-backup`` onto three world hosts at once: logged in as ``deploy`` with
sudo NOPASSWD (world-sudo), as ``deploy`` whose sudo wants a password (world-sudopw,
password in ``host_vars/``), and as root on a host reachable only through a bastion
(world-inner, ``-o ProxyJump=jump@bastion:2222``). llm-chat healthy and verified on each.
A wrong sudo password: one line, nothing changed, no lock left.
"""

from __future__ import annotations

import json

import pytest
import yaml

from ferry.host import backup as b
from stack_e2e import STACKS, Hosts, bundle, inv_cli

pytestmark = pytest.mark.e2e
HOSTS = ["world-sudo", "world-sudopw", "world-inner"]
PATTERN = "world_sudo,world_sudopw,world_inner"


@pytest.fixture(scope="module")
def hosts(world):
    return Hosts(world.inventory)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist-world")
    v1 = bundle(STACKS / "llm-chat", dist)
    return v1, bundle(STACKS / "llm-chat", dist, version="1.0.1", base=v1)


def cli(world, *args: str, **kw):
    return inv_cli(*args, "-i", str(world.inventory), **kw)


def ok(r):
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Traceback" not in r.stderr
    return r


def on_host(hosts, name: str, *argv: str) -> str:
    return hosts.t(name).run(list(argv)).out


def health(hosts, name: str) -> dict:
    """llm-chat's /api/health, asked on the host (world-inner has no route from here)."""
    return json.loads(on_host(hosts, name, "curl", "-sf", "-m", "10", "http://127.0.0.1/api/health"))


def conversations(hosts, name: str) -> set[str]:
    out = on_host(hosts, name, "curl", "-sf", "-m", "10", "http://127.0.0.1/api/conversations")
    return {c["title"] for c in json.loads(out)}


def post(hosts, name: str, title: str) -> None:
    on_host(hosts, name, "curl", "-sf", "-m", "10", "-H", "Content-Type: application/json",
            "-d", json.dumps({"title": title}), "http://127.0.0.1/api/conversations")


def current_version(hosts, name: str) -> str:
    return json.loads(on_host(hosts, name, "cat", "/opt/ferry/stacks/llm-chat/current/release.json"))["version"]


@pytest.fixture(scope="module")
def deployed(world, hosts, bundles):
    before = {n: on_host(hosts, n, "sh", "-c", "command -v docker || echo no-docker") for n in HOSTS}
    return before, cli(world, "deploy", "--host", PATTERN, "--bundle", str(bundles[0]))


def test_deploy_as_a_sudo_user_and_through_the_bastion(world, hosts, deployed):
    before, r = deployed
    assert all("no-docker" in v for v in before.values())          # fresh hosts, no Docker
    ok(r)
    for name in HOSTS:
        assert f"{name}: uploaded " in r.stdout and f"{name}: FAILED" not in r.stdout
        assert health(hosts, name)["status"] == "ok"
        host = hosts.host(name)
        for svc in ("backend", "frontend", "nginx"):
            assert host.docker(f"llm-chat-{svc}-1").inspect()["State"]["Health"]["Status"] == "healthy"
        env = host.file("/opt/ferry/stacks/llm-chat/current/.env")
        assert env.user == "root" and env.mode == 0o600                # written as root, through sudo
    assert hosts.t("world-sudo").spec.user == "deploy" and hosts.t("world-sudopw").spec.user == "deploy"
    assert [h.label for h in hosts.t("world-inner").spec.jumps] == [
        f"bastion {next(h.ip for h in world.world if h.name == 'world-bastion')}:2222"]
    ok(cli(world, "verify", "--host", PATTERN))


def test_a_wrong_sudo_password_is_one_line_changes_nothing_and_leaves_no_lock(world, hosts, bundles, deployed,
                                                                           tmp_path):
    ok(deployed[1])
    data = yaml.safe_load(world.inventory.read_text())
    for key in ("ansible_ssh_private_key_file", "ferry_known_hosts"):
        data["all"]["vars"][key] = str(world.inventory.parent / data["all"]["vars"][key])
    data["all"]["children"]["world_sudopw"]["hosts"]["world-sudopw"]["ansible_become_password"] = "wrong-password"
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(data))
    audit = "cat /opt/ferry/audit.log"
    before = (hosts.state("world-sudopw"), on_host(hosts, "world-sudopw", "sh", "-c", audit))
    r = inv_cli("deploy", "--host", "world_sudo,world_sudopw", "-i", str(inv), "--bundle", str(bundles[1]))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.strip()]
    assert errors == ["error: world-sudopw: sudo as root: incorrect password for 'deploy' "
                      "(ansible_become_password / --ask-become-pass)"]
    assert "wrong-password" not in r.stdout + r.stderr
    assert (hosts.state("world-sudopw"), on_host(hosts, "world-sudopw", "sh", "-c", audit)) == before
    for name in ("world-sudo", "world-sudopw"):      # stopped before any lock, on every host
        assert on_host(hosts, name, "sh", "-c", "ls /opt/ferry/locks/llm-chat 2>&1 || true").strip().endswith(
            "No such file or directory")
        assert current_version(hosts, name) == "1.0.0"
    lock = cli(world, "lock.status", "--host", "world_sudopw")
    assert "world-sudopw: llm-chat is not locked" in ok(lock).stdout


def test_upgrade_and_rollback(world, hosts, bundles, deployed):
    ok(deployed[1])
    ok(cli(world, "deploy", "--host", PATTERN, "--bundle", str(bundles[1])))
    assert {current_version(hosts, n) for n in HOSTS} == {"1.0.1"}
    r = ok(cli(world, "rollback", "--host", PATTERN))
    assert {current_version(hosts, n) for n in HOSTS} == {"1.0.0"}, r.stdout
    for name in HOSTS:
        assert health(hosts, name)["status"] == "ok"
    releases = json.loads(ok(cli(world, "releases", "--host", PATTERN, "--json")).stdout)
    assert {(x["host"], x["version"]) for x in releases if x["current"]} == {(n, "1.0.0") for n in HOSTS}
    ok(cli(world, "verify", "--host", PATTERN))


def test_backup_and_restore_bring_back_the_data(world, hosts, deployed):
    ok(deployed[1])
    for name in HOSTS:
        post(hosts, name, f"kept on {name}")
    kept = {n: conversations(hosts, n) for n in HOSTS}
    r = ok(cli(world, "backup", "--host", PATTERN))
    for name in HOSTS:
        assert f"{name}: backup " in r.stdout and "stored at /var/backups/ferry/llm-chat/" in r.stdout
        post(hosts, name, f"after the backup on {name}")
        assert conversations(hosts, name) != kept[name]
    r = ok(cli(world, "restore", "--host", PATTERN))
    for name in HOSTS:
        assert f"{name}: restored " in r.stdout
        assert conversations(hosts, name) == kept[name]
        assert health(hosts, name)["status"] == "ok"


def test_scheduled_backups_run_as_root_from_cron(world, hosts, deployed):
    ok(deployed[1])
    ok(cli(world, "schedule-backup", "--host", PATTERN, "--cron", "17 3 * * *", "--keep", "3"))
    for name in HOSTS:
        t = hosts.t(name)
        entry = t.run(["cat", b.cron_file("llm-chat")]).out
        line = next(l for l in entry.splitlines() if l.strip() and not l.startswith(("#", "SHELL", "PATH")))
        fields = line.split(None, 6)
        assert fields[:5] == ["17", "3", "*", "*", "*"] and fields[5] == "root"
        assert t.run(["stat", "-c", "%U %a", b.cron_file("llm-chat")]).out.split() == ["root", "644"]
        ids_before = t.run(["sh", "-c", "ls /var/backups/ferry/llm-chat/*.sha256 | wc -l"]).out.strip()
        t.run(["sh", "-c", fields[6]], timeout=600)     # what cron runs, as cron runs it (root, no controller)
        ids_after = t.run(["sh", "-c", "ls /var/backups/ferry/llm-chat/*.sha256 | wc -l"]).out.strip()
        assert int(ids_after) == min(int(ids_before) + 1, 3) or int(ids_after) == 3, (ids_before, ids_after)
    listed = json.loads(ok(cli(world, "backups", "--host", PATTERN, "--json")).stdout)
    assert {x["host"] for x in listed} == set(HOSTS)
    assert all(x["schedule"] and "17 3 * * *" in json.dumps(x["schedule"]) for x in listed)
    ok(cli(world, "unschedule-backup", "--host", PATTERN))
    for name in HOSTS:
        assert hosts.t(name).run(["test", "-e", b.cron_file("llm-chat")], check=False).rc == 1
