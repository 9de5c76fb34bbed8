"""End to end: llm-chat on a host without dpkg (nodpkg-1: os-release says Rocky Linux, no
dpkg, no apt), with Docker's static engine from the bundle.

Two engines, both Docker-static-layout tarballs assembled from Debian's binaries
(``devkit.docker_tarball``): bullseye's Docker 20.10.5 (containerd 1.4.13, runc 1.0.0-rc93)
and bookworm's 20.10.24 (containerd 1.6.20, runc 1.1.5). Through the real command line:
``inv bundle --docker-static``, a refusal without a static engine, the first deploy,
a no-op redeploy, the engine upgrade keeping rows, a named volume and the stack, a new
engine that cannot start put back, ``inv rollback``, ``inv backup``/``restore``/
``schedule-backup``, and a host with iptables removed refused in one line.

Runs last (see conftest): it adds the nodpkg host to whatever sandbox runs, keeping the
regular hosts as they are.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from devkit import docker_tarball, sandbox as sandbox_mod
from devkit.images import build_bundle
from ferry.controller.localdocker import docker
from ferry.host import backup as hb
from ferry.roles import role_defaults
from ferry.ui import UI
from stack_e2e import ROOT, Hosts, http, inv_cli

pytestmark = pytest.mark.e2e
HOST = "nodpkg-1"
STATIC = "/usr/local/lib/docker-static"


@pytest.fixture(scope="module")
def sb():
    """The running sandbox's regular hosts as they are, plus a fresh host without dpkg."""
    current = sandbox_mod.status()
    count = len(current.hosts) if current else 1
    sandbox_mod.up(count=count, nodpkg=0)           # removes a nodpkg-1 left by an earlier run
    return sandbox_mod.up(count=count, nodpkg=1)


@pytest.fixture(scope="module")
def hosts(sb):
    return Hosts(sb.inventory)


@pytest.fixture(scope="module")
def tarballs():
    return docker_tarball.assemble("bullseye"), docker_tarball.assemble("bookworm")


def _bundle(dist: Path, version: str, static: Path | None, base: Path | None = None) -> Path:
    if base is not None:                            # reuse the image files, as a rebuild would
        shutil.copytree(base, dist / f"llm-chat-{version}", copy_function=os.link)
    return build_bundle(ROOT / "stacks" / "llm-chat", dist, version, UI(Console(file=io.StringIO())),
                        docker_settings=role_defaults("install-docker-offline"), docker_static=static).path


@pytest.fixture(scope="module")
def bundles(tarballs, tmp_path_factory):
    """v1 (1.0.0, Docker 20.10.5) built by `inv bundle --docker-static`; v2 (1.0.1, Docker
    20.10.24); plain (0.9.0, no static engine)."""
    old, new = tarballs
    dist = tmp_path_factory.mktemp("dist")
    r = inv_cli("bundle", "--stack", "llm-chat", "--version", "1.0.0", "--dist", str(dist),
                "--docker-static", str(old))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "static Docker 20.10.5" in r.stdout
    v1 = dist / "llm-chat-1.0.0"
    return {"v1": v1, "v2": _bundle(dist, "1.0.1", new, v1), "plain": _bundle(dist, "0.9.0", None, v1),
            "out": r.stdout}


def deploy(sb, bundle: Path, *extra: str):
    return inv_cli("deploy", "--host", HOST, "--stack", "llm-chat", "--bundle", str(bundle),
                   "-i", str(sb.inventory), *extra)


def state(hosts) -> str:
    """What a refused deploy must leave as it was: store, current, containers, the engine,
    its units and daemon.json, the audit log."""
    return hosts.state(HOST) + hosts.sh(HOST, f"ls -l {STATIC} 2>/dev/null; sha256sum /etc/docker/daemon.json "
                                              "/etc/systemd/system/*.service 2>/dev/null; "
                                              "wc -l < /opt/ferry/audit.log 2>/dev/null; true")


def engine_version(hosts) -> str:
    return hosts.sh(HOST, "docker version --format '{{.Server.Version}}'").strip()


def api(hosts, path: str, body: dict | None = None):
    status, data = http(f"http://{hosts.ip(HOST)}{path}", json.dumps(body).encode() if body else None,
                        {"Content-Type": "application/json"})
    assert status in (200, 201), (status, data)
    return json.loads(data)


def one_error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stdout + r.stderr
    return lines[0]


def test_the_bundle_records_the_static_engine(bundles, tarballs):
    old, new = tarballs
    for key, tgz, version, containerd in (("v1", old, "20.10.5", "1.4.13~ds1"), ("v2", new, "20.10.24", "1.6.20~ds1")):
        static = json.loads((bundles[key] / "manifest.json").read_text())["docker"]["static"]
        assert static["version"] == version and static["file"] == f"docker/static/docker-{version}.tgz"
        assert static["sha256"] == hashlib.sha256(tgz.read_bytes()).hexdigest() == \
            hashlib.sha256((bundles[key] / static["file"]).read_bytes()).hexdigest()
        assert static["binaries"]["dockerd"] == f"{version}+dfsg1" and static["binaries"]["containerd"] == containerd
        assert static["binaries"]["docker-init"] == "0.19.0" and static["binaries"]["docker-proxy"] is None
    assert "static" not in json.loads((bundles["plain"] / "manifest.json").read_text())["docker"]


def test_no_dpkg_and_no_static_engine_in_the_bundle_is_refused_in_one_line(sb, hosts, bundles):
    assert not hosts.t(HOST).run(["sh", "-c", "command -v dpkg || command -v apt-get"], check=False).ok
    assert "Rocky Linux" in hosts.sh(HOST, "cat /etc/os-release")
    before = state(hosts)
    line = one_error_line(deploy(sb, bundles["plain"]))
    assert line.startswith(f"error: {HOST}: no dpkg on this host, so Docker must come from Docker's static tarball")
    assert "build it with `inv bundle --stack llm-chat --docker-static docker-<version>.tgz`" in line
    assert state(hosts) == before


def test_first_deploy_installs_the_static_engine_and_llm_chat_runs(sb, hosts, bundles):
    r = deploy(sb, bundles["v1"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "install Docker 20.10.5 (static) from docker-20.10.5.tgz" in r.stdout
    assert engine_version(hosts) == "20.10.5+dfsg1"
    dockerd = hosts.sh(HOST, "readlink -f /usr/bin/dockerd").strip()
    assert re.fullmatch(rf"{STATIC}/20\.10\.5-[0-9a-f]{{12}}/dockerd", dockerd)
    assert hosts.sh(HOST, "systemctl is-enabled docker containerd").split() == ["enabled", "enabled"]
    assert hosts.sh(HOST, "head -n 1 /etc/systemd/system/docker.service").startswith("# Managed by Ferry")
    assert hosts.sh(HOST, "docker compose version --short").strip() == "2.40.3"
    assert api(hosts, "/api/health")["status"] == "ok"
    v = inv_cli("verify", "--host", HOST, "-i", str(sb.inventory))
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_second_deploy_changes_nothing(sb, hosts, bundles):
    before = hosts.containers(HOST, "llm-chat")
    r = deploy(sb, bundles["v1"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "Docker 20.10.5 (static) and Compose 2.40.3 already installed and running" in r.stdout
    assert f"{HOST}: uploaded 0 B, loaded 0 images, recreated 0 containers; nothing changed" in r.stdout
    assert hosts.containers(HOST, "llm-chat") == before


def test_the_engine_upgrade_keeps_data_and_the_stack_runs_again(sb, hosts, bundles):
    ids = [api(hosts, "/api/conversations", {"title": f"before the upgrade {i}"})["id"] for i in range(5)]
    hosts.sh(HOST, "docker volume create ferry-e2e-keep >/dev/null && docker run --rm -v ferry-e2e-keep:/d "
                   "llm-chat-backend:1.0.0 sh -c 'echo kept > /d/marker'")
    check = deploy(sb, bundles["v2"], "--check")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr
    assert "would upgrade Docker 20.10.5 -> 20.10.24 (static)" in check.stdout
    assert engine_version(hosts) == "20.10.5+dfsg1"            # check mode changed nothing

    r = deploy(sb, bundles["v2"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "upgrade Docker 20.10.5 -> 20.10.24 (static)" in r.stdout
    assert engine_version(hosts) == "20.10.24+dfsg1"
    assert hosts.sh(HOST, "containerd --version").split()[2] == "1.6.20~ds1"
    titles = {c["title"] for c in api(hosts, "/api/conversations")}
    assert {f"before the upgrade {i}" for i in range(5)} <= titles and len(ids) == 5
    assert hosts.sh(HOST, "docker run --rm -v ferry-e2e-keep:/d llm-chat-backend:1.0.0 cat /d/marker").strip() == "kept"
    assert sorted(d.split("-")[0] for d in hosts.sh(HOST, f"ls {STATIC}").split() if d != "current") == \
        ["20.10.24", "20.10.5"]                                # the engine before is kept
    assert api(hosts, "/api/health")["status"] == "ok"


def test_a_new_engine_that_does_not_start_is_put_back(sb, hosts, bundles):
    before = hosts.sh(HOST, "cat /etc/docker/daemon.json")
    r = deploy(sb, bundles["v2"], "--set", "docker_data_root=/proc/ferry")
    assert r.returncode == 1 and r.stderr.strip() == "error: deploy failed", r.stdout[-3000:] + r.stderr
    (line,) = [l for l in r.stdout.splitlines() if l.startswith(f"{HOST}: FAILED")]
    assert "Docker 20.10.24 (static) did not start: docker.service:" in line and "/proc/ferry" in line
    assert line.endswith("; back on Docker 20.10.24")
    assert hosts.sh(HOST, "cat /etc/docker/daemon.json") == before
    assert engine_version(hosts) == "20.10.24+dfsg1"
    assert api(hosts, "/api/health")["status"] == "ok"
    assert "before the upgrade 0" in {c["title"] for c in api(hosts, "/api/conversations")}


def test_rollback_backup_restore_and_scheduled_backup_on_the_static_engine(sb, hosts, bundles):
    r = inv_cli("rollback", "--host", HOST, "-i", str(sb.inventory))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert hosts.sh(HOST, "readlink /opt/ferry/stacks/llm-chat/current").strip().endswith("-1.0.0")
    assert api(hosts, "/api/health")["status"] == "ok"

    b = inv_cli("backup", "--host", HOST, "-i", str(sb.inventory))
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr
    api(hosts, "/api/conversations", {"title": "after the backup"})
    rs = inv_cli("restore", "--host", HOST, "-i", str(sb.inventory))
    assert rs.returncode == 0, rs.stdout[-3000:] + rs.stderr
    titles = {c["title"] for c in api(hosts, "/api/conversations")}
    assert "after the backup" not in titles and "before the upgrade 4" in titles

    s = inv_cli("schedule-backup", "--host", HOST, "-i", str(sb.inventory), "--cron", "17 3 * * *", "--keep", "3")
    assert s.returncode == 0, s.stdout[-3000:] + s.stderr
    entry = hosts.sh(HOST, "cat /etc/cron.d/ferry-backup-llm-chat")
    assert entry.startswith("17 3 * * * root ") or "\n17 3 * * * root " in entry
    command = [l for l in entry.splitlines() if l.startswith("17 3 * * * root ")][0].split(" root ", 1)[1]
    hosts.t(HOST).run(["sh", "-c", command], timeout=600)      # what cron runs, as cron would
    status = hb.parse_status(hosts.sh(HOST, "cat /opt/ferry/stacks/llm-chat/backup-status/last-scheduled.tsv"))
    assert status["result"] == "ok" and status["scheduled"] == "yes", status
    u = inv_cli("unschedule-backup", "--host", HOST, "-i", str(sb.inventory))
    assert u.returncode == 0, u.stdout + u.stderr


def test_a_host_without_iptables_is_refused_in_one_line_and_nothing_changes(sb, hosts, bundles):
    container = sb.nodpkg[0].container
    aside = "mkdir -p /root/iptables-aside && mv /usr/sbin/iptables /usr/sbin/iptables-nft /usr/sbin/iptables-legacy " \
            "/root/iptables-aside/"
    docker("exec", container, "sh", "-c", aside)
    try:
        before = state(hosts)
        line = one_error_line(deploy(sb, bundles["v1"]))
        assert line == f"error: {HOST}: cannot run Docker's static engine (Rocky Linux 9.3 (Blue Onyx), kernel " \
                       f"{hosts.sh(HOST, 'uname -r').strip()}): missing an iptables command (legacy or nf_tables)"
        assert state(hosts) == before
    finally:
        docker("exec", container, "sh", "-c", "mv /root/iptables-aside/* /usr/sbin/")
    assert api(hosts, "/api/health")["status"] == "ok"
