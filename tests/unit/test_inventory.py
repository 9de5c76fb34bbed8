"""Inventory through ansible-core: host patterns, Ferry's layering around Ansible's
precedence, lazy Jinja, warnings, and the one-line errors (malformed INI/YAML, vault,
unknown host or group). Ansible's own answer is compared in test_inventory_ansible.py."""

import datetime
import json
import textwrap
from pathlib import Path

import jinja2
import pytest

from ferry.controller.inventory import HONOURED_ANSIBLE_VARS, Inventory, Unrendered, merge_vars, parse_set_args
from ferry.errors import FerryError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventories"
PASSWORD = FIXTURES / "vault-password.txt"

INI = """
[web]
web[1:3] ansible_host=10.0.0.[1:3]

[db]
db1 ansible_host=10.0.1.1 ansible_port=2222

[prod:children]
web
db

[prod:vars]
llm_api_url="http://{{ inventory_hostname }}:{{ http_port }}/v1"
llm_model=from-prod

[staging]
stage-1 ansible_host=10.0.2.1 llm_model=from-host
"""


@pytest.fixture
def inv(tmp_path):
    p = tmp_path / "hosts.ini"
    p.write_text(INI)
    return Inventory(p)


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(FerryError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_ansible_host_patterns(inv):
    assert [h.name for h in inv.select("prod")] == ["web1", "web2", "web3", "db1"]
    assert [h.name for h in inv.select("staging,web1")] == ["stage-1", "web1"]
    assert [h.name for h in inv.select("prod:&db")] == ["db1"]
    assert [h.name for h in inv.select("prod:!web")] == ["db1"]
    assert [h.name for h in inv.select("web[0:1]")] == ["web1", "web2"]
    assert [h.name for h in inv.select("web*")] == ["web1", "web2", "web3"]
    assert [h.name for h in inv.select("all")] == ["stage-1", "web1", "web2", "web3", "db1"]   # Ansible's order
    assert inv.hosts["web2"].groups == {"all", "web", "prod"}
    assert inv.hosts["web2"].magic["group_names"] == ["prod", "web"]


def test_unknown_host_or_group_is_one_line_naming_it(inv):
    msg = one_line_error(inv.select, "prdo")
    assert "unknown host or group 'prdo'" in msg and "prod" in msg and "web1" in msg
    assert "'nope'" in one_line_error(inv.select, "prod:&nope")
    assert "selects no hosts" in one_line_error(inv.select, "web:&db")
    assert "web[9]" in one_line_error(inv.select, "web[9]")


def test_layering_defaults_inventory_set_with_jinja_seeing_all_layers(inv):
    db1 = inv.hosts["db1"]
    # the inventory alone cannot render llm_api_url: http_port is a role default
    assert isinstance(db1.vars["llm_api_url"], Unrendered)
    merged = db1.resolve({"http_port": 80, "llm_model": "default", "keep": 1}, parse_set_args(["http_port=8080"]))
    assert merged["llm_api_url"] == "http://db1:8080/v1"      # Jinja sees --set, as Ansible sees -e
    assert merged["llm_model"] == "from-prod"                 # inventory beats defaults
    assert merged["keep"] == 1 and merged["http_port"] == "8080"     # --set is text, as Ansible's -e k=v;
    # the variable's declared type converts it (ferry.actions.common.host_variables, test_vars)
    assert merged["inventory_hostname"] == "db1" and merged["group_names"] == ["db", "prod"]
    assert inv.hosts["stage-1"].resolve({"llm_model": "default"})["llm_model"] == "from-host"
    assert db1.resolve({}, {"llm_model": "cli"})["llm_model"] == "cli"
    # defaults and --set are data: their Jinja-looking text is never rendered
    assert db1.resolve({"http_port": 1}, {"note": "{{ http_port }}"})["note"] == "{{ http_port }}"


def test_values_leave_as_plain_python(tmp_path):
    inv = Inventory(FIXTURES / "ini/hosts.ini", [PASSWORD])
    allowed = (str, int, float, bool, type(None), list, dict, datetime.date)

    def check(value):
        assert type(value) in allowed, type(value)
        if isinstance(value, dict):
            for k, v in value.items():
                check(k)
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)
    for host in inv.hosts.values():
        check(host.resolve({"x": 1}, {"y": 2}))
        json.dumps(host.vars)


def test_value_needing_a_fact_stays_unrendered_until_used(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text(textwrap.dedent("""
        all:
          hosts:
            h1:
              ansible_host: 10.0.0.1
              bind_ip: "{{ ansible_default_ipv4.address }}"
    """))
    h = Inventory(p).hosts["h1"]
    assert isinstance(h.vars["bind_ip"], Unrendered)
    assert h.resolve()["ansible_host"] == "10.0.0.1"           # unused: no error, as in Ansible
    msg = one_line_error(h.resolve, {"bind_ip": "0.0.0.0"})    # a variable Ferry reads must render
    assert f"{p}:6" in msg and "bind_ip" in msg and "ansible_default_ipv4" in msg
    # a template that uses it fails on the controller, naming the missing variable
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    with pytest.raises(jinja2.UndefinedError, match="'ansible_default_ipv4' is undefined"):
        env.from_string("listen {{ bind_ip }}").render(h.resolve())


def test_connection_variable_that_cannot_render_is_an_error(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text('all:\n  hosts:\n    h1: {ansible_host: "{{ nope }}"}\n')
    msg = one_line_error(Inventory, p)
    assert msg.startswith(f"{p}:3: host h1: variable 'ansible_host'") and "'nope' is undefined" in msg


def test_malformed_ini_names_the_file(tmp_path):
    p = tmp_path / "hosts.ini"
    p.write_text("[web]\nweb1 ansible_host=1.2.3.4\nweb2 foo\n")
    msg = one_line_error(Inventory, p)
    assert str(p) in msg and "key=value" in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("all:\n  hosts:\n    web-1: {ansible_host: 1.2.3.4\n    web-2:\n")
    msg = one_line_error(Inventory, p)
    assert msg.startswith(f"inventory {p}:4: YAML parsing failed")


def test_malformed_file_in_a_directory_source_is_an_error(tmp_path):
    (tmp_path / "a.ini").write_text("[web]\nweb1\n")
    (tmp_path / "b.yml").write_text("all: [\n")
    msg = one_line_error(Inventory, tmp_path)
    assert str(tmp_path / "b.yml") in msg


def test_malformed_jinja_names_file_host_and_variable(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text('all:\n  hosts:\n    h1: {x: "{{ foo "}\n')
    assert one_line_error(Inventory, p).startswith(f"{p}:3: host h1: variable 'x': Syntax error in template")


def test_vault_errors_say_vault(tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password\n")
    for source in ("ini/hosts.ini", "yaml/hosts.yml"):       # a vault file; an inline !vault value
        msg = one_line_error(Inventory, FIXTURES / source, [wrong])
        assert "vault" in msg and "wrong password" in msg and str(FIXTURES / source.split("/")[0]) in msg
        msg = one_line_error(Inventory, FIXTURES / source)
        assert "vault" in msg and "--vault-password-file" in msg
    assert "vault password file" in one_line_error(Inventory, FIXTURES / "ini/hosts.ini", [tmp_path / "none"])


def test_vault_password_file_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(PASSWORD))
    inv = Inventory(FIXTURES / "ini/hosts.ini")
    assert inv.hosts["web01"].vars["llm_api_key"] == "sk-fixture-0123456789"


def test_unhonoured_connection_variables_one_warning_line(tmp_path, capfd):
    p = tmp_path / "hosts.yml"
    p.write_text(textwrap.dedent("""
        all:
          vars: {ansible_python_interpreter: /usr/bin/python3}
          hosts:
            a: {ansible_become: true, ansible_connection: ssh, ansible_user: deploy, ansible_shell_type: csh}
            b: {ansible_become: true, ansible_connection: local, ansible_ssh_extra_args: -v, ansible_pipelining: true}
          children:
            bogus: {hostz: {}}
    """))
    lines: list[str] = []
    inv = Inventory(p, warn=lines.append)
    assert any("hostz" in w for w in lines)                   # Ansible's own warning, through Ferry
    lines.clear()
    inv.select("all")
    assert len(lines) == 1
    line = lines[0]
    assert "ansible_shell_type (a)" in line and "ansible_connection (b)" in line and "ansible_pipelining (b)" in line
    assert "ansible_become" not in line and "ansible_ssh_extra_args" not in line      # the SSH transport's
    assert "ansible_user" not in line and "ansible_python_interpreter" not in line
    assert "ansible_user" in HONOURED_ANSIBLE_VARS
    inv.select("all")                                         # same line again: not repeated
    assert len(lines) == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ""                            # ansible-core printed nothing itself


def test_honoured_ansible_vars_are_exactly_what_the_ssh_transport_reads():
    from ferry.host.transport.ssh import CONNECTION_VARS
    assert HONOURED_ANSIBLE_VARS == {v for v in CONNECTION_VARS if v.startswith("ansible_")} - {"ansible_connection"}


def test_set_args_and_merge():
    assert parse_set_args(["a=1", "b=x"]) == {"a": "1", "b": "x"}      # text: typed by the declarations
    assert merge_vars({"a": 1}, {"a": 2, "b": 3}) == {"a": 2, "b": 3}
    assert "expected key=value" in one_line_error(parse_set_args, ["novalue"])


def test_missing_source(tmp_path):
    assert "not found" in one_line_error(Inventory, tmp_path / "nope.ini")


def test_resolve_path_relative_to_the_inventory(tmp_path):
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.ini").write_text("h1\n")
    assert Inventory(tmp_path / "inv" / "hosts.ini").resolve_path("key") == tmp_path / "inv" / "key"
    assert Inventory(tmp_path / "inv").resolve_path("key") == tmp_path / "inv" / "key"
    assert Inventory(tmp_path / "inv").resolve_path("/abs") == Path("/abs")
