"""End to end: xiaozhi-esp32-server (server, web, real MariaDB and Redis) on sandbox-3.
A plugin file changed on the controller (with CRLF line endings) is uploaded as LF and
restarts only the server; a new bundle version keeps the database and uploaded files."""

from __future__ import annotations

import json
import shutil

import pytest

from stack_e2e import STACKS, assert_noop_redeploy, bundle, changed_services, deploy_stack, http, stack_fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-3")]
HOST = "sandbox-3"
STACK = "xiaozhi-esp32-server"
ROOT = f"/opt/ferry/stacks/{STACK}"
SERVICES = {"xiaozhi-esp32-server", "xiaozhi-esp32-server-web", "xiaozhi-esp32-server-db", "xiaozhi-esp32-server-redis"}


hosts, stack_bundle, first = stack_fixtures(STACK, HOST, None)


def status(hosts):
    return json.loads(http(f"http://{hosts.ip(HOST)}:8003/xiaozhi/standin/status")[1])


def test_first_deploy_is_green_with_real_database_and_redis(first, hosts):
    first.assert_green()
    print(f"\nxiaozhi first deploy: {first.seconds:.1f}s")
    assert set(hosts.containers(HOST, STACK)) == SERVICES
    ip = hosts.ip(HOST)
    status_code, body = http(f"http://{ip}:8003/xiaozhi/ota/")
    assert status_code == 200 and f"ws://{ip}:8000/xiaozhi/v1/" in body.decode()
    assert http(f"http://{ip}:8000/")[1] == b"Server is running\n"
    assert http(f"http://{ip}:8002/")[0] == 200
    s = status(hosts)
    assert s["functions"] == ["get_weather", "play_music"] and s["memory"] == "mem_local_short 1"
    assert s["manager"] == {"database": "xiaozhi_esp32_server", "redis": "ok"}   # secret accepted by the web
    # real MariaDB and Redis, their data under the stack's data dirs
    db = hosts.sh(HOST, f"docker exec {STACK}-xiaozhi-esp32-server-db-1 sh -c "
                        "'mysql -uroot -p\"$MYSQL_ROOT_PASSWORD\" -N -e \"SELECT VERSION(); SHOW TABLES FROM xiaozhi_esp32_server\"'")
    assert "MariaDB" in db and "sys_params" in db and "sys_upload" in db
    assert hosts.sh(HOST, f"docker exec {STACK}-xiaozhi-esp32-server-redis-1 redis-cli ping").strip() == "PONG"
    host = hosts.host(HOST)
    assert host.file(f"{ROOT}/data/mysql/data/xiaozhi_esp32_server").is_directory
    assert host.file(f"{ROOT}/data/redis/data").is_directory
    for f in ("db.env", "web.env", "data/.config.yaml"):
        assert host.file(f"{ROOT}/current/{f}").mode == 0o600
    secrets = json.loads(hosts.sh(HOST, f"cat {ROOT}/secrets.json"))
    assert set(secrets) == {"XIAOZHI_DB_PASSWORD", "XIAOZHI_SERVER_SECRET"}
    assert all(v not in first.out for v in secrets.values())


def test_hot_update_mounts_are_in_place(first, hosts):
    c = hosts.host(HOST).docker(f"{STACK}-xiaozhi-esp32-server-1").inspect()
    mounts = {m["Destination"]: m["Source"] for m in c["Mounts"]}
    home = "/opt/xiaozhi-esp32-server"
    for rel in ("plugins_func/functions", "plugins_func/register.py",
                "core/providers/memory/mem_local_short/mem_local_short.py",
                "core/providers/intent/intent_llm/intent_llm.py", "data/.config.yaml"):
        assert mounts[f"{home}/{rel}"] == f"{ROOT}/current/{rel}", rel
    inside = hosts.sh(HOST, f"docker exec {STACK}-xiaozhi-esp32-server-1 cat {home}/plugins_func/functions/get_weather.py")
    assert inside == hosts.sh(HOST, f"cat {ROOT}/current/plugins_func/functions/get_weather.py")
    assert mounts[f"{home}/data"] == f"{ROOT}/data/data" and mounts[f"{home}/models"] == f"{ROOT}/data/models"


def test_second_deploy_is_a_noop(sandbox, hosts, stack_bundle, first):
    assert_noop_redeploy(sandbox.inventory, hosts, HOST, STACK, stack_bundle, None)


def test_changed_plugin_file_with_crlf_uploads_lf_and_restarts_only_the_server(sandbox, hosts, stack_bundle, first, tmp_path):
    stack = tmp_path / STACK
    shutil.copytree(STACKS / STACK, stack, ignore=shutil.ignore_patterns("images"))
    plugin = stack / "files" / "plugins_func" / "functions" / "get_weather.py"
    text = plugin.read_text(encoding="utf-8").replace("晴，25°C", "多云，18°C")
    plugin.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))           # edited on Windows
    (stack / "files" / "plugins_func" / "functions" / "get_time.py").write_bytes(
        b'"""Plugin get_time."""\r\nfrom plugins_func.register import register_function\r\n\r\n\r\n'
        b'@register_function("get_time", {}, None)\r\ndef get_time(conn=None):\r\n    return "12:00"\r\n')
    changed = bundle(stack, tmp_path / "dist", base=stack_bundle)
    before = hosts.containers(HOST, STACK)
    d = deploy_stack(sandbox.inventory, HOST, STACK, changed).assert_green()
    after = hosts.containers(HOST, STACK)
    assert changed_services(before, after) == {"xiaozhi-esp32-server"}
    on_host = hosts.t(HOST).run(["cat", f"{ROOT}/current/plugins_func/functions/get_weather.py"]).stdout
    assert on_host == text.encode("utf-8") and b"\r" not in on_host
    assert "多云，18°C" in d.out               # the diff of a non-secret file is shown
    assert status(hosts)["functions"] == ["get_time", "get_weather", "play_music"]
    assert "MB" not in d.summary.split("uploaded ")[1].split(",")[0]      # only the stack files travelled


def test_new_bundle_version_keeps_database_and_uploaded_files(sandbox, hosts, stack_bundle, first, tmp_path):
    ip = hosts.ip(HOST)
    code, body = http(f"http://{ip}:8002/xiaozhi/file/upload?name=voice.txt", "你好，小智".encode())
    assert code == 200, body
    upgraded = bundle(STACKS / STACK, tmp_path / "dist", version="1.0.1", base=stack_bundle)
    before = hosts.containers(HOST, STACK)
    d = deploy_stack(sandbox.inventory, HOST, STACK, upgraded).assert_green()
    assert changed_services(before, hosts.containers(HOST, STACK)) == SERVICES    # every container is new
    assert hosts.sh(HOST, f"readlink {ROOT}/current").strip().endswith("-1.0.1")
    listing = json.loads(http(f"http://{ip}:8002/xiaozhi/file/list")[1])
    assert {"name": "voice.txt", "size": len("你好，小智".encode())} in listing["data"]    # MariaDB rows kept
    assert "voice.txt" in listing["on_disk"] and listing["uploads_counter"] >= 1       # files and Redis kept
    assert hosts.host(HOST).file(f"{ROOT}/data/uploadfile/voice.txt").content_string == "你好，小智"
    assert status(hosts)["manager"]["redis"] == "ok"
    assert d.reports[0].metric("bytes") < 1_000_000
