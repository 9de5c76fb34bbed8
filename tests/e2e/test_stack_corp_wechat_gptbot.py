"""End to end: corp-wechat-gptbot on sandbox-2, through the command line
(`inv bundle --stack corp-wechat-gptbot`, `inv deploy --host sandbox-2 --stack ...`)."""

from __future__ import annotations

import json

import pytest

from stack_e2e import Hosts, changed_services, http, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-2")]
HOST = "sandbox-2"
STACK = "corp-wechat-gptbot"
SETS = ["gptbot_we_corp_id=ww-e2e", "gptbot_we_agent_id=1000002", "gptbot_we_corp_secret=corp-secret-e2e",
        "gptbot_we_token=tok", "gptbot_we_encoding_aes_key=" + "k" * 43]


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist-corp")
    r = inv_cli("bundle", "--stack", STACK, "--dist", str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def cli_deploy(sandbox, dist, *extra):
    bundle = next(dist.glob(f"{STACK}-*"))
    args = ["deploy", "--host", HOST, "--stack", STACK, "-i", str(sandbox.inventory), "--bundle", str(bundle)]
    for s in [*SETS, *extra]:
        args += ["--set", s]
    return inv_cli(*args)


@pytest.fixture(scope="module")
def first(sandbox, hosts, dist):
    return cli_deploy(sandbox, dist)


def test_first_deploy_is_green_and_answers_pong(first, hosts):
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "checks passed" in first.stdout and "FAILED" not in first.stdout
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:50008/test") == (200, b"pong")
    status = json.loads(http(f"http://{ip}:50008/status")[1])
    assert status["gin_mode"] == "release" and status["corpId"] == "ww-e2e"
    host = hosts.host(HOST)
    c = host.docker(f"{STACK}-{STACK}-1").inspect()
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "always"
    mounts = {m["Destination"]: m["Source"] for m in c["Mounts"]}
    assert mounts["/apps/db"] == f"/opt/ferry/stacks/{STACK}/data/db"
    assert mounts["/apps/logs"] == f"/opt/ferry/stacks/{STACK}/data/logs"
    assert host.file(f"/opt/ferry/stacks/{STACK}/data/db/gptbot.db").exists
    assert host.file(f"/opt/ferry/stacks/{STACK}/data/logs/gptbot.log").contains("GIN_MODE=release")
    assert host.file(f"/opt/ferry/stacks/{STACK}/current/config/config.yaml").mode == 0o600
    assert "corp-secret-e2e" not in first.stdout + first.stderr


def test_second_deploy_is_a_noop(sandbox, hosts, dist, first):
    before = hosts.containers(HOST, STACK)
    r = cli_deploy(sandbox, dist)
    assert r.returncode == 0, r.stdout[-3000:]
    assert f"{HOST}: uploaded 0 B, loaded 0 images, recreated 0 containers; nothing changed" in r.stdout
    assert hosts.containers(HOST, STACK) == before


def test_config_change_recreates_the_bot_and_keeps_its_database(sandbox, hosts, dist, first):
    before = hosts.containers(HOST, STACK)
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:50008/wxcallback", "你好".encode())[0] == 200
    r = cli_deploy(sandbox, dist, "gptbot_gpt_model=qwen-plus")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "changed keys: gptConfig.model" in r.stdout and "qwen-plus" not in r.stdout
    assert changed_services(before, hosts.containers(HOST, STACK)) == {STACK}
    status = json.loads(http(f"http://{ip}:50008/status")[1])
    assert status["model"] == "qwen-plus" and status["starts"] == 2
    assert json.loads(http(f"http://{ip}:50008/wxcallback", b"again")[1])["stored"] == 2   # the SQLite file survived
