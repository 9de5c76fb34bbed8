"""Ferry's inventory against Ansible's own answer, host by host.

For each inventory of ``tests/fixtures/inventories`` (INI with ranges and children,
YAML with an inline ``!vault`` value and group priority, a directory source; with
``group_vars/<g>/`` directories, ``host_vars/<h>.yml`` and ``host_vars/<h>/``, Jinja
values and a vault-encrypted file), the CLIs installed with ansible-core run as
subprocesses:

- ``ansible-inventory --list``: the groups (their hosts in order, their children) and,
  for every host, the variable names and every value that has no Jinja and no vault
  must be exactly Ferry's;
- ``ansible`` (ad hoc) with one ``debug`` task: every variable of every host as
  Ansible renders it (Jinja, decrypted vault) must be exactly Ferry's value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.controller.inventory import MASK, Inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventories"
PASSWORD = FIXTURES / "vault-password.txt"
SOURCES = ["ini/hosts.ini", "yaml/hosts.yml", "dir"]
BIN = Path(sys.executable).parent

#: The ``debug`` message: a mapping of the host's variable names to their values as
#: Ansible renders them (the names come in as an extra variable).
RENDER = "{{ dict(ferry_names[inventory_hostname] | zip(query('ansible.builtin.vars', *ferry_names[inventory_hostname]))) }}"


def run(*argv: str, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{argv[0]} failed: {done.stderr[-2000:]}"
    return done.stdout


def ansible_inventory(source: Path) -> dict:
    return json.loads(run(BIN / "ansible-inventory", "-i", source, "--vault-password-file", PASSWORD, "--list"))


def ansible_rendered(source: Path, names: dict[str, list[str]], tmp: Path) -> dict[str, dict]:
    """Every host's variables ``names[host]``, rendered by Ansible (an ad-hoc ``debug``
    task; its default output is ``host | SUCCESS => {json}`` per host)."""
    (tmp / "names.json").write_text(json.dumps({"ferry_names": names}))
    out = run(BIN / "ansible", "all", "-i", source, "--vault-password-file", PASSWORD,
              "-e", f"@{tmp / 'names.json'}", "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": RENDER}))
    found: dict[str, dict] = {}
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^(\S+) \| SUCCESS => ", out, re.M):
        found[m.group(1)] = decoder.raw_decode(out, m.end())[0]["msg"]
    assert sorted(found) == sorted(names), out[-2000:]
    return found


def as_json(value):
    return json.loads(json.dumps(value, default=str))


def templated(value) -> bool:
    """A value ansible-inventory shows unrendered: Jinja text or a vault blob."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return "__ansible_vault" in value or any(templated(v) for v in value.values())
    if isinstance(value, list):
        return any(templated(v) for v in value)
    return False


@pytest.mark.parametrize("source", SOURCES)
def test_every_host_resolves_exactly_as_ansible(source, tmp_path):
    path = FIXTURES / source
    theirs = ansible_inventory(path)
    ours = Inventory(path, [PASSWORD])
    listing = ours.listing("all", mask=False)

    # groups: same groups, same hosts in the same order, same children
    assert {k: v for k, v in listing.items() if k != "_meta"} == {k: v for k, v in theirs.items() if k != "_meta"}
    their_vars = theirs["_meta"]["hostvars"]
    assert sorted(ours.hosts) == sorted(their_vars)

    rendered = ansible_rendered(path, {h: sorted(v) for h, v in their_vars.items()}, tmp_path)
    compared = 0
    for host, values in their_vars.items():
        mine = ours.hosts[host].vars
        assert sorted(mine) == sorted(values), host
        for key, value in values.items():
            if not templated(value):
                assert as_json(mine[key]) == value, (host, key)
            assert as_json(mine[key]) == rendered[host][key], (host, key)
            compared += 1
    assert compared == sum(len(v) for v in their_vars.values()) > 0


@pytest.mark.parametrize("pattern", ["all", "prod:!db1", "web[1:]:staging", "prod:&db"])
def test_host_patterns_select_what_ansible_selects(pattern):
    out = run(BIN / "ansible", pattern, "-i", FIXTURES / "ini/hosts.ini", "--vault-password-file", PASSWORD,
              "--list-hosts")
    theirs = [line.strip() for line in out.splitlines()[1:] if line.strip()]
    ours = Inventory(FIXTURES / "ini/hosts.ini", [PASSWORD]).select(pattern)
    assert [h.name for h in ours] == theirs


def test_fixture_features_are_really_exercised():
    """The comparison above covers what it claims: ranges, group_vars dirs, host_vars
    dirs, Jinja, both kinds of vault, group priority, a directory source."""
    ini = Inventory(FIXTURES / "ini/hosts.ini", [PASSWORD])
    assert [h.name for h in ini.select("web")] == ["web01", "web02", "web03"]
    assert [h.name for h in ini.select("db")] == ["db1", "db-a.intra", "db-b.intra"]
    web02 = ini.hosts["web02"].vars
    assert web02["llm_model"] == "web02-model"                     # host_vars/web02/ (a directory)
    assert web02["llm_api_url"] == "http://web02:9090/v1"          # Jinja over host_vars/web02/ports.yml
    assert ini.hosts["web01"].vars["ansible_user"] == "deploy"     # inline host var beats [all:vars]
    assert ini.hosts["db1"].vars["llm_api_key"] == "sk-fixture-0123456789"   # group_vars/prod/vault.yml
    assert ini.hosts["db1"].vars["mysql_port"] == 2222                       # native type from Jinja
    assert ini.hosts["stage-1"].vars["llm_model"] == "small-model"
    yml = Inventory(FIXTURES / "yaml/hosts.yml", [PASSWORD])
    assert yml.hosts["chat-eu-1"].vars["region"] == "eu"           # deeper group wins over priority
    assert yml.hosts["chat-eu-1"].vars["stack_port"] == 3001       # same depth: ansible_group_priority 10
    assert yml.hosts["chat-eu-1"].vars["app_url"] == "https://chat-eu-1:3001/"
    assert yml.hosts["chat-1.example"].vars["wechatmp_app_secret"] == "wechat-app-s3cret"   # inline !vault
    assert yml.hosts["chat-1.example"].vars["instances"]["wechat"]["port"] == 3100          # group_vars/chat/
    d = Inventory(FIXTURES / "dir", [PASSWORD])
    assert d.hosts["voice-1"].vars["xiaozhi_public_host"] == "voice-1.intra.example"        # two files, one group
    assert d.hosts["bots-1"].vars["ferry_connect_timeout"] == 5


def test_listing_masks_secrets_and_keeps_the_rest():
    ini = Inventory(FIXTURES / "ini/hosts.ini", [PASSWORD]).listing("prod")
    db1 = ini["_meta"]["hostvars"]["db1"]
    # vault file values, a value built from one, and secret names are masked
    assert db1["llm_api_key"] == db1["prod_db_password"] == db1["db_dsn"] == MASK
    assert db1["llm_model"] == "prod-model" and db1["ansible_host"] == "10.0.1.1"
    assert "stage-1" not in ini["_meta"]["hostvars"]
    text = json.dumps(ini, ensure_ascii=False)
    assert "Pr0d-db-pa55word" not in text and "sk-fixture" not in text
    yml = Inventory(FIXTURES / "yaml/hosts.yml", [PASSWORD]).listing()
    chat = yml["_meta"]["hostvars"]["chat-1.example"]
    assert chat["wechatmp_app_secret"] == chat["auth_header"] == MASK
    assert "wechat-app-s3cret" not in json.dumps(yml)


def test_inventory_command_json_is_ansible_shaped_and_masked(tmp_path):
    out = run(BIN / "ferry", "--project", tmp_path, "inventory", "-i", FIXTURES / "ini/hosts.ini",
              "--vault-password-file", PASSWORD, "--json")
    data = json.loads(out)
    theirs = ansible_inventory(FIXTURES / "ini/hosts.ini")
    assert {k: v for k, v in data.items() if k != "_meta"} == {k: v for k, v in theirs.items() if k != "_meta"}
    assert sorted(data["_meta"]["hostvars"]) == sorted(theirs["_meta"]["hostvars"])
    assert data["_meta"]["hostvars"]["web02"]["llm_api_key"] == MASK
    assert "Pr0d-db-pa55word" not in out
    table = run(BIN / "ferry", "--project", tmp_path, "inventory", "-i", FIXTURES / "ini/hosts.ini",
                "--host", "web02", env={"ANSIBLE_VAULT_PASSWORD_FILE": str(PASSWORD), "COLUMNS": "200"})
    assert "web02-model" in table and "llm_api_url: http://web02:9090/v1" in table
    assert "sk-fixture" not in table and "web01" not in table


def test_host_vars_added_after_a_first_load_count_on_the_next(tmp_path):
    """ansible-core caches, per process, which host_vars/ directories and files exist; a
    second load in the same process (the sandbox's world hosts got their become
    password in host_vars/ after the inventory had been read) must see what was added."""
    (tmp_path / "inventory.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1}\n    h2: {}\n")
    assert "ansible_become_password" not in Inventory(tmp_path / "inventory.yml").hosts["h1"].vars
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "h1.yml").write_text("ansible_become_password: pw-one\n")
    assert Inventory(tmp_path / "inventory.yml").hosts["h1"].vars["ansible_become_password"] == "pw-one"
    (tmp_path / "host_vars" / "h2.yml").write_text("llm_model: two\n")          # a file, the directory known
    assert Inventory(tmp_path / "inventory.yml").hosts["h2"].vars["llm_model"] == "two"
