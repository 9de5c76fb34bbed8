"""End to end: compose projects written like public LLM projects' own files are imported
with `inv stack.import`, bundled and deployed with no hand edits, verified, changed and
rolled back on a sandbox host; a port clash between two stacks is refused before
upload naming both; `inv remove` leaves no container, network or release of the stack,
keeps its data, and a redeploy finds the data again.

The projects (tests/e2e/projects/): `new-api` (gateway + MySQL + Redis: no healthchecks
on the databases, `${VAR:-default}` in ports and volumes, `./data` mounts, a named
volume, `pull_policy: always`, a custom network, container names), `open-webui`
(chat UI + local model server: named volumes, `${VAR-default}`, no healthcheck at all,
a `build:` section), `gpt-load` (second gateway: healthchecks, `condition:
service_healthy` with `restart: true`, `env_file: .env`, `./data/mysql`). Their images
are test stand-ins (recipes copied into the imported stack's images/; real MariaDB and
Redis from Debian). Host: sandbox-3 (ports 3300, 3080, 3001; xiaozhi uses 8000-8003).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ferry.host.verify import verify_host
from ferry.model.stack import load_stack
from stack_e2e import STACKS, Hosts, http, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-3")]
HOST = "sandbox-3"
PROJECTS = Path(__file__).resolve().parent / "projects"
TAG = os.getpid()
RECIPES = {
    "new-api": {"new-api": PROJECTS / "new-api" / "images" / "new-api",
                "mysql": STACKS / "xiaozhi-esp32-server" / "images" / "mysql",
                "redis": STACKS / "xiaozhi-esp32-server" / "images" / "redis"},
    "open-webui": {s: PROJECTS / "open-webui" / "images" / s for s in ("open-webui", "ollama")},
    "gpt-load": {"gpt-load": STACKS / "uni-load" / "images" / "gpt-load",
                 "mysql": STACKS / "xiaozhi-esp32-server" / "images" / "mysql",
                 "redis": STACKS / "xiaozhi-esp32-server" / "images" / "redis"},
}


class Project:
    """One imported project: its stack name, bundle, and the CLI against the sandbox."""

    def __init__(self, project: str, sandbox, dist: Path):
        self.project, self.name, self.inv = project, f"e2e-{project}-{TAG}", str(sandbox.inventory)
        self.var = self.name.replace("-", "_")
        self.dist, self.bundle = dist, dist / f"{self.name}-1.0.0"

    def cli(self, *args: str):
        return inv_cli(*args, "--stack", self.name, "-i", self.inv)

    def deploy(self, *sets: str):
        return self.cli("deploy", "--host", HOST, "--bundle", str(self.bundle), *[a for s in sets for a in ("--set", s)])

    def verify(self) -> list[dict]:
        v = self.cli("verify", "--host", HOST, "--json")
        return json.loads(v.stdout)


class Counting:
    """A transport that counts the commands (SSH round trips) sent through it."""

    def __init__(self, t):
        self.t, self.host, self.calls = t, t.host, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.t.run(*args, **kwargs)


def _import(project: str, sandbox, tmp_path_factory) -> Project:
    p = Project(project, sandbox, tmp_path_factory.mktemp(f"dist-{project}"))
    r = inv_cli("stack.import", str(PROJECTS / project / "docker-compose.yml"), "--name", p.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Ferry-db-pw" not in r.stdout + r.stderr and "sk-ferry" not in r.stdout + r.stderr   # secrets never printed
    for service, recipe in RECIPES[project].items():
        shutil.copytree(recipe, STACKS / p.name / "images" / service)
    b = inv_cli("bundle", "--stack", p.name, "--dist", str(p.dist), timeout=1800)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    return p


def _fixture(project: str):
    @pytest.fixture(scope="module")
    def fixture(sandbox, tmp_path_factory):
        p = None
        try:
            p = _import(project, sandbox, tmp_path_factory)
            p.first = p.deploy()
            yield p
        finally:
            shutil.rmtree(STACKS / f"e2e-{project}-{TAG}", ignore_errors=True)
    return fixture


newapi = _fixture("new-api")
webui = _fixture("open-webui")
gptload = _fixture("gpt-load")


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def _rules(checks: list[dict]) -> dict[str, str]:
    return {c["target"]: c["detail"].split("; rule: ")[1].split(" (")[0]
            for c in checks if c["kind"] == "container"}


def test_new_api_imports_deploys_and_keeps_data_across_change_and_rollback(newapi, hosts):
    out = _ok(newapi.first)
    assert "checks passed" in out
    assert "--pull never; pull_policy always of new-api overridden" in out       # offline, and said so
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:3300/api/token?name=t1", data=b"")[0] == 200
    status, body = http(f"http://{ip}:3300/api/token")
    assert status == 200 and json.loads(body)["data"] == ["t1"]
    checks = newapi.verify()
    assert all(c["ok"] for c in checks), checks
    rules = _rules(checks)
    assert rules["mysql"].startswith("no healthcheck") and rules["redis"].startswith("no healthcheck")
    assert rules["new-api"].startswith("healthcheck")
    counting = Counting(hosts.t(HOST))                   # verification: two SSH round trips in all
    again = verify_host(counting, load_stack(STACKS / newapi.name), f"/opt/ferry/stacks/{newapi.name}/current")
    assert counting.calls == 2 and all(c.ok for c in again) and len(again) == len(checks) >= 8, again
    # ./data is data: outside the release, linked from it
    base = f"/opt/ferry/stacks/{newapi.name}"
    assert hosts.sh(HOST, f"cat {base}/data/data/tokens/t1") == "t1\n"
    assert hosts.sh(HOST, f"readlink {base}/current/data") == f"{base}/data/data\n"
    # a change: the published port, through the imported variable
    changed = _ok(newapi.deploy(f"{newapi.var}_new_api_port=3310"))
    assert "recreated 1 containers (new-api)" in changed
    assert json.loads(http(f"http://{ip}:3310/api/token")[1])["data"] == ["t1"]
    back = _ok(newapi.cli("rollback", "--host", HOST))
    assert "checks passed" in back
    assert json.loads(http(f"http://{ip}:3300/api/token")[1])["files"] == ["t1"]


def test_chat_ui_with_model_server_and_named_volumes(webui, hosts):
    out = _ok(webui.first)
    assert "pull_policy always of ollama overridden" in out
    rules = _rules(webui.verify())
    assert set(rules) == {"ollama", "open-webui"}
    assert all(r.startswith("no healthcheck, running 10s without a restart") for r in rules.values()), rules
    hosts.sh(HOST, r"""docker exec ollama python3 -c "import urllib.request as u; u.urlopen(u.Request("""
                   r"""'http://127.0.0.1:11434/api/pull', data=b'{\"name\": \"qwen2:0.5b\"}'))" """)
    ip = hosts.ip(HOST)
    assert json.loads(http(f"http://{ip}:3080/api/models")[1])["data"] == [{"name": "qwen2:0.5b"}]
    assert http(f"http://{ip}:3080/api/chats", data=b'{"title": "hello"}')[0] == 200
    _ok(webui.deploy(f"{webui.var}_open_webui_port=3081"))
    assert json.loads(http(f"http://{ip}:3081/api/chats")[1])["count"] == 1
    _ok(webui.cli("rollback", "--host", HOST))
    assert json.loads(http(f"http://{ip}:3080/api/chats")[1])["count"] == 1          # named volume kept
    assert json.loads(http(f"http://{ip}:3080/api/models")[1])["data"] == [{"name": "qwen2:0.5b"}]


def test_second_gateway_with_healthchecks_and_env_file(gptload, hosts):
    _ok(gptload.first)
    rules = _rules(gptload.verify())
    assert all(r.startswith("healthcheck") for r in rules.values()), rules
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:3001/api/groups", headers={"Authorization": "Bearer sk-ferry-gpt-load-key"})[0] == 200
    base = f"/opt/ferry/stacks/{gptload.name}"
    assert hosts.sh(HOST, f"stat -c %a {base}/current/.env") == "600\n"
    assert hosts.sh(HOST, f"test -f {base}/data/data/gpt-load.db && test -d {base}/data/data/mysql/mysql && echo ok") == "ok\n"


def test_backup_and_restore_bring_back_the_rows_of_each_project(newapi, webui, gptload, hosts):
    """Backups need no declaration: MySQL dumped, Redis saved, named volumes and ./data
    archived; a restore brings back exactly the rows there were at backup time."""
    ip = hosts.ip(HOST)
    key = {"Authorization": "Bearer sk-ferry-gpt-load-key"}
    proxy = f"http://{ip}:3001/proxy/default/v1/chat/completions"
    gpt_rows = ("docker exec gpt-load python3 -c \"import sqlite3; print(sqlite3.connect("
                "'/app/data/gpt-load.db').execute('SELECT COUNT(*) FROM request_logs').fetchone()[0])\"")
    http(f"http://{ip}:3300/api/token?name=t2", data=b"")
    http(f"http://{ip}:3080/api/chats", data=b'{"title": "second"}')
    http(proxy, data=b'{"model": "gpt-4o-mini", "messages": []}', headers=key)
    before = (json.loads(http(f"http://{ip}:3300/api/token")[1])["data"],
              json.loads(http(f"http://{ip}:3080/api/chats")[1])["count"], hosts.sh(HOST, gpt_rows))
    assert before[0] == ["t1", "t2"] and before[1] == 2 and before[2] == "1\n"
    for p in (newapi, webui, gptload):
        _ok(p.cli("backup", "--host", HOST))
    http(f"http://{ip}:3300/api/token?name=t3", data=b"")
    http(f"http://{ip}:3080/api/chats", data=b'{"title": "after"}')
    http(proxy, data=b'{"model": "gpt-4o-mini", "messages": []}', headers=key)
    for p in (newapi, webui, gptload):
        out = _ok(p.cli("restore", "--host", HOST, "--no-safety-backup"))
        assert "checks passed" in out, out[-2000:]
    after = (json.loads(http(f"http://{ip}:3300/api/token")[1])["data"],
             json.loads(http(f"http://{ip}:3080/api/chats")[1])["count"], hosts.sh(HOST, gpt_rows))
    assert after == before


def test_a_port_clash_is_refused_before_upload_naming_both_stacks(newapi, gptload, hosts):
    _ok(newapi.first)
    before = hosts.state(HOST)
    r = gptload.deploy(f"{gptload.var}_port=3300")
    assert r.returncode == 1
    assert (f"host port 3300/tcp (service gpt-load) is already published by stack '{newapi.name}'"
            in r.stderr + r.stdout), r.stdout[-2000:] + r.stderr[-2000:]
    assert hosts.state(HOST) == before


def test_remove_keeps_data_and_a_redeploy_finds_it(newapi, hosts):
    _ok(newapi.first)
    ip = hosts.ip(HOST)
    http(f"http://{ip}:3300/api/token?name=kept", data=b"")
    label = f"label=com.docker.compose.project={newapi.name}"
    refused = newapi.cli("remove", "--host", HOST, "--purge-data")          # no terminal to ask, no --yes
    assert refused.returncode == 1 and "confirm with --yes" in refused.stderr
    assert hosts.sh(HOST, f"docker ps -q --filter {label} | wc -l") == "3\n"
    r = _ok(newapi.cli("remove", "--host", HOST))
    assert "kept" in r and "data" in r
    base = f"/opt/ferry/stacks/{newapi.name}"
    assert hosts.sh(HOST, f"docker ps -aq --filter {label}; docker network ls -q --filter {label}") == ""
    assert hosts.sh(HOST, f"ls {base}").split() == ["data"]                  # no release, no current
    assert hosts.sh(HOST, f"docker volume ls -q --filter {label}").split() == [f"{newapi.name}_mysql_data"]
    again = _ok(newapi.cli("remove", "--host", HOST))
    assert "nothing to remove" in again
    _ok(newapi.deploy())
    names = json.loads(http(f"http://{ip}:3300/api/token")[1])["data"]
    assert "kept" in names                                 # MySQL's named volume and ./data found again
