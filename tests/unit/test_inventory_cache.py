"""Inventory snapshots: a repeated load of an unchanged static inventory answers exactly
as ansible-core does, without importing it; any change to what Ansible reads is seen;
vault, Jinja, secret names and scripts are never written to the cache."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ferry.controller.inventory as inventory_mod
from ferry.controller import inventory_cache
from ferry.controller.inventory import Inventory
from ferry.errors import FerryError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventories"
PASSWORD = FIXTURES / "vault-password.txt"
ROOT = Path(__file__).resolve().parents[2]

LOWER = {"http_port": 80, "llm_model": "from-defaults", "extra": {"a": [1, 2]}}
SETS = {"llm_model": "from-set", "added": "yes", "greeting": "set-greeting"}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's own cache directory (not created yet)."""
    root = tmp_path / "cache" / "inventory"
    monkeypatch.setenv("FERRY_INVENTORY_CACHE_DIR", str(root))
    monkeypatch.delenv("FERRY_INVENTORY_CACHE", raising=False)
    return root


def snapshots(root: Path) -> list[Path]:
    return sorted(root.glob("*.json")) if root.exists() else []


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip())


INI = {
    "hosts.ini": """
        [web]
        web[01:03] ansible_host=10.0.0.1 http_port=8080

        [db]
        db1 ansible_host=10.0.1.1 ansible_port=2222 ansible_connection=local

        [prod:children]
        web
        db

        [prod:vars]
        llm_model=from-prod
        limits={"rpm": 60, "models": ["a", "b"]}

        [staging]
        stage-1 ansible_host=10.0.2.1 llm_model=from-host
    """,
    "group_vars/all.yml": "greeting: 你好\nflags: [true, false, null, 1.5]\n",
}

YAML = {
    "hosts.yml": """
        all:
          vars: {ansible_python_interpreter: /usr/bin/python3}
          children:
            web:
              vars: {ansible_group_priority: 10, tier: web, who: web}
              hosts:
                web1: {ansible_host: 10.0.0.1}
                web2: {ansible_host: 10.0.0.2, who: host}
            db:
              vars: {tier: db, who: db}
              hosts:
                db1: {ansible_host: 10.0.1.1}
                web2: {}
            prod:
              children: {web: {}, db: {}}
            bogus: {hostz: {}}
    """,
}

DIRECTORY = {
    "src/10-hosts.ini": """
        [web]
        web1 ansible_host=10.0.0.1
        web2 ansible_host=10.0.0.2
        [db]
        db1
        [prod:children]
        web
        db
    """,
    "src/20-more.yml": "voice:\n  hosts:\n    v1: {ansible_host: 10.0.3.1}\n",
    "src/group_vars/all.yml": "greeting: hi\nports: [80, 443]\n",
    "src/group_vars/prod/main.yml": "llm_model: prod-model\n",
    "src/group_vars/prod/more.yml": "limits: {rpm: 10}\n",
    "src/host_vars/web2.yml": "llm_model: web2-model\n",
    "src/host_vars/db1/main.yml": "ansible_port: 2200\n",
}

CASES = [
    pytest.param(INI, "hosts.ini", ["all", "prod", "prod:&web", "prod:!web02", "web*", "staging,db1"], id="ini"),
    pytest.param(YAML, "hosts.yml", ["all", "web", "web:&db", "prod:!web2", "web*"], id="yaml"),
    pytest.param(DIRECTORY, "src", ["all", "prod", "prod:&db", "prod:!web1", "web*", "voice"], id="directory"),
]


def answers(inv: Inventory, patterns: list[str]) -> dict:
    """Everything a caller can ask an inventory, as plain data."""
    out = {"listing": inv.listing(), "select": {p: [h.name for h in inv.select(p)] for p in patterns},
           "groups": {n: (g.hosts, g.children) for n, g in inv.groups.items()},
           "hosts": {n: (sorted(h.groups), h.vars, h.magic, sorted(h.secrets)) for n, h in inv.hosts.items()},
           "resolve": {n: h.resolve(LOWER, SETS) for n, h in inv.hosts.items()},
           "resolve_plain": {n: h.resolve() for n, h in inv.hosts.items()},
           "origin": {n: {k: inv.origin(n, k) for k in [*h.vars, "inventory_hostname", "nonexistent"]}
                      for n, h in inv.hosts.items()},
           "base_dir": inv.base_dir}
    return json.loads(json.dumps(out, default=str))


def no_ansible(*args, **kwargs):
    raise AssertionError("ansible-core was used on a snapshot")


@pytest.mark.parametrize("files, source, patterns", CASES)
def test_snapshot_answers_as_ansible_core_does(tmp_path, cache, monkeypatch, files, source, patterns):
    write(tmp_path, files)
    path = tmp_path / source
    monkeypatch.setenv("FERRY_INVENTORY_CACHE", "off")
    said_full: list[str] = []
    full = Inventory(path, warn=said_full.append)
    expected = answers(full, patterns)
    assert snapshots(cache) == []
    monkeypatch.delenv("FERRY_INVENTORY_CACHE")

    first = Inventory(path)                         # full load: writes the snapshot
    assert answers(first, patterns) == expected     # and each pattern's answer
    assert len(snapshots(cache)) == 1

    with monkeypatch.context() as m:
        m.setattr(inventory_mod, "_ansible", no_ansible)
        said: list[str] = []
        cached = Inventory(path, warn=said.append)
        assert answers(cached, patterns) == expected
        assert said == said_full and cached.warnings == full.warnings     # warnings replayed
        for host in cached.hosts.values():          # a caller changing what it got changes nothing
            for key, value in host.resolve(LOWER, SETS).items():
                if key in host.vars and isinstance(value, (dict, list)):
                    value.clear()
        assert answers(cached, patterns) == expected


def test_a_pattern_not_in_the_snapshot_is_answered_by_ansible_core_with_its_errors(tmp_path, cache, monkeypatch):
    write(tmp_path, INI)
    path = tmp_path / "hosts.ini"
    monkeypatch.setenv("FERRY_INVENTORY_CACHE", "off")
    full = Inventory(path)
    errors = {}
    for bad in ("prdo", "prod:&nope", "web:&db", "web[9]"):
        with pytest.raises(FerryError) as e:
            full.select(bad)
        errors[bad] = str(e.value)
    monkeypatch.delenv("FERRY_INVENTORY_CACHE")
    Inventory(path).select("all")
    for bad, message in errors.items():
        cached = Inventory(path)
        with pytest.raises(FerryError) as e:
            cached.select(bad)
        assert str(e.value) == message
    assert "db1" not in json.loads(snapshots(cache)[0].read_text())["patterns"].get("web:&db", [])
    cached = Inventory(path)
    assert [h.name for h in cached.select("db:staging")] == ["db1", "stage-1"]     # loads ansible-core now
    assert cached.hosts["db1"].resolve({}, {"x": 1})["x"] == 1
    with monkeypatch.context() as m:
        m.setattr(inventory_mod, "_ansible", no_ansible)
        assert [h.name for h in Inventory(path).select("db:staging")] == ["db1", "stage-1"]   # now stored


def subprocess_vars(path: Path, host: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    code = ("import json, sys; from ferry.controller.inventory import Inventory; "
            "i = Inventory(sys.argv[1]); print(json.dumps(i.hosts[sys.argv[2]].vars))")
    done = subprocess.run([sys.executable, "-c", code, str(path), host], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=120, check=True)
    return json.loads(done.stdout)


MERGE = {
    "hosts.ini": "[web]\nweb1\n",
    "group_vars/all.yml": "limits: {rpm: 1}\n",
    "group_vars/web.yml": "limits: {tpm: 2}\n",
}


def test_edited_group_vars_and_a_new_host_vars_file_are_seen(tmp_path, cache):
    write(tmp_path, INI)
    path = tmp_path / "hosts.ini"
    assert Inventory(path).hosts["web01"].vars["greeting"] == "你好"
    assert Inventory(path).hosts["web01"].vars["greeting"] == "你好"             # from the snapshot
    (tmp_path / "group_vars/all.yml").write_text("greeting: changed\n")
    assert Inventory(path).hosts["web01"].vars["greeting"] == "changed"
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars/web02.yml").write_text("greeting: mine\n")
    inv = Inventory(path)
    assert inv.hosts["web02"].vars["greeting"] == "mine" and inv.hosts["web01"].vars["greeting"] == "changed"
    (tmp_path / "host_vars/web02.yml").unlink()
    assert Inventory(path).hosts["web02"].vars["greeting"] == "changed"


def test_an_ansible_variable_in_the_environment_is_seen(tmp_path, cache):
    write(tmp_path, MERGE)
    path = tmp_path / "hosts.ini"
    assert subprocess_vars(path, "web1")["limits"] == {"tpm": 2}
    assert subprocess_vars(path, "web1", {"ANSIBLE_HASH_BEHAVIOUR": "merge"})["limits"] == {"rpm": 1, "tpm": 2}
    assert subprocess_vars(path, "web1", {"ANSIBLE_HASH_BEHAVIOUR": "replace"})["limits"] == {"tpm": 2}
    assert len(snapshots(cache)) == 3


def test_an_edited_ansible_cfg_in_the_working_directory_is_seen(tmp_path, cache):
    write(tmp_path, MERGE)
    path = tmp_path / "hosts.ini"
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    cfg = work / "ansible.cfg"
    cfg.write_text("[defaults]\nhash_behaviour = replace\n")
    assert subprocess_vars(path, "web1", cwd=work)["limits"] == {"tpm": 2}
    cfg.write_text("[defaults]\nhash_behaviour = merge\n")
    assert subprocess_vars(path, "web1", cwd=work)["limits"] == {"rpm": 1, "tpm": 2}
    assert subprocess_vars(path, "web1", cwd=work)["limits"] == {"rpm": 1, "tpm": 2}


def _vault_value() -> str:
    """The fixture's ``!vault`` ciphertext (encrypted with vault-password.txt)."""
    lines = (FIXTURES / "yaml/hosts.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "!vault |" in line) + 1
    body = [line.strip() for line in lines[start:start + 6] if line.strip()[:1] in ("$", *"0123456789abcdef")]
    return "\n".join(" " * 10 + line for line in body)


VAULTED = "all:\n  hosts:\n    h1:\n      db_user: !vault |\n" + _vault_value() + "\n"


@pytest.mark.parametrize("files, source, password", [
    pytest.param({"hosts.yml": VAULTED}, "hosts.yml", True, id="vault"),
    pytest.param({"hosts.ini": "[web]\nweb1 url='http://{{ inventory_hostname }}/'\n"}, "hosts.ini", False, id="jinja"),
    pytest.param({"hosts.ini": "[web]\nweb1 note='{# not a comment #}'\n"}, "hosts.ini", False, id="jinja-comment"),
    pytest.param({"hosts.ini": "[web]\nweb1\n", "group_vars/web.yml": "ansible_become_password: s3cret\n"},
                 "hosts.ini", False, id="become-password"),
    pytest.param({"hosts.ini": "[web]\nweb1\n", "host_vars/web1.yml": "llm_api_key: sk-123\n"},
                 "hosts.ini", False, id="api-key"),
    pytest.param({"hosts.ini": "[web]\nweb1\n", "host_vars/web1.yml": "llm: {api_key: sk-123}\n"},
                 "hosts.ini", False, id="nested-secret-name"),
    pytest.param({"hosts.yml": "all:\n  hosts:\n    h1: {since: 2024-01-02}\n"}, "hosts.yml", False, id="yaml-date"),
])
def test_what_is_never_cached(tmp_path, cache, files, source, password):
    write(tmp_path, files)
    inv = Inventory(tmp_path / source, [PASSWORD] if password else ())
    assert inv.select("all")
    inv.listing()
    assert snapshots(cache) == []


def test_an_inventory_script_is_never_cached(tmp_path, cache):
    script = tmp_path / "inventory.sh"
    script.write_text('#!/bin/sh\necho \'{"web": {"hosts": ["s1"]}, "_meta": {"hostvars": {"s1": {"a": 1}}}}\'\n')
    script.chmod(0o755)
    inv = Inventory(script)
    assert [h.name for h in inv.select("web")] == ["s1"] and inv.hosts["s1"].vars == {"a": 1}
    assert snapshots(cache) == []
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "hosts.ini").write_text("[db]\ndb1\n")
    (directory / "more.sh").write_bytes(script.read_bytes())
    (directory / "more.sh").chmod(0o755)
    assert [h.name for h in Inventory(directory).select("all")] == ["db1", "s1"]
    assert snapshots(cache) == []


def test_an_inventory_plugin_configuration_is_never_cached(tmp_path, cache):
    p = tmp_path / "gen.yml"
    p.write_text("plugin: ansible.builtin.generator\nhosts:\n  name: '{{ app }}-1'\nlayers:\n  app: [web, db]\n")
    assert inventory_cache.cache_key(p, tmp_path) is None
    assert sorted(h.name for h in Inventory(p).select("all")) == ["db-1", "web-1"]
    assert snapshots(cache) == []


def test_snapshot_modes_a_corrupt_one_and_off(tmp_path, cache, monkeypatch):
    write(tmp_path, INI)
    path = tmp_path / "hosts.ini"
    expected = Inventory(path).listing()
    [snap] = snapshots(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and stat.S_IMODE(snap.stat().st_mode) == 0o600

    for garbage in (b"{not json", b"\xff\xfe", b"[]", b'{"key": "x"}',
                    json.dumps({**json.loads(snap.read_text()), "hosts": [{"name": "web01"}]}).encode()):
        snap.write_bytes(garbage)
        assert Inventory(path).listing() == expected               # ignored, loaded in full, written again
        assert json.loads(snap.read_text())["key"] == snap.stem

    data = json.loads(snap.read_text())                            # the snapshot is what a hit reads
    next(h for h in data["hosts"] if h["name"] == "web01")["vars"]["llm_model"] = "from-the-snapshot"
    snap.write_text(json.dumps(data))
    assert Inventory(path).hosts["web01"].vars["llm_model"] == "from-the-snapshot"
    monkeypatch.setenv("FERRY_INVENTORY_CACHE", "off")             # off: neither read...
    assert Inventory(path).hosts["web01"].vars["llm_model"] == "from-prod"
    snap.unlink()
    Inventory(path)                                                # ... nor written
    assert snapshots(cache) == []


def test_a_cache_directory_others_can_read_is_not_used(tmp_path, cache):
    cache.mkdir(parents=True, mode=0o755)
    cache.chmod(0o755)
    write(tmp_path, INI)
    Inventory(tmp_path / "hosts.ini")
    assert snapshots(cache) == []


def test_only_the_most_recently_used_snapshots_are_kept(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(inventory_cache, "KEEP", 2)
    seen: set[Path] = set()
    for n in range(3):
        p = tmp_path / f"inv{n}.ini"
        p.write_text(f"[g]\nh{n}\n")
        Inventory(p)
        [new] = set(snapshots(cache)) - seen
        os.utime(new, (1000 + n, 1000 + n))                          # written in this order
        seen = set(snapshots(cache))
    kept = snapshots(cache)
    assert len(kept) == 2
    assert {json.loads(k.read_text())["hosts"][0]["name"] for k in kept} == {"h1", "h2"}


def test_a_repeated_command_does_not_import_ansible(tmp_path, cache):
    write(tmp_path, INI)
    code = textwrap.dedent("""
        import json, sys
        from ferry.controller.inventory import Inventory
        inv = Inventory(sys.argv[1])
        hosts = inv.select("prod")
        resolved = hosts[0].resolve({"http_port": 1}, {"llm_model": "x"})
        listing = inv.listing()
        print(json.dumps({"ansible": "ansible" in sys.modules, "model": resolved["llm_model"],
                          "hosts": sorted(listing["_meta"]["hostvars"])}))
    """)

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hosts.ini")], capture_output=True,
                              text=True, timeout=120, check=True, cwd=ROOT)
        return json.loads(done.stdout)

    first, second = run(), run()
    assert first["ansible"] is True                                # the first run wrote the snapshot
    assert second == {**first, "ansible": False}


def test_the_key_has_ansible_cores_installed_version():
    from importlib.metadata import version
    assert inventory_cache._ansible_core_version() == version("ansible-core")


def test_text_beyond_ascii_round_trips(tmp_path, cache, monkeypatch):
    p = tmp_path / "hosts.yml"
    p.write_text('all:\n  hosts:\n    h1: {greeting: "你好 \\u2028 \\U0001F600"}\n', encoding="utf-8")
    monkeypatch.setenv("FERRY_INVENTORY_CACHE", "off")
    expected = Inventory(p).hosts["h1"].vars
    monkeypatch.delenv("FERRY_INVENTORY_CACHE")
    Inventory(p)
    assert len(snapshots(cache)) == 1
    with monkeypatch.context() as m:
        m.setattr(inventory_mod, "_ansible", no_ansible)
        assert Inventory(p).hosts["h1"].vars == expected
