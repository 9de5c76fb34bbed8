"""End to end: releases, rollback, health-gated rollback, deploy lock, --serial, retention.

Hosts: sandbox-4 (rollback and health gate), sandbox-5 (lock, retention), and
sandbox-1/4/5 as one group for the canary rollout. Backend versions are real images:
``llm-chat-backend:1.0.0`` re-committed with another ``APP_VERSION`` (v2), or with a
command that logs a fatal error and never serves (v3, fails its healthcheck).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from devkit.images import build_bundle
from ferry.actions.deploy import deploy, prepare, summary_lines
from devkit.images import derive_image
from ferry.controller.inventory import Inventory
from ferry.host.releases import read_releases
from ferry.roles import role_defaults
from ferry.host.transport.ssh import connect_host
from ferry.ui import UI
from stack_e2e import inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-1", "sandbox-4", "sandbox-5", "sandbox-6")]
ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "stacks" / "llm-chat"


def variant_tag(version: str) -> str:
    """This module's backend image of ``version``: its own tag, so that another module
    deriving a variant of the same version (in a parallel worker) never replaces it."""
    return f"llm-chat-backend:{version}-releases"


def commit_variant(tag: str, *changes: str) -> None:
    """``llm-chat-backend:1.0.0`` with Dockerfile-style changes, committed as ``tag``."""
    derive_image("llm-chat-backend:1.0.0", tag, list(changes))


def stack_version(tmp: Path, version: str, backend: str) -> Path:
    """A copy of the llm-chat stack pinned to ``version`` and backend image ``backend``."""
    d = tmp / f"llm-chat-{version}"
    shutil.copytree(STACK, d, ignore=shutil.ignore_patterns("images"))
    text = (d / "stack.yml").read_text()
    text = re.sub(r'(?m)^version:.*$', f'version: "{version}"', text)
    text = text.replace("backend: llm-chat-backend:1.0.0", f"backend: {backend}")
    (d / "stack.yml").write_text(text)
    return d


@pytest.fixture(scope="module")
def bundles(sandbox, tmp_path_factory):
    """v1 (1.0.0), v2 (1.1.0, reports 1.1.0) and v3 (1.2.0, never healthy) bundles."""
    tmp = tmp_path_factory.mktemp("versions")
    dist = tmp / "dist"
    commit_variant(variant_tag("1.1.0"), "ENV APP_VERSION=1.1.0")
    commit_variant(variant_tag("1.2.0"), 'CMD ["sh", "-c", "echo FATAL: model registry unreachable >&2; exec sleep 3600"]')
    settings = role_defaults("install-docker-offline")
    quiet = UI(Console(file=io.StringIO()))
    out = {"v1": build_bundle(STACK, dist, None, quiet, docker_settings=settings).path}
    for key, version in (("v2", "1.1.0"), ("v3", "1.2.0")):
        out[key] = build_bundle(stack_version(tmp, version, variant_tag(version)), dist, None, quiet,
                                docker_settings=settings).path
    return out


def api_deploy(inventory: Path, pattern: str, bundle: Path, sets=None, **kw):
    out = io.StringIO()
    plan = prepare(inventory, pattern, "llm-chat", bundle, bundle.parent, sets or {})
    reports = deploy(plan, UI(Console(file=out, width=250)), **kw)
    return reports, out.getvalue() + "\n".join(summary_lines(reports))


def ip(sandbox, name: str) -> str:
    return next(h.ip for h in sandbox.hosts if h.name == name)


def health(sandbox, name: str) -> dict:
    with urllib.request.urlopen(f"http://{ip(sandbox, name)}/api/health", timeout=10) as r:
        return json.loads(r.read())


def history(sandbox, name: str):
    inv = Inventory(sandbox.inventory)
    t = connect_host(inv.hosts[name], inv)
    try:
        return read_releases(t, "/opt/ferry/stacks/llm-chat")
    finally:
        t.close()


def host_sh(sandbox, name: str, script: str) -> str:
    inv = Inventory(sandbox.inventory)
    t = connect_host(inv.hosts[name], inv)
    try:
        return t.run(["sh", "-c", script]).out
    finally:
        t.close()


def test_rollback_serves_v1_again_and_keeps_data_written_under_v2(sandbox, bundles):
    inv = sandbox.inventory
    reports, out = api_deploy(inv, "sandbox-4", bundles["v1"])
    assert not reports[0].failed, out
    reports, out = api_deploy(inv, "sandbox-4", bundles["v2"])
    assert not reports[0].failed, out
    assert health(sandbox, "sandbox-4")["version"] == "1.1.0"
    req = urllib.request.Request(f"http://{ip(sandbox, 'sandbox-4')}/api/conversations",
                                 data=json.dumps({"title": "written under v2"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()

    r = inv_cli("rollback", "--host", "sandbox-4", "-i", str(inv), "--message", "v2 regression")
    assert r.returncode == 0, r.stdout + r.stderr
    # the lock with the target's model, the activation with all of verification, the audit line
    assert re.search(r"sandbox-4: \S+-1\.0\.0 runs \(3 SSH round trips\)", r.stdout), r.stdout
    assert health(sandbox, "sandbox-4")["version"] == "1.0.0"
    with urllib.request.urlopen(f"http://{ip(sandbox, 'sandbox-4')}/api/conversations", timeout=10) as resp:
        assert "written under v2" in [c["title"] for c in json.loads(resp.read())]

    h = history(sandbox, "sandbox-4")
    assert [r.version for r in h.releases] == ["1.0.0", "1.1.0"] and h.get(h.current).version == "1.0.0"
    listing = inv_cli("releases", "--host", "sandbox-4", "-i", str(inv))
    assert listing.returncode == 0 and "1.1.0" in listing.stdout and "current" in listing.stdout
    log = inv_cli("audit", "--host", "sandbox-4", "-i", str(inv))
    assert re.search(r"rollback.*1\.0\.0.*ok", log.stdout), log.stdout


def test_unhealthy_v3_is_rolled_back_to_v2_with_its_logs_shown(sandbox, bundles):
    inv = sandbox.inventory
    reports, out = api_deploy(inv, "sandbox-4", bundles["v2"])
    assert not reports[0].failed and health(sandbox, "sandbox-4")["version"] == "1.1.0", out
    before = history(sandbox, "sandbox-4").current

    r = inv_cli("deploy", "--host", "sandbox-4", "-i", str(inv), "--bundle", str(bundles["v3"]),
                "--set", "compose_wait_timeout=20")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FATAL: model registry unreachable" in r.stdout          # the failing container's log
    assert "the host switched back to" in r.stdout and "ROLLED-BACK" in r.stdout
    assert health(sandbox, "sandbox-4")["version"] == "1.1.0"
    assert history(sandbox, "sandbox-4").current == before


def test_two_deploys_at_once_one_runs_the_other_names_the_holder(sandbox, bundles):
    inv = str(sandbox.inventory)
    api_deploy(sandbox.inventory, "sandbox-5", bundles["v1"])
    count = len(history(sandbox, "sandbox-5").releases)
    args = ["deploy", "--host", "sandbox-5", "-i", inv, "--bundle", str(bundles["v2"]), "--message", "race"]
    procs = [subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, _, err in results if rc == 1)
    assert "is locked: held by" in loser and "deploy llm-chat 1.1.0" in loser and '"race"' in loser
    assert len(history(sandbox, "sandbox-5").releases) == count + 1     # one release, not two
    assert health(sandbox, "sandbox-5")["version"] == "1.1.0"


def test_a_killed_deploy_leaves_a_lock_that_status_explains_and_release_clears(sandbox, bundles):
    inv = str(sandbox.inventory)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--host", "sandbox-5", "-i", inv,
                             "--bundle", str(bundles["v1"]), "--message", "doomed"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while "doomed" not in host_sh(sandbox, "sandbox-5", "cat /opt/ferry/locks/llm-chat/info.json 2>/dev/null || true"):
        assert time.monotonic() < deadline and proc.poll() is None, "deploy never took the lock"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = inv_cli("lock.status", "--host", "sandbox-5", "-i", inv)
    assert "is locked: held by" in st.stdout and "doomed" in st.stdout and f"pid {proc.pid}" in st.stdout
    blocked = inv_cli("deploy", "--host", "sandbox-5", "-i", inv, "--bundle", str(bundles["v1"]))
    assert blocked.returncode == 1 and "is locked" in blocked.stderr
    rel = inv_cli("lock.release", "--host", "sandbox-5", "-i", inv)
    assert rel.returncode == 0 and "removing the lock" in rel.stdout
    assert "is not locked" in inv_cli("lock.status", "--host", "sandbox-5", "-i", inv).stdout
    again = inv_cli("deploy", "--host", "sandbox-5", "-i", inv, "--bundle", str(bundles["v1"]))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr


def test_serial_canary_stops_after_a_failing_host_and_rolls_it_back(sandbox, bundles, tmp_path):
    # v2 from a stack whose declarations let an empty llm_model through (llm-chat's own
    # refuses it on the controller): on sandbox-4 the backend itself refuses to start.
    lax = stack_version(tmp_path, "1.1.0", variant_tag("1.1.0"))
    declared = yaml.safe_load((lax / "defaults.yml").read_text())
    declared["llm_model"] = {k: v for k, v in declared["llm_model"].items() if k not in ("required", "pattern")}
    (lax / "defaults.yml").write_text(yaml.safe_dump(declared))
    v2 = build_bundle(lax, tmp_path / "dist", None, UI(Console(file=io.StringIO())),
                      docker_settings=role_defaults("install-docker-offline")).path
    data = yaml.safe_load(sandbox.inventory.read_text())
    hosts = {**data["all"]["children"]["prod"]["hosts"], **data["all"]["children"]["staging"]["hosts"]}
    fleet = {n: dict(hosts[n]) for n in ("sandbox-1", "sandbox-4", "sandbox-5")}
    fleet["sandbox-4"].update(llm_model="", compose_wait_timeout=20)     # backend refuses to start
    data["all"]["children"] = {"fleet": {"hosts": fleet}}
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy(sandbox.state_dir / f, tmp_path / f)
    inv = tmp_path / "fleet.yml"
    inv.write_text(yaml.safe_dump(data))
    for name in fleet:                                          # all three healthy on v1 first
        reports, out = api_deploy(sandbox.inventory, name, bundles["v1"])
        assert not reports[0].failed, out
    before = {n: history(sandbox, n) for n in fleet}

    reports, out = api_deploy(inv, "fleet", v2, serial=1)
    status = {r.host: r.status for r in reports}
    assert status == {"sandbox-1": "ok", "sandbox-4": "rolled-back", "sandbox-5": "skipped"}, out
    assert "refusing to start: LLM_MODEL is not set" in out
    assert "sandbox-5: SKIPPED" in out and "sandbox-4: ROLLED-BACK" in out
    assert health(sandbox, "sandbox-1")["version"] == "1.1.0"
    assert health(sandbox, "sandbox-4")["version"] == "1.0.0"
    assert history(sandbox, "sandbox-4").current == before["sandbox-4"].current
    after5 = history(sandbox, "sandbox-5")
    assert (after5.current, [r.id for r in after5.releases]) == \
        (before["sandbox-5"].current, [r.id for r in before["sandbox-5"].releases])


def test_after_seven_deploys_five_releases_and_their_images_remain(sandbox, bundles, tmp_path):
    settings = role_defaults("install-docker-offline")
    quiet = UI(Console(file=io.StringIO()))
    ids = {}
    for n in range(1, 8):
        version = f"2.0.{n}"
        commit_variant(variant_tag(version), f"ENV APP_VERSION={version}")
        b = build_bundle(stack_version(tmp_path, version, variant_tag(version)), tmp_path / "dist", None,
                         quiet, docker_settings=settings)
        ids[version] = next(i["id"] for i in b.manifest["images"] if i["service"] == "backend")
        reports, out = api_deploy(sandbox.inventory, "sandbox-5", b.path)
        assert not reports[0].failed, out
    h = history(sandbox, "sandbox-5")
    assert len(h.releases) == 5 and h.get(h.current).version == "2.0.7"
    assert [r.version for r in h.releases] == [f"2.0.{n}" for n in range(3, 8)]
    present = host_sh(sandbox, "sandbox-5", "docker images --no-trunc -q")
    for version, image_id in ids.items():
        assert (image_id in present) == (version not in ("2.0.1", "2.0.2")), version


def test_a_first_deploy_that_never_gets_healthy_stops_the_stack(sandbox, bundles):
    r = inv_cli("deploy", "--host", "sandbox-6", "-i", str(sandbox.inventory), "--bundle", str(bundles["v3"]),
                "--set", "compose_wait_timeout=20")
    assert r.returncode == 1
    assert "nothing to return to: the containers it created were removed" in r.stdout
    assert "STOPPED" in r.stdout
    assert host_sh(sandbox, "sandbox-6", "docker ps -q --filter label=com.docker.compose.project=llm-chat") == ""
    assert "is not locked" in inv_cli("lock.status", "--host", "sandbox-6", "-i", str(sandbox.inventory)).stdout


def test_ctrl_c_releases_the_lock(sandbox, bundles):
    inv = str(sandbox.inventory)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--host", "sandbox-5", "-i", inv,
                             "--bundle", str(bundles["v2"]), "--message", "interrupted"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "interrupted" not in host_sh(sandbox, "sandbox-5", "cat /opt/ferry/locks/llm-chat/info.json 2>/dev/null || true"):
        assert time.monotonic() < deadline and proc.poll() is None, "deploy never took the lock"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "is not locked" in inv_cli("lock.status", "--host", "sandbox-5", "-i", inv).stdout, out + err


def test_status_json_reports_release_services_lock_and_disk(sandbox, bundles):
    r = inv_cli("status", "--host", "sandbox-4", "-i", str(sandbox.inventory), "--json")
    assert r.returncode == 0, r.stderr
    [host] = json.loads(r.stdout)
    assert host["host"] == "sandbox-4" and host["release"] == history(sandbox, "sandbox-4").current
    assert host["version"] == health(sandbox, "sandbox-4")["version"]
    assert {s: (v["state"], v["health"]) for s, v in host["services"].items()} == \
        {"backend": ("running", "healthy"), "frontend": ("running", "healthy"), "nginx": ("running", "healthy")}
    assert "80->80" in host["services"]["nginx"]["ports"]
    assert host["lock"] is None and host["disk"]["store"] > 100_000_000 and host["disk"]["releases"] > 0
    assert host["backup"]["schedule"]["cron"] is None and host["backup"]["summary"][0] == "schedule: none"
