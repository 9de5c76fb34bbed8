"""Typed variables: every defaults.yml declares its variables with a type; every host's
merged variables are checked on the controller, one line naming the source, the key,
the host and the rule; unknown variables are reported; command-line numbers too."""

import shutil
import textwrap
from pathlib import Path

import pytest

from ferry import cli
from ferry.actions.common import declarations, host_variables, unknown_variable_warnings
from ferry.controller.inventory import Inventory
from ferry.errors import FerryError
from ferry.model.stack import load_stack
from ferry.model.vars import Declarations, Layer, load_declarations, parse_set_args
from ferry.roles import ROLES_DIR, role_declarations

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
LLM_CHAT = STACKS / "llm-chat"

INV = """
all:
  vars:
    ansible_user: root
  children:
    prod:
      vars:
        llm_model: from-prod
      hosts:
        web-1: {ansible_host: 10.0.0.5}
        web-2: {ansible_host: 10.0.0.6, http_port: 8080}
"""


@pytest.fixture
def inv(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text(INV)
    return Inventory(p)


def one_line_error(fn, *args):
    with pytest.raises(FerryError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def variables(inv, host="web-1", sets=(), stack=LLM_CHAT):
    return host_variables(inv.hosts[host], load_stack(stack), parse_set_args(sets))


# -- every defaults.yml in the tree is in the declared format ---------------------------

@pytest.mark.parametrize("path", sorted([*ROLES_DIR.glob("**/defaults.yml"), *STACKS.glob("*/defaults.yml"),
                                         *ROOT.glob("tests/e2e/stacks/*/defaults.yml")]), ids=str)
def test_every_defaults_file_declares_typed_documented_variables(path):
    decls = load_declarations(path)           # checks each declaration and its default
    for d in decls.items.values():
        assert d.type and d.help.strip(), d.name
    for name, (_, source) in decls.overrides.items():
        assert name in role_declarations(), f"{path}: {name} overrides nothing"


def test_role_and_stack_declarations_combine_with_a_stack_default_for_a_role_variable():
    xz = load_stack(STACKS / "xiaozhi-esp32-server")
    d = declarations(xz)
    assert d.defaults()["compose_wait_timeout"] == 180
    assert d.items["compose_wait_timeout"].source.endswith("roles/compose-up/defaults.yml")
    assert declarations(load_stack(LLM_CHAT)).defaults()["compose_wait_timeout"] == 120


# -- values checked and converted -------------------------------------------------------

def test_values_are_converted_to_their_declared_type(inv):
    v = variables(inv, "web-2", ["backend_port=8001", "llm_model=123", "releases_keep=7"])
    assert v["http_port"] == 8080 and v["backend_port"] == 8001
    assert v["llm_model"] == "123"                    # a string-typed --set value is taken literally
    assert v["releases_keep"] == 7 and v["ferry_root"] == "/opt/ferry"
    ini = Declarations(load_declarations(ROLES_DIR / "install-docker-offline" / "defaults.yml").items.values())
    got = ini.check([Layer("hosts.ini", {"docker_live_restore": "yes", "docker_log_max_file": "7"})], "h")
    assert got["docker_live_restore"] is True and got["docker_log_max_file"] == 7   # INI text, as Ansible


@pytest.mark.parametrize("sets,needles", [
    (["http_port=99999"], ["--set: key 'http_port' (host web-1): 99999 must be a port (an integer 1-65535)"]),
    (["http_port=80\n    privileged: true"], ["key 'http_port'", "'80\\n    privileged: true' must be a port"]),
    (["llm_model="], ["--set: key 'llm_model' (host web-1): is empty; a value is required"]),
    (["ferry_root=opt/ferry"], ["key 'ferry_root'", "must be an absolute path"]),
    (["ferry_root=/opt/ferry #x"], ["'/opt/ferry #x' must be an absolute path"]),
    (["ferry_root=/opt/a:/b"], ["key 'ferry_root'"]),
    (["ferry_root=/opt/$HOME"], ["key 'ferry_root'"]),
    (["ferry_root=/opt/x\n  y: 1"], ["key 'ferry_root'"]),
    (["ferry_root=/opt/../etc"], ["key 'ferry_root'"]),
    (["ferry_root=/opt/'x'"], ["key 'ferry_root'"]),
    (["releases_keep=0"], ["0 must be an integer from 1 to 1000"]),
    (["client_max_body_size=10m; evil"], ["key 'client_max_body_size'", "must be a string matching"]),
    (["backup_compress=xz"], ["must be one of: auto, gzip"]),
    (["llm_api_url=file:///etc/passwd"], ["key 'llm_api_url'"]),
], ids=lambda v: v[0] if isinstance(v, list) and v and "=" in v[0] else None)
def test_bad_values_are_refused_in_one_line_naming_source_key_host_and_rule(inv, sets, needles):
    msg = one_line_error(variables, inv, "web-1", sets)
    for n in needles:
        assert n in msg, msg
    assert "(host web-1)" in msg and msg.startswith("--set: "), msg


def test_inventory_values_name_their_group_or_host(tmp_path):
    bad = INV.replace("http_port: 8080", "http_port: \"80\\n    privileged: true\"")
    (tmp_path / "bad.yml").write_text(bad)
    msg = one_line_error(host_variables, Inventory(tmp_path / "bad.yml").hosts["web-2"], load_stack(LLM_CHAT), {})
    assert msg.startswith(f"{tmp_path / 'bad.yml'}:11: key 'http_port' (host web-2): "), msg    # file:line
    other = tmp_path / "other"                  # (a new directory: ansible-core caches what it found)
    (other / "group_vars").mkdir(parents=True)
    (other / "hosts.yml").write_text(INV)
    (other / "group_vars" / "prod.yml").write_text("frontend_port: 0\n")
    msg = one_line_error(host_variables, Inventory(other / "hosts.yml").hosts["web-1"], load_stack(LLM_CHAT), {})
    assert msg.startswith(f"{other / 'group_vars' / 'prod.yml'}:1: key 'frontend_port' (host web-1): 0 must be a port")


def test_required_variable_without_default_names_its_declaration(inv):
    msg = one_line_error(variables, inv, "web-1", ["gpt_load_auth_key=k"], STACKS / "uni-load")
    assert msg.startswith(f"{STACKS / 'uni-load' / 'defaults.yml'}: key 'uni_api_keys' (host web-1): has no default"), msg
    assert "--set uni_api_keys=" in msg
    msg = one_line_error(variables, inv, "web-1", ["gpt_load_auth_key=k", "uni_api_keys=[]"], STACKS / "uni-load")
    assert "key 'uni_api_keys' (host web-1): is empty" in msg
    v = variables(inv, "web-1", ["gpt_load_auth_key=k", "uni_api_keys=[sk-1, sk-2]"], STACKS / "uni-load")
    assert v["uni_api_keys"] == ["sk-1", "sk-2"]


def test_nested_values_are_checked_by_key_path_and_secrets_never_shown(inv):
    sets = ["gpt_load_auth_key=k", "uni_api_keys=[sk-1]"]
    msg = one_line_error(variables, inv, "web-1", sets + [
        "uni_api_providers=[{provider: p, base_url: 'ftp://x', model: [m]}]"], STACKS / "uni-load")
    assert "key 'uni_api_providers[0].base_url' (host web-1): 'ftp://x' must be a string matching" in msg, msg
    msg = one_line_error(variables, inv, "web-1", sets + [
        "uni_api_providers=[{provider: p, base_url: 'http://x', model: [m], api: [TOPSECRET]}]"], STACKS / "uni-load")
    assert "key 'uni_api_providers[0].api'" in msg and "TOPSECRET" not in msg and "secret value hidden" in msg, msg
    msg = one_line_error(variables, inv, "web-1", sets + [
        "uni_api_providers=[{provider: p, base_url: 'http://x', model: [m], apii: k}]"], STACKS / "uni-load")
    assert "key 'uni_api_providers[0].apii' (host web-1): unknown key (known: api, base_url, model, provider)" in msg
    msg = one_line_error(variables, inv, "web-1", ["gpt_load_auth_key=k", "uni_api_keys=[[TOPSECRET]]"],
                         STACKS / "uni-load")
    assert "key 'uni_api_keys[0]'" in msg and "TOPSECRET" not in msg, msg


def test_unknown_variables_are_reported_with_a_suggestion(inv, tmp_path):
    (tmp_path / "i.yml").write_text(INV.replace("llm_model: from-prod", "llm_model: m\n        htp_port: 81\n"
                                                "        cow_model: other-stack"))
    hosts = list(Inventory(tmp_path / "i.yml").hosts.values())
    warnings = unknown_variable_warnings(hosts, load_stack(LLM_CHAT), {"llm_modle": "x"}, known={"cow_model"})
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{tmp_path / 'i.yml'}:9: variable 'htp_port' (hosts web-1, web-2)"), warnings
    assert "did you mean 'http_port'?" in warnings[0]
    assert warnings[1].startswith("--set: variable 'llm_modle'") and "did you mean 'llm_model'?" in warnings[1]


# -- declarations themselves ------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("port: 9000\n", "key 'port': must be a declaration such as {type: int, default: 9000"),
    ("port: {type: porrt, default: 1, help: h}\n", "key 'port.type': must be one of: int, float, port"),
    ("port: {type: port, default: 1}\n", "key 'port.help': is required"),
    ("port: {type: port, default: 1, help: h, hlep: x}\n", "key 'port.hlep': unknown key (known: choices, default"),
    ("port: {type: port, default: 99999, help: h}\n", "key 'port.default': 99999 must be a port"),
    ("port: {type: port, default: 1, help: h, choices: [1]}\n", "key 'port': 'choices' is only for type enum"),
    ("port: {type: port, default: 1, help: h, min: 1}\n", "key 'port.type': 'min' is only for type int or float"),
    ("e: {type: enum, help: h}\n", "key 'e.choices': is required"),
    ("m: {type: map, help: h, keys: {a: {type: string}}, values: {type: string}}\n", "give either 'keys' or"),
    ("name: {type: string, required: true, default: '', help: h}\n", "key 'name.default': is empty"),
    ("name: {type: string, pattern: '[', help: h}\n", "key 'name.pattern'"),
    ("bad-name: {type: string, help: h}\n", "key 'bad-name': a variable name"),
    ("other_timeout: {default: 3}\n", "key 'other_timeout': no 'type'"),
    ("compose_wait_timeout: {type: int, default: 3, help: h}\n", "already declared in"),
    ("compose_wait_timeout: {default: 0}\n", "key 'compose_wait_timeout.default': 0 must be an integer from 1"),
])
def test_declaration_mistakes_name_file_and_key(tmp_path, text, needle):
    d = tmp_path / "s"
    shutil.copytree(LLM_CHAT, d, ignore=shutil.ignore_patterns("images"))
    (d / "defaults.yml").write_text((d / "defaults.yml").read_text() + text)
    msg = one_line_error(lambda: declarations(load_stack(d)))
    assert msg.startswith(str(d / "defaults.yml")) and needle in msg, msg


# -- command-line numbers ---------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--serial", "x"], "error: --serial: 'x' must be an integer >= 0"),
    (["--serial", "-3"], "error: --serial: -3 must be an integer >= 0"),
    (["--max-fail", "200"], "error: --max-fail: 200 must be a number from 0 to 100"),
    (["--lock-wait", "x"], "error: --lock-wait: 'x' must be a number >= 0"),
    (["--set", "a b=1"], "error: --set 'a b=1': 'a b' is not a variable name"),
])
def test_bad_command_line_options_are_one_line(capsys, argv, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("FERRY_PROJECT", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        cli.main(["ferry", "deploy", "--host", "h", *argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.startswith(needle) and "\n" not in err, err
    with pytest.raises(SystemExit):
        cli.main(["ferry", "audit", "--host", "h", "--lines", "0"])
    assert capsys.readouterr().err.strip() == "error: --lines: 0 must be an integer >= 1"


def test_role_declarations_cover_every_variable_the_roles_read():
    import re
    read = set()
    for f in [*ROLES_DIR.glob("*/role.py"), *ROOT.glob("ferry/**/*.py")]:
        read |= {a or b for a, b in re.findall(r"vars\.get\(\"([a-z_]+)\"|variables\.get\(\"([a-z_]+)\"", f.read_text())}
    assert read and read <= role_declarations().names(), read - role_declarations().names()
