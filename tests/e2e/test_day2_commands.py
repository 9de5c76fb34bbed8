"""End to end: the day-2 commands on llm-chat, through the real command line, on a
sandbox host (sandbox-4, claimed clean): ``logs`` (also ``--follow`` ended by Ctrl-C),
``exec``, ``restart``, ``stop``/``start`` (``status`` tells the truth, a ``deploy``
brings a stopped stack back), ``prune``; and every listing's ``--json`` validated
against a JSON schema, its table keeping release and backup ids whole at 80 columns.
"""

from __future__ import annotations

import io
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from devkit.images import derive_image
from ferry.actions.deploy import deploy, prepare
from ferry.ui import UI
from stack_e2e import ROOT, STACKS, Hosts, bundle, deploy_stack, http, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-4")]
HOST = "sandbox-4"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def v1(tmp_path_factory) -> Path:
    return bundle(STACKS / "llm-chat", tmp_path_factory.mktemp("dist-day2"))


@pytest.fixture(scope="module")
def running(sandbox, hosts, v1) -> Path:
    """llm-chat 1.0.0 deployed and healthy on HOST."""
    deploy_stack(sandbox.inventory, HOST, "llm-chat", v1).assert_green()
    return v1


def cli(sandbox, task: str, *args: str, columns: int = 200) -> subprocess.CompletedProcess:
    """``inv TASK --host HOST -i INVENTORY ARGS...`` (options first: exec's command follows ``--``)."""
    return inv_cli(task, "--host", HOST, "-i", str(sandbox.inventory), *args, columns=columns)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def status(sandbox) -> dict:
    r = cli(sandbox, "status", "--json")
    assert "Traceback" not in r.stderr, r.stderr
    [host] = json.loads(r.stdout)
    return host


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


# -- logs ------------------------------------------------------------------------------------

def test_logs_show_the_services_output(sandbox, hosts, running):
    marker = uuid.uuid4().hex
    assert http(f"http://{hosts.ip(HOST)}/api/health?probe={marker}")[0] == 200
    every = ok(cli(sandbox, "logs", "--tail", "200")).stdout
    nginx = ok(cli(sandbox, "logs", "--service", "nginx", "--tail", "200")).stdout
    assert f"/api/health?probe={marker}" in every and f"/api/health?probe={marker}" in nginx
    assert {line.split()[0] for line in nginx.splitlines() if line.strip()} == {"nginx-1"}   # that service only
    assert re.search(r"(?m)^backend-1 +\| ", every) and re.search(r"(?m)^frontend-1 +\| ", every)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert marker not in ok(cli(sandbox, "logs", "--service", "nginx", "--since", later)).stdout
    bad = cli(sandbox, "logs", "--service", "db")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: --service 'db': llm-chat has no such service (services: backend, frontend, nginx)"]


def test_logs_follow_streams_new_lines_until_ctrl_c_and_leaves_nothing_on_the_host(sandbox, hosts, running):
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "logs", "--host", HOST, "-i", str(sandbox.inventory),
                             "--follow", "--service", "nginx", "--tail", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    marker, seen, deadline = uuid.uuid4().hex, "", time.monotonic() + 60
    while marker not in seen:                   # lines made after the command started arrive
        assert time.monotonic() < deadline and proc.poll() is None, seen + proc.stderr.read()
        http(f"http://{hosts.ip(HOST)}/api/health?follow={marker}")
        try:
            seen += lines.get(timeout=1)
        except queue.Empty:
            continue                            # no line yet: ask again, until the deadline above
    assert "compose" in hosts.sh(HOST, "pgrep -af '[d]ocker.*compose.* logs ' || true")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in proc.stderr.read()
    for _ in range(20):                         # the remote `docker compose logs -f` is gone too
        if not hosts.sh(HOST, "pgrep -af '[d]ocker.*compose.* logs ' || true").strip():
            break
        time.sleep(0.5)
    else:
        raise AssertionError(hosts.sh(HOST, "pgrep -af '[d]ocker.*compose.* logs ' || true"))


# -- exec ------------------------------------------------------------------------------------

def test_exec_passes_each_word_once_and_the_exit_status_back(sandbox, running):
    script = 'printf "%s|" "$@"; echo; echo to-stderr >&2; exit 7'
    r = cli(sandbox, "exec", "--service", "backend", "--", "sh", "-c", script, "sh", "a b", "$(id)", "it's", "*")
    assert r.returncode == 7, r.stdout + r.stderr
    assert r.stdout == "a b|$(id)|it's|*|\n" and "to-stderr" in r.stderr and "Traceback" not in r.stderr
    # in the service's own container: its files, its environment
    r = ok(cli(sandbox, "exec", "--service", "backend", "--", "sh", "-c", 'echo "$LLM_MODEL"; ls /app'))
    assert r.stdout.splitlines()[0] == "gpt-4o-mini" and "server.py" in r.stdout
    # the installed `ferry` command takes the same words
    ferry = Path(sys.executable).parent / "ferry"
    r = subprocess.run([str(ferry), "--project", str(ROOT), "exec", "--host", HOST, "-i", str(sandbox.inventory),
                        "--service", "frontend", "--", "sh", "-c", "exit 3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stdout + r.stderr
    missing = cli(sandbox, "exec", "--service", "backend")
    assert missing.returncode == 1 and "exec needs a command after '--'" in missing.stderr


# -- restart, stop, start ------------------------------------------------------------------

def test_restart_restarts_the_container_in_place_locked_and_audited(sandbox, hosts, running):
    before = hosts.containers(HOST, "llm-chat")
    r = ok(cli(sandbox, "restart", "--service", "backend", "--message", "day2 restart"))
    assert "restart: backend running/healthy" in r.stdout
    after = hosts.containers(HOST, "llm-chat")
    assert after["backend"][0] == before["backend"][0]            # the same container...
    assert after["backend"][1] != before["backend"][1]            # ...started again
    assert {s: after[s] for s in ("frontend", "nginx")} == {s: before[s] for s in ("frontend", "nginx")}
    assert http(f"http://{hosts.ip(HOST)}/api/health")[0] == 200
    audit = json.loads(ok(cli(sandbox, "audit", "--json", "--lines", "1")).stdout)[-1]
    assert (audit["task"], audit["result"], audit["stack"]) == ("restart", "ok", "llm-chat")
    assert '"day2 restart"' in audit["detail"]
    assert json.loads(ok(cli(sandbox, "lock.status", "--json")).stdout)[0]["locked"] is False


def test_stop_makes_status_say_stopped_start_and_deploy_bring_it_back(sandbox, hosts, running):
    ip = hosts.ip(HOST)
    r = ok(cli(sandbox, "stop"))
    assert "stop: backend exited" in r.stdout
    st = status(sandbox)
    assert st["state"] == "stopped" and st["healthy"] is False
    assert {s["state"] for s in st["services"].values()} == {"exited"}
    assert refused(f"http://{ip}/api/health") and refused(f"http://{ip}:8000/api/health")
    again = ok(cli(sandbox, "stop"))
    assert "already stopped" in again.stdout                      # idempotent, and says so
    r = ok(cli(sandbox, "start"))
    assert "start: backend running/healthy, frontend running/healthy, nginx running/healthy" in r.stdout
    assert status(sandbox)["state"] == "running" and http(f"http://{ip}/api/health")[0] == 200
    ok(cli(sandbox, "stop", "--service", "frontend"))
    assert status(sandbox)["state"] == "degraded"
    deploy_stack(sandbox.inventory, HOST, "llm-chat", running).assert_green()     # the next deploy brings it back
    assert status(sandbox)["state"] == "running" and http(f"http://{ip}/")[0] == 200
    tasks = [e["task"] for e in json.loads(ok(cli(sandbox, "audit", "--json", "--lines", "20")).stdout)]
    assert tasks.count("stop") >= 3 and "start" in tasks          # every change is in the audit log


# -- listings: --json validated, tables keep ids whole ---------------------------------------

STRING, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
OPT_STRING = {"type": ["string", "null"]}


def listing(item: dict, required: list[str] | None = None) -> dict:
    """A JSON list of objects with ``item``'s properties (all required unless named)."""
    return {"type": "array", "minItems": 1,
            "items": {"type": "object", "properties": item, "required": required or list(item)}}


SCHEMAS = {
    "releases": listing({"host": STRING, "release": STRING, "version": STRING, "created": STRING, "by": STRING,
                         "current": BOOL}),
    "status": listing({
        "host": STRING, "release": OPT_STRING, "version": OPT_STRING, "releases": INT,
        "state": {"enum": ["running", "stopped", "degraded", "absent"]},
        "healthy": BOOL, "problems": {"type": "array", "items": STRING},
        "services": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["state", "health", "ports"],
            "properties": {"state": STRING, "health": STRING, "in_sync": BOOL,
                           "ports": {"type": "array", "items": {"type": "string", "pattern": r"^\d+->\d+$"}}}}},
        "lock": {"type": ["object", "null"]},
        "disk": {"type": "object", "additionalProperties": {"type": ["integer", "string"]}},
        "backup": {"type": "object"}}),
    "audit": listing({"host": STRING, "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT"}, "who": STRING,
                      "task": STRING, "stack": STRING, "version": STRING, "release": STRING, "result": STRING,
                      "detail": STRING}),
    "lock.status": listing({"host": STRING, "locked": BOOL, "holder": {"type": ["object", "null"]}}),
    "verify": listing({"host": STRING, "kind": {"enum": ["container", "port", "http", "mount"]}, "target": STRING,
                       "ok": BOOL, "detail": STRING}),
    "backups": listing({
        "host": STRING, "dir": STRING,
        "backups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "size", "state", "release", "source_bytes", "created", "good"],
            "properties": {"id": STRING, "size": INT, "state": STRING, "release": STRING, "source_bytes": INT,
                           "created": STRING, "good": BOOL}}},
        "schedule": {"type": "object", "required": ["cron"], "properties": {"cron": OPT_STRING}},
        "next_run": OPT_STRING, "last_run": {"type": ["object", "null"]},
        "last_scheduled": {"type": ["object", "null"]}, "log": STRING,
        "problems": {"type": "array", "items": STRING}}),
}


#: ``inventory --json``: ansible-inventory --list's shape, one object keyed by group.
INVENTORY = {
    "type": "object", "required": ["_meta", "all"],
    "properties": {
        "_meta": {"type": "object", "required": ["hostvars"], "properties": {"hostvars": {
            "type": "object", "minProperties": 1, "additionalProperties": {"type": "object"}}}},
        "all": {"type": "object", "required": ["children"]}},
    "additionalProperties": {"type": "object", "properties": {
        "hosts": {"type": "array", "items": STRING}, "children": {"type": "array", "items": STRING}}},
}


def test_every_listing_has_json_that_its_schema_accepts(sandbox, hosts, running):
    ok(cli(sandbox, "backup"))
    for name, schema in SCHEMAS.items():
        r = cli(sandbox, name, "--json")
        data = json.loads(r.stdout)
        jsonschema.validate(data, schema)                    # raises, naming the path, on a mismatch
        # status exits 1 when it finds a problem, and prints its JSON all the same
        assert r.returncode == (1 if name == "status" and not all(h["healthy"] for h in data) else 0), \
            (name, r.stdout[-2000:], r.stderr)
        assert "Traceback" not in r.stderr and not r.stderr.strip() or name == "status", r.stderr
        assert {row["host"] for row in data} == {HOST}
    inv = json.loads(ok(cli(sandbox, "inventory", "--json")).stdout)
    jsonschema.validate(inv, INVENTORY)
    assert list(inv["_meta"]["hostvars"]) == [HOST] and HOST in inv["staging"]["hosts"]
    # a schema that would fail: the validation is not vacuous
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"host": HOST, "locked": "no", "holder": None}], SCHEMAS["lock.status"])


def test_piped_tables_at_80_columns_keep_release_and_backup_ids_whole(sandbox, running):
    releases = [r["release"] for r in json.loads(ok(cli(sandbox, "releases", "--json")).stdout)]
    backups = [b["id"] for h in json.loads(ok(cli(sandbox, "backups", "--json")).stdout) for b in h["backups"]]
    assert releases and backups
    tables = {"releases": ok(cli(sandbox, "releases", columns=80)).stdout,
              "backups": ok(cli(sandbox, "backups", columns=80)).stdout,
              "audit": ok(cli(sandbox, "audit", "--lines", "5", columns=80)).stdout}
    for rid in releases:
        assert any(rid in line for line in tables["releases"].splitlines()), tables["releases"]
    for bid in backups:
        assert any(bid in line for line in tables["backups"].splitlines()), tables["backups"]
    assert any(releases[-1] in line for line in tables["audit"].splitlines()), tables["audit"]


# -- prune -------------------------------------------------------------------------------------

def test_prune_frees_what_no_release_uses_and_keeps_what_they_use(sandbox, hosts, running, tmp_path):
    store = "ls /opt/ferry/store | sort"
    images = "docker images --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort"
    kept_store, kept_bundles = hosts.sh(HOST, store), hosts.sh(HOST, "ls /opt/ferry/bundles")
    # a deploy of 1.1.0 cut short after loading its images: bundle, image, store files no release uses
    v2_image = derive_image("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0-day2", ["ENV APP_VERSION=1.1.0"])
    stack = tmp_path / "llm-chat"
    shutil.copytree(STACKS / "llm-chat", stack, ignore=shutil.ignore_patterns("images"))
    text = (stack / "stack.yml").read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    (stack / "stack.yml").write_text(text.replace("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0-day2"))
    v2 = bundle(stack, tmp_path / "dist")
    plan = prepare(sandbox.inventory, HOST, "llm-chat", v2, v2.parent, {})
    reports = deploy(plan, UI(Console(file=io.StringIO())), roles=["upload-bundle", "install-docker-offline",
                                                                   "load-images"], do_verify=False)
    assert not reports[0].error, reports[0].error
    hosts.sh(HOST, "tar -cf - -T /dev/null | docker import - local/not-ferry:1 >/dev/null")   # not Ferry's
    garbage = (hosts.sh(HOST, store), hosts.sh(HOST, images), hosts.sh(HOST, "ls /opt/ferry/bundles"))
    assert v2_image in garbage[1] and "llm-chat-1.1.0" in garbage[2] and garbage[0] != kept_store

    r = ok(cli(sandbox, "prune", "--check"))
    assert "would remove 1 images, 1 bundles" in r.stdout and "llm-chat-backend:1.1.0-day2" in r.stdout
    assert (hosts.sh(HOST, store), hosts.sh(HOST, images), hosts.sh(HOST, "ls /opt/ferry/bundles")) == garbage

    r = ok(cli(sandbox, "prune", "--message", "day2 prune"))
    assert "removed 1 images, 1 bundles" in r.stdout, r.stdout
    assert hosts.sh(HOST, store) == kept_store                     # exactly the files 1.0.0 links to
    assert hosts.sh(HOST, "ls /opt/ferry/bundles") == kept_bundles
    left = hosts.sh(HOST, images)
    assert v2_image not in left and "local/not-ferry:1" in left    # an image Ferry never loaded stays
    for ref in ("llm-chat-backend:1.0.0", "llm-chat-frontend:1.0.0", "nginx:1.22"):
        assert ref in left                                         # what the release uses stays
    ok(cli(sandbox, "verify"))
    assert "nothing to prune" in ok(cli(sandbox, "prune")).stdout   # idempotent, and says so
    audit = [e for e in json.loads(ok(cli(sandbox, "audit", "--json", "--lines", "5")).stdout) if e["task"] == "prune"]
    assert audit and audit[-2]["result"] == "ok" and "day2 prune" in audit[-2]["detail"]
