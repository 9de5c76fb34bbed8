"""End to end: `inv deploy` of llm-chat onto fresh sandbox hosts over real SSH.

prod (sandbox-1) is deployed; staging hosts stay untouched by design and serve as the
"nothing changed" witnesses of the bad-input tests.
"""

from __future__ import annotations

import io
import json
import os
import shutil
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
from ferry.errors import FerryError
from ferry.controller.inventory import Inventory
from ferry.roles import role_defaults
from ferry.host.transport.ssh import connect_host
from ferry.ui import UI
from stack_e2e import Hosts as SandboxHosts, bundle as stack_bundle, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-1", fresh=True)]
ROOT = Path(__file__).resolve().parents[2]


def api_deploy(inventory: Path, pattern: str, bundle: Path, sets=None):
    out = io.StringIO()
    ui = UI(Console(file=out, width=200))
    plan = prepare(inventory, pattern, "llm-chat", bundle, bundle.parent, sets or {})
    reports = deploy(plan, ui)
    return reports, out.getvalue()


class Hosts(SandboxHosts):
    """The shared sandbox access, for the llm-chat project."""

    def containers(self, name, project="llm-chat"):
        return super().containers(name, project)


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    b = build_bundle(ROOT / "stacks" / "llm-chat", dist, None, UI(Console(file=io.StringIO())),
                     docker_settings=role_defaults("install-docker-offline"))
    return b.path


@pytest.fixture(scope="module")
def first_deploy(sandbox, hosts, bundle_path):
    """The fresh prod host, then `inv deploy --host prod` through the CLI."""
    before = hosts.sh("sandbox-1", "command -v docker || echo no-docker; ls /opt/ferry 2>&1 || true")
    r = inv_cli("deploy", "--host", "prod", "-i", str(sandbox.inventory), "--bundle", str(bundle_path))
    return before, r


def test_bundle_checksums_pass_sha256sum_and_manifest_lists_images(bundle_path):
    r = subprocess.run(["sha256sum", "-c", "--quiet", "checksums.sha256"], cwd=bundle_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((bundle_path / "manifest.json").read_text())
    assert {i["ref"] for i in manifest["images"]} == {"llm-chat-backend:1.0.0", "llm-chat-frontend:1.0.0", "nginx:1.22"}
    for image in manifest["images"]:
        assert image["id"].startswith("sha256:") and image["size"] > 0 and image["tags"]
        assert (bundle_path / image["config"]).is_file() and image["layers"]
        assert sum((bundle_path / layer["blob"]).stat().st_size for layer in image["layers"]) > 1_000_000
    paths = {f["path"] for f in manifest["files"]}
    assert "docker/docker-compose" in paths and any(p.startswith("docker/debs/docker.io_") for p in paths)
    assert all(len(f["sha256"]) == 64 and f["size"] >= 0 for f in manifest["files"])


def test_first_deploy_brings_up_docker_and_a_healthy_stack(first_deploy, hosts):
    before, r = first_deploy
    assert "no-docker" in before and "No such file" in before      # fresh host: nothing there
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    host = hosts.host("sandbox-1")
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled                  # under systemd
    for svc in ("backend", "frontend", "nginx"):
        c = host.docker(f"llm-chat-{svc}-1")
        assert c.is_running
        assert c.inspect()["State"]["Health"]["Status"] == "healthy"
    with urllib.request.urlopen(f"http://{hosts.ip('sandbox-1')}/api/health", timeout=10) as resp:
        body = json.loads(resp.read())
    assert resp.status == 200 and body["status"] == "ok" and body["version"] == "1.0.0"
    assert "checks passed" in r.stdout


def test_host_cannot_reach_any_network(hosts, first_deploy):
    res = hosts.t("sandbox-1").run(["curl", "-s", "-m", "5", "-o", "/dev/null", "http://deb.debian.org/"],
                                   check=False)
    assert res.rc != 0


def test_secrets_are_0600_and_kept_across_deploys(hosts, first_deploy):
    host = hosts.host("sandbox-1")
    env = host.file("/opt/ferry/stacks/llm-chat/current/.env")
    assert env.mode == 0o600 and env.user == "root"
    assert host.file("/opt/ferry/stacks/llm-chat/secrets.json").mode == 0o600
    assert host.file("/etc/docker/daemon.json").contains("max-size")
    key = json.loads(hosts.sh("sandbox-1", "cat /opt/ferry/stacks/llm-chat/secrets.json"))["SECRET_KEY"]
    assert f"SECRET_KEY='{key}'" in env.content_string
    assert key not in first_deploy[1].stdout


def test_second_deploy_changes_nothing_and_says_so(sandbox, hosts, bundle_path, first_deploy):
    before = hosts.containers("sandbox-1")
    r = inv_cli("deploy", "--host", "prod", "-i", str(sandbox.inventory), "--bundle", str(bundle_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "sandbox-1: uploaded 0 B, loaded 0 images, recreated 0 containers; nothing changed" in r.stdout
    assert hosts.containers("sandbox-1") == before


def test_a_noop_redeploy_costs_three_round_trips_and_no_version_probe(sandbox, hosts, bundle_path, first_deploy):
    """Issue 12: the lock and every fact in one batched command, verification's health
    URLs and bind sources, the audit line with the lock's release: 3 SSH round trips,
    counted by the real transport. dockerd and Compose are not asked their versions:
    the first deploy kept their answer for these very files."""
    [report], out = api_deploy(sandbox.inventory, "prod", bundle_path)
    assert report.status == "ok" and not [n for n, r, _ in report.results if r.changed], out
    assert report.checks and all(c.ok for c in report.checks)
    assert report.round_trips == 3, out
    installer = next(r for n, r, _ in report.results if n == "install-docker-offline")
    assert installer.metrics["version_probes"] == 0
    kept = hosts.sh("sandbox-1", "cat /opt/ferry/engine-facts")
    assert "dockerd=Docker version 20.10" in kept and "compose=2." in kept


def test_changing_one_host_var_recreates_only_its_service(sandbox, hosts, bundle_path, first_deploy):
    before = hosts.containers("sandbox-1")
    reports, out = api_deploy(sandbox.inventory, "prod", bundle_path, {"llm_model": "qwen2-72b-instruct"})
    assert not reports[0].error, out
    after = hosts.containers("sandbox-1")
    assert after["backend"][0] != before["backend"][0]
    assert after["frontend"] == before["frontend"] and after["nginx"] == before["nginx"]
    assert "LLM_MODEL='qwen2-72b-instruct'" in hosts.sh("sandbox-1", "cat /opt/ferry/stacks/llm-chat/current/.env")
    assert "changed keys: LLM_MODEL" in out and "qwen2-72b-instruct" not in out
    with urllib.request.urlopen(f"http://{hosts.ip('sandbox-1')}/api/health", timeout=10) as resp:
        assert json.loads(resp.read())["model"] == "qwen2-72b-instruct"
    # a change to nginx.conf (bind-mounted) recreates nginx only
    before = after
    reports, out = api_deploy(sandbox.inventory, "prod", bundle_path,
                              {"llm_model": "qwen2-72b-instruct", "client_max_body_size": "32m"})
    after = hosts.containers("sandbox-1")
    assert after["nginx"][0] != before["nginx"][0]
    assert after["backend"] == before["backend"] and after["frontend"] == before["frontend"]
    assert "client_max_body_size 32m" in hosts.sh("sandbox-1", "docker exec llm-chat-nginx-1 cat /etc/nginx/conf.d/default.conf")


def test_data_survives_a_redeploy(sandbox, hosts, bundle_path, first_deploy):
    ip = hosts.ip("sandbox-1")
    req = urllib.request.Request(f"http://{ip}/api/conversations", data=json.dumps({"title": "keep me"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
    api_deploy(sandbox.inventory, "prod", bundle_path, {"llm_model": "after-data"})
    with urllib.request.urlopen(f"http://{ip}/api/conversations", timeout=10) as resp:
        assert "keep me" in [c["title"] for c in json.loads(resp.read())]
    assert hosts.host("sandbox-1").file("/opt/ferry/stacks/llm-chat/data/db/chat.db").exists


def test_verify_on_demand_fails_when_a_container_is_down(sandbox, hosts, bundle_path, first_deploy):
    ok = inv_cli("verify", "--host", "prod", "-i", str(sandbox.inventory))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FAIL" not in ok.stdout and "/api/health" in ok.stdout
    hosts.sh("sandbox-1", "docker stop -t 1 llm-chat-frontend-1 >/dev/null")
    bad = inv_cli("verify", "--host", "prod", "-i", str(sandbox.inventory))
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "frontend" in bad.stdout
    reports, out = api_deploy(sandbox.inventory, "prod", bundle_path, {"llm_model": "after-data"})
    assert all(c.ok for c in reports[0].checks), out


# -- bad input: one clear line, nothing changed on any host ----------------------------

def _edited_inventory(sandbox, tmp_path, edit) -> Path:
    data = yaml.safe_load(sandbox.inventory.read_text())
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy(sandbox.state_dir / f, tmp_path / f)
    edit(data, tmp_path)
    p = tmp_path / "inventory.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str):
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_bad_inputs_fail_with_one_line_and_change_nothing(sandbox, hosts, bundle_path, first_deploy, tmp_path):
    witnesses = {h: hosts.state(h) for h in ("sandbox-1", "sandbox-2")}
    inv = str(sandbox.inventory)

    r = inv_cli("deploy", "--host", "prdo", "-i", inv, "--bundle", str(bundle_path))
    _assert_one_line_error(r, "unknown host or group 'prdo'", "prod", "staging", "sandbox-1")

    bad_yaml = tmp_path / "broken.yml"
    bad_yaml.write_text("all:\n  children:\n    prod:\n      hosts:\n        a: {ansible_host: 1\n")
    r = inv_cli("deploy", "--host", "prod", "-i", str(bad_yaml), "--bundle", str(bundle_path))
    _assert_one_line_error(r, str(bad_yaml) + ":", "YAML parsing failed")

    # a template variable with no value: named, before any connection (a real bundle of
    # an edited stack: editing a bundled template in place is refused by the integrity check)
    stack_copy = tmp_path / "stack-undef" / "llm-chat"
    shutil.copytree(ROOT / "stacks" / "llm-chat", stack_copy, ignore=shutil.ignore_patterns("images"))
    tpl = stack_copy / "templates" / "nginx.conf.j2"
    tpl.write_text(tpl.read_text().replace("server_name _;", "server_name {{ public_hostname }};"))
    b2 = stack_bundle(stack_copy, tmp_path / "dist-undef", "1.0.0-undef", base=bundle_path)
    r = inv_cli("deploy", "--host", "prod,staging", "-i", inv, "--bundle", str(b2))
    _assert_one_line_error(r, "public_hostname", "nginx.conf.j2")

    # a bundle file whose sha256 differs from the manifest (one flipped byte)
    b3 = tmp_path / "bundle-flipped"
    shutil.copytree(bundle_path, b3, copy_function=os.link)
    frontend = next(i for i in json.loads((b3 / "manifest.json").read_text())["images"] if i["service"] == "frontend")
    victim = b3 / frontend["layers"][-1]["blob"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))
    r = inv_cli("deploy", "--host", "staging", "-i", inv, "--bundle", str(b3))
    _assert_one_line_error(r, victim.name, "does not match manifest")

    # an unreachable host: fails within its timeout, before touching the reachable one
    def ghost(data, _):
        prod = data["all"]["children"]["prod"]["hosts"]
        subnet = prod["sandbox-1"]["ansible_host"].rsplit(".", 1)[0]
        prod["ghost"] = {"ansible_host": f"{subnet}.250", "ferry_connect_timeout": 3}
    (tmp_path / "ghost").mkdir()
    p = _edited_inventory(sandbox, tmp_path / "ghost", ghost)
    started = time.monotonic()
    r = inv_cli("deploy", "--host", "prod", "-i", str(p), "--bundle", str(bundle_path))
    assert time.monotonic() - started < 60
    _assert_one_line_error(r, "ghost", "unreachable")

    # a host key that differs from known_hosts
    def wrong_key(data, d):
        other = (d / "known_hosts").read_text().splitlines()
        ip1 = data["all"]["children"]["prod"]["hosts"]["sandbox-1"]["ansible_host"]
        ip2 = data["all"]["children"]["staging"]["hosts"]["sandbox-2"]["ansible_host"]
        swapped = [l.replace(ip2, "SWAP").replace(ip1, ip2).replace("SWAP", ip1) for l in other]
        (d / "known_hosts").write_text("\n".join(swapped) + "\n")
    (tmp_path / "mitm").mkdir()
    p = _edited_inventory(sandbox, tmp_path / "mitm", wrong_key)
    r = inv_cli("deploy", "--host", "prod", "-i", str(p), "--bundle", str(bundle_path))
    _assert_one_line_error(r, "sandbox-1", "differs from", "known_hosts")

    assert {h: hosts.state(h) for h in witnesses} == witnesses


def test_check_mode_shows_the_diff_and_changes_nothing(sandbox, hosts, bundle_path, first_deploy):
    before = (hosts.state("sandbox-1"), hosts.sh("sandbox-1", "cat /opt/ferry/stacks/llm-chat/current/.env"))
    r = inv_cli("deploy", "--host", "prod", "-i", str(sandbox.inventory), "--bundle", str(bundle_path),
                "--set", "llm_model=check-mode-model", "--set", "client_max_body_size=64m", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(check mode)" in r.stdout and "would write a release" in r.stdout
    assert "changed keys: LLM_MODEL" in r.stdout and "+    client_max_body_size 64m;" in r.stdout
    assert "check-mode-model" not in r.stdout                     # a .env value is never shown
    after = (hosts.state("sandbox-1"), hosts.sh("sandbox-1", "cat /opt/ferry/stacks/llm-chat/current/.env"))
    assert after == before


def test_deploy_from_an_ini_inventory_with_ranges_group_vars_dir_and_vault(sandbox, hosts, bundle_path, first_deploy,
                                                                           tmp_path):
    """The sandbox's inventory rewritten as Ansible INI (a host range whose addresses
    come from host_vars files, children, [all:vars]) with group_vars/prod/ as a
    directory holding Jinja and a vault-encrypted file: deployed through the CLI,
    the values Ansible would give reach the host, the secret never the output."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    groups = data["all"]["children"]
    common = data["all"]["vars"]
    for f in (common["ansible_ssh_private_key_file"], common["ferry_known_hosts"]):
        shutil.copy(sandbox.state_dir / f, tmp_path / f)
    prod = groups["prod"]["hosts"]
    staging = groups["staging"]["hosts"]
    (tmp_path / "host_vars").mkdir()
    for name, v in staging.items():
        (tmp_path / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump({"ansible_host": v["ansible_host"]}))
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in staging)
    lines = ["[prod]"] + [f"{n} ansible_host={v['ansible_host']} ansible_port={v['ansible_port']}" for n, v in prod.items()]
    lines += ["", "[staging]", f"sandbox-[{numbers[0]}:{numbers[-1]}]", "", "[chat:children]", "prod", "staging",
              "", "[all:vars]"] + [f"{k}={v}" for k, v in common.items()]
    (tmp_path / "hosts.ini").write_text("\n".join(lines) + "\n")
    gv = tmp_path / "group_vars" / "prod"
    gv.mkdir(parents=True)
    (gv / "main.yml").write_text('llm_model: "ini-{{ inventory_hostname }}"\n'
                                 'llm_api_url: "http://llm-gateway.internal:{{ backend_port }}/v1"\n')
    secret = "sk-ini-vault-0123456789"
    (gv / "vault.yml").write_text(f"llm_api_key: {secret}\n")
    password = tmp_path / "vault-password.txt"
    password.write_text("e2e-vault-password\n")
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "ansible-vault"), "encrypt", "--vault-password-file", str(password), str(gv / "vault.yml")],
                   check=True, capture_output=True)
    assert (gv / "vault.yml").read_text().startswith("$ANSIBLE_VAULT")

    # what Ferry resolves is what Ansible resolves (staging addresses come through the range + host_vars)
    shown = json.loads(inv_cli("inventory", "-i", str(tmp_path / "hosts.ini"), "--vault-password-file", str(password),
                               "--json").stdout)
    theirs = json.loads(subprocess.run([str(bin_dir / "ansible-inventory"), "-i", str(tmp_path / "hosts.ini"),
                                        "--vault-password-file", str(password), "--list"],
                                       capture_output=True, text=True, check=True).stdout)
    assert shown["staging"] == theirs["staging"] == {"hosts": sorted(staging, key=lambda n: int(n.rsplit("-", 1)[1]))}
    for name, v in staging.items():
        assert shown["_meta"]["hostvars"][name]["ansible_host"] == v["ansible_host"]
    assert shown["_meta"]["hostvars"]["sandbox-1"]["llm_api_key"] == "********"

    r = inv_cli("deploy", "--host", "prod", "-i", str(tmp_path / "hosts.ini"), "--vault-password-file", str(password),
                "--bundle", str(bundle_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert secret not in r.stdout + r.stderr
    env = hosts.sh("sandbox-1", "cat /opt/ferry/stacks/llm-chat/current/.env")
    assert "LLM_MODEL='ini-sandbox-1'" in env and f"LLM_API_KEY='{secret}'" in env
    assert "LLM_API_URL='http://llm-gateway.internal:8000/v1'" in env     # Jinja saw the stack's defaults
    with urllib.request.urlopen(f"http://{hosts.ip('sandbox-1')}/api/health", timeout=10) as resp:
        assert resp.status == 200

    # a wrong vault password: one line saying vault, nothing changed
    before = hosts.state("sandbox-1")
    password.write_text("not-the-password\n")
    r = inv_cli("deploy", "--host", "prod", "-i", str(tmp_path / "hosts.ini"), "--vault-password-file", str(password),
                "--bundle", str(bundle_path))
    _assert_one_line_error(r, "vault", str(gv / "vault.yml"))
    assert hosts.state("sandbox-1") == before
