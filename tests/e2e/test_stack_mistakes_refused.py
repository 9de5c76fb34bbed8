"""End to end: a stack with a mistake is refused before anything reaches a host - a
port used by two services, a template variable no defaults.yml declares, a bind mount
outside the stack's directory - and so is a variable that breaks its declared type (a
port out of range, YAML in a port, a ferry_root with ' #' or no leading '/', an empty
required value). One line naming the file (or --set) and key; no host contacted (an
unreachable host in the selection is never tried); hosts unchanged."""

from __future__ import annotations

import shutil

import pytest
import yaml

from stack_e2e import STACKS, Hosts, bundle, inv_cli

pytestmark = pytest.mark.e2e
STACK = "corp-wechat-gptbot"
SETS = ["gptbot_we_corp_id=ww", "gptbot_we_agent_id=1", "gptbot_we_corp_secret=s", "gptbot_we_token=t",
        "gptbot_we_encoding_aes_key=a"]


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    return bundle(STACKS / STACK, tmp_path_factory.mktemp("dist-refused"))


@pytest.fixture(scope="module")
def inventory_with_ghost(sandbox, tmp_path_factory):
    """The sandbox inventory plus `ghost`, an address nobody answers, in group staging."""
    d = tmp_path_factory.mktemp("inv")
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy(sandbox.state_dir / f, d / f)
    data = yaml.safe_load(sandbox.inventory.read_text())
    staging = data["all"]["children"]["staging"]["hosts"]
    subnet = staging["sandbox-2"]["ansible_host"].rsplit(".", 1)[0]
    staging["ghost"] = {"ansible_host": f"{subnet}.250", "ferry_connect_timeout": 20}
    (d / "inventory.yml").write_text(yaml.safe_dump(data))
    return d / "inventory.yml"


def broken(good, tmp, template, edit):
    """A real bundle (images reused from ``good``) of the stack with ``template`` edited:
    a bundled file edited in place would be refused by the integrity check instead."""
    stack = tmp / "stack" / STACK
    shutil.copytree(STACKS / STACK, stack, ignore=shutil.ignore_patterns("images"))
    t = stack / "templates" / template
    t.write_text(edit(t.read_text()))
    b = bundle(stack, tmp / "dist", "1.0.0-broken", base=good)
    return b, b / "stack" / "templates" / template


SIDECAR = ("  sidecar:\n    image: {{ images['corp-wechat-gptbot'] }}\n    ports:\n"
           "      - \"{{ gptbot_port }}:8080\"\n")


@pytest.mark.parametrize("template,edit,needles", [
    ("compose.yml.j2", lambda t: t + SIDECAR,
     ["key 'services.sidecar.ports'", "host port 50008/tcp is also published by service 'corp-wechat-gptbot'"]),
    ("config.yaml.j2", lambda t: t.replace("port: 50008", "port: 50008\n  publicUrl: {{ gptbot_public_url | to_yaml }}"),
     ["variable 'gptbot_public_url' is used but no defaults.yml declares it"]),
    ("compose.yml.j2", lambda t: t.replace('(paths.data ~ "/db:/apps/db") | to_yaml', '"/var/lib/gptbot/db:/apps/db"'),
     ["key 'services.corp-wechat-gptbot.volumes[1]'", "bind-mount source /var/lib/gptbot/db is outside the stack's directory"]),
], ids=["port-used-twice", "variable-missing", "mount-outside-stack-dir"])
def test_stack_mistake_is_refused_before_any_host_is_touched(sandbox, good_bundle, inventory_with_ghost, tmp_path,
                                                             template, edit, needles):
    hosts = Hosts(sandbox.inventory)
    witnesses = {h: hosts.state(h) for h in ("sandbox-2", "sandbox-3")}
    b, t = broken(good_bundle, tmp_path, template, edit)
    args = ["deploy", "--host", "staging", "--stack", STACK, "-i", str(inventory_with_ghost), "--bundle", str(b)]
    for s in SETS:
        args += ["--set", s]
    r = inv_cli(*args)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {t}") and "unreachable" not in err, err   # the ghost was never tried
    for n in needles:
        assert n in err, err
    assert {h: hosts.state(h) for h in witnesses} == witnesses


@pytest.mark.parametrize("sets,group_vars,needles", [
    (["gptbot_port=99999"], {}, ["error: --set: key 'gptbot_port' (host ", "): 99999 must be a port"]),
    ([], {"gptbot_port": "50008\n    privileged: true"},
     ["inventory-", ".yml:", ": key 'gptbot_port' (host ", "): '50008\\n    privileged: true' must be a port"]),
    (["ferry_root=/opt/ferry #new"], {}, ["error: --set: key 'ferry_root' (host ", "): '/opt/ferry #new' must be an absolute"]),
    ([], {"ferry_root": "srv/ferry"}, ["inventory-", ": key 'ferry_root' (host ", "): 'srv/ferry' must be an absolute"]),
    (["gptbot_gpt_model="], {}, ["error: --set: key 'gptbot_gpt_model' (host ", "): is empty; a value is required"]),
], ids=["port-out-of-range", "yaml-in-a-port", "ferry-root-with-comment", "ferry-root-relative", "required-empty"])
def test_bad_variable_is_refused_before_any_host_is_touched(sandbox, good_bundle, inventory_with_ghost, tmp_path,
                                                             sets, group_vars, needles):
    hosts = Hosts(sandbox.inventory)
    witnesses = {h: hosts.state(h) for h in ("sandbox-2", "sandbox-3")}
    inventory = inventory_with_ghost
    if group_vars:
        data = yaml.safe_load(inventory_with_ghost.read_text())
        data["all"]["children"]["staging"].setdefault("vars", {}).update(group_vars)
        inventory = inventory_with_ghost.parent / f"inventory-{tmp_path.name}.yml"
        inventory.write_text(yaml.safe_dump(data))
    args = ["deploy", "--host", "staging", "--stack", STACK, "-i", str(inventory), "--bundle", str(good_bundle)]
    for s in SETS + sets:
        args += ["--set", s]
    r = inv_cli(*args)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1 and "unreachable" not in err, err
    for n in needles:
        assert n in err, err
    assert {h: hosts.state(h) for h in witnesses} == witnesses
