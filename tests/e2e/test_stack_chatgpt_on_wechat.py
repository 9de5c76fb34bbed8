"""End to end: chatgpt-on-wechat's two instances side by side on sandbox-2."""

from __future__ import annotations

import hashlib
import json

import pytest

from stack_e2e import assert_noop_redeploy, changed_services, deploy_stack, http, stack_fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-2")]
HOST = "sandbox-2"
STACK = "chatgpt-on-wechat"
DESC = "你是一个乐于助人的助手，回答要简洁。「引号」与 \"双引号\" 都要保留"
SETS = {"wechatmp_token": "tok-e2e", "wechatmp_app_id": "wx-e2e", "wechatmp_app_secret": "app-secret-e2e",
        "cow_open_ai_api_key": "sk-cow-e2e", "cow_character_desc": DESC}


hosts, stack_bundle, first = stack_fixtures(STACK, HOST, SETS)


def test_first_deploy_is_green_with_both_instances_side_by_side(first, hosts):
    first.assert_green()
    print(f"\nchatgpt-on-wechat first deploy: {first.seconds:.1f}s")
    ip = hosts.ip(HOST)
    for port, channel in ((80, "wechatmp"), (443, "wechatmp"), (81, "wx"), (444, "wx")):
        status, body = http(f"http://{ip}:{port}/status")
        assert status == 200 and json.loads(body)["channel_type"] == channel, (port, body)
    running = hosts.containers(HOST, STACK)
    assert set(running) == {"wechat", "wechatmp"} and running["wechat"][0] != running["wechatmp"][0]
    host = hosts.host(HOST)
    for inst in ("wechat", "wechatmp"):
        c = host.docker(f"{STACK}-{inst}-1")
        assert c.is_running and c.inspect()["State"]["Health"]["Status"] == "healthy"
        assert c.inspect()["HostConfig"]["SecurityOpt"] == ["seccomp:unconfined"]
        mounts = {m["Destination"]: m["Source"] for m in c.inspect()["Mounts"]}
        assert mounts["/app/appdata"] == f"/opt/ferry/stacks/{STACK}/data/{inst}"
        assert mounts["/app/config.json"].endswith(f"/{inst}/config.json")
        assert host.file(f"/opt/ferry/stacks/{STACK}/data/{inst}/user_datas.pkl").exists


def test_config_json_parses_as_utf8_json_on_the_host_with_chinese_intact(first, hosts):
    host = hosts.host(HOST)
    for inst, channel in (("wechat", "wx"), ("wechatmp", "wechatmp")):
        path = f"/opt/ferry/stacks/{STACK}/current/{inst}/config.json"
        f = host.file(path)
        assert f.mode == 0o600 and f.user == "root"
        # parsed by the host's own python3, strictly as UTF-8
        out = hosts.sh(HOST, f"python3 -c 'import json,sys; d = json.loads(open(\"{path}\", \"rb\").read().decode(\"utf-8\")); "
                             "json.dump(d, sys.stdout, ensure_ascii=True)'")
        conf = json.loads(out)
        assert conf["channel_type"] == channel and conf["character_desc"] == DESC
        assert conf["subscribe_msg"].startswith("感谢您的关注！\n")
        assert conf["group_name_white_list"] == ["ChatGPT测试群"]
        assert json.dumps(DESC, ensure_ascii=False).encode() in hosts.t(HOST).run(["cat", path]).stdout  # raw UTF-8
        assert hosts.host(HOST).file(f"/opt/ferry/stacks/{STACK}/current/{inst}/.env").mode == 0o600
    # what the running bot loaded (through the mounted config.py) is the same text
    status, body = http(f"http://{hosts.ip(HOST)}:81/status")
    assert json.loads(body)["character_desc"] == DESC and json.loads(body)["api_key_set"] is True
    assert "sk-cow-e2e" not in first.out and "app-secret-e2e" not in first.out


def test_wechatmp_answers_the_wechat_server_check_with_its_token(first, hosts):
    ts, nonce = "1700000000", "n0nce"
    sig = hashlib.sha1("".join(sorted(["tok-e2e", ts, nonce])).encode()).hexdigest()
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:80/wx?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=ok123") == (200, b"ok123")
    assert http(f"http://{ip}:81/wx?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=ok123")[0] == 403


def test_second_deploy_is_a_noop(sandbox, hosts, stack_bundle, first):
    assert_noop_redeploy(sandbox.inventory, hosts, HOST, STACK, stack_bundle, SETS)


def test_changing_one_instance_restarts_only_that_instance(sandbox, hosts, stack_bundle, first):
    before = hosts.containers(HOST, STACK)
    d = deploy_stack(sandbox.inventory, HOST, STACK, stack_bundle, {**SETS, "wechatmp_app_id": "wx-changed"}).assert_green()
    after = hosts.containers(HOST, STACK)
    assert changed_services(before, after) == {"wechatmp"}
    assert "changed keys: wechatmp_app_id" in d.out and "wx-changed" not in d.out.replace("wechatmp/config.json", "")
    # a change of both (shared key) restarts both; the data dirs survive
    before = after
    deploy_stack(sandbox.inventory, HOST, STACK, stack_bundle,
                 {**SETS, "wechatmp_app_id": "wx-changed", "cow_model": "qwen-max"}).assert_green()
    after = hosts.containers(HOST, STACK)
    assert changed_services(before, after) == {"wechat", "wechatmp"}
    status, body = http(f"http://{hosts.ip(HOST)}:81/status")
    assert json.loads(body)["model"] == "qwen-max" and json.loads(body)["starts"] >= 2   # user data kept
