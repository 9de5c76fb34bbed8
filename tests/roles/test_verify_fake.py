"""Verification against a pretend host: the batched scripts really run (``sh``), with
``docker``, ``ss`` and ``curl`` replaced by stubs that print Docker 20.10's answers.
Facts in, checks out: two round trips, the rule applied per service, ports, health
URLs and mounts asserted by testinfra on the gathered answers."""

import json
import os
import subprocess
import textwrap

import pytest

from ferry.host.transport.fake import FakeTransport
from ferry.host.verify import verify_host
from ferry.model.stack import Stack

NOW = 1795316400                                   # 2026-11-22T03:00:00Z


def inspect(name, service, health=None, started="2026-11-22T02:59:00Z", mounts=(), ports=None, status="running"):
    state = {"Status": status, "Running": status == "running", "StartedAt": started, "ExitCode": 0}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": name + "-id", "Name": "/" + name, "RestartCount": 0, "State": state, "Image": "sha256:x",
            "Config": {"Labels": {"com.docker.compose.service": service, "com.docker.compose.project": "gw"}},
            "NetworkSettings": {"Ports": ports or {}}, "Mounts": list(mounts)}


@pytest.fixture
def host(tmp_path):
    """A pretend host: stub commands on PATH, a data dir that exists."""
    data = tmp_path / "data"
    data.mkdir()
    model = {"name": "gw", "services": {
        "api": {"image": "new-api", "ports": [{"target": 3000, "published": "3300", "protocol": "tcp"}],
                "volumes": [{"type": "bind", "source": str(data), "target": "/data"}]},
        "mysql": {"image": "mysql", "volumes": [{"type": "volume", "source": "db", "target": "/var/lib/mysql"}]},
        "init": {"image": "new-api"},
        "web": {"image": "web", "depends_on": {"init": {"condition": "service_completed_successfully"}}}},
        "volumes": {"db": {"name": "gw_db"}}}
    containers = [
        inspect("gw-api-1", "api", health="healthy", mounts=[{"Type": "bind", "Source": str(data), "Destination": "/data"}],
                ports={"3000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "3300"}]}),
        inspect("gw-mysql-1", "mysql", mounts=[{"Type": "volume", "Name": "gw_db", "Destination": "/var/lib/mysql"}]),
        inspect("gw-init-1", "init", status="exited"),
        inspect("gw-web-1", "web", started="2026-11-22T02:59:57Z")]          # up 3 s: not settled yet
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "docker": f"""\
            case "$*" in
              *" config --format json"*) cat {tmp_path}/model.json ;;
              "ps -aq --filter"*) echo gw-api-1-id; echo gw-mysql-1-id; echo gw-init-1-id; echo gw-web-1-id ;;
              "inspect "*) cat {tmp_path}/inspect.json ;;
              *) echo "unexpected docker $*" >&2; exit 9 ;;
            esac""",
        "ss": """\
            echo 'State  Recv-Q Send-Q Local Address:Port Peer Address:Port'
            echo 'LISTEN 0      4096         0.0.0.0:3300      0.0.0.0:*'""",
        "curl": "printf 200",
        "date": f"echo {NOW}",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + textwrap.dedent(body) + "\n")
        os.chmod(bin_dir / name, 0o755)
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "inspect.json").write_text(json.dumps(containers))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def run(argv, data):
        assert argv[:2] == ["sh", "-c"], argv            # everything arrives as a batch
        p = subprocess.run(argv, input=data, capture_output=True, env=env)
        return p.returncode, p.stdout, p.stderr
    return FakeTransport(run, host="h1")


def test_two_round_trips_and_the_rule_of_each_service(host, tmp_path):
    stack = Stack(tmp_path, "gw", "1", "", {"api": "new-api"}, [], health_paths={"api": "/api/status"})
    checks = verify_host(host, stack, "/opt/ferry/stacks/gw/current", settle=10)
    assert len(host.calls) == 2
    got = {(c.kind, c.target): (c.ok, c.detail) for c in checks}
    assert got[("container", "api")] == (True, "running, healthy; rule: healthcheck must pass (gw-api-1)")
    assert got[("container", "mysql")] == (True, "running for 60s, 0 restarts; rule: no healthcheck, "
                                                 "running 10s without a restart (gw-mysql-1)")
    assert got[("container", "init")] == (True, "exited (exit 0); rule: one-shot, must exit 0 (gw-init-1)")
    assert got[("container", "web")] == (False, "running for 3s, 0 restarts, up only 3s; rule: no healthcheck, "
                                                "running 10s without a restart (gw-web-1)")
    assert got[("port", "api 0.0.0.0:3300")] == (True, "listening")
    assert got[("http", "api http://127.0.0.1:3300/api/status")] == (True, "HTTP 200")
    assert got[("mount", "api /data")][0] and got[("mount", "mysql /var/lib/mysql")] == (True, "volume gw_db")
