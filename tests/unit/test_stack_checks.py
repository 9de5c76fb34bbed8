"""Stack checks and rendering features used by the seed stacks: static files, line
endings, per-template vars, UTF-8 JSON, compose checks (ports, mounts), digest
propagation along ``depends_on: {restart: true}``, secret diffs by key."""

import json
import os
import shutil
from pathlib import Path

import jinja2.meta
import pytest
import yaml

from ferry.errors import FerryError
from ferry.model.configdiff import config_values
from ferry.model.compose import DIGEST_LABEL
from ferry.actions.common import declarations
from ferry.controller.composecli import resolver
from ferry.model.render import _environment, check_template_variables, render, template_context

RESOLVE = resolver()
from ferry.model.stack import load_stack
from ferry.model.vars import Layer

STACKS = Path(__file__).resolve().parents[2] / "stacks"
SEED = ["chatgpt-on-wechat", "corp-wechat-gptbot", "xiaozhi-esp32-server", "uni-load"]
# what an inventory must set for each seed stack (secrets and accounts have no default)
INVENTORY = {
    "chatgpt-on-wechat": {"wechatmp_token": "tok", "wechatmp_app_id": "wx123", "cow_open_ai_api_key": "sk-cow"},
    "corp-wechat-gptbot": {"gptbot_we_corp_id": "ww1", "gptbot_we_agent_id": 1000002, "gptbot_we_corp_secret": "cs",
                           "gptbot_we_token": "t", "gptbot_we_encoding_aes_key": "a" * 43},
    "xiaozhi-esp32-server": {"ansible_host": "10.0.0.9"},
    "uni-load": {"gpt_load_auth_key": "ak", "uni_api_keys": ["sk-uni"]},
}


def paths(name):
    base = f"/opt/ferry/stacks/{name}"
    return {"stack_dir": base, "current": f"{base}/current", "data": f"{base}/data"}


def rendered(stack, **over):
    variables = {**stack.defaults, **INVENTORY.get(stack.name, {}), **over}
    secrets = {k: "generated" for k in stack.generated_secrets}
    return render(stack, template_context(variables, stack, paths(stack.name), secrets, "h1"), "h1", RESOLVE)


def labels(files, service):
    return yaml.safe_load(files["compose.yml"])["services"][service].get("labels") or {}


def write_stack(root: Path, compose: str, stack_extra: str = "", files: dict | None = None) -> Path:
    """A small stack folder: service `a` (and whatever `compose` declares)."""
    (root / "templates").mkdir(parents=True)
    (root / "stack.yml").write_text("name: small\nversion: '1'\nimages: {a: img:1}\n"
                                    "templates:\n  - {src: compose.yml.j2, dest: compose.yml}\n" + stack_extra)
    (root / "defaults.yml").write_text("port: {type: port, default: 9000, help: a host port}\n")
    (root / "templates" / "compose.yml.j2").write_text(compose)
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# -- the seed stacks ---------------------------------------------------------------------

@pytest.mark.parametrize("name", SEED)
def test_seed_stack_renders_and_every_template_variable_is_declared(name):
    stack = load_stack(STACKS / name)
    files = rendered(stack)
    assert set(files) == set(stack.release_files())
    env = _environment(stack)
    builtins = {"stack", "paths", "images", "inventory_hostname", "ansible_host", "lookup", "instance",
                *stack.generated_secrets}
    for t in stack.templates:
        used = jinja2.meta.find_undeclared_variables(env.parse((stack.dir / "templates" / t.src).read_text()))
        for var in used - builtins:
            assert var in stack.variables, f"{t.src}: {var} not declared in defaults.yml"
            assert stack.variables.items[var].help, f"{var} has no help"
    check_template_variables(stack, declarations(stack).names())      # what deploy checks


def test_wechat_config_json_is_utf8_json_with_chinese_kept_and_0600():
    stack = load_stack(STACKS / "chatgpt-on-wechat")
    desc = "你是一个\"乐于助人\"的助手\n第二行"
    files = rendered(stack, cow_character_desc=desc)
    for inst, channel in (("wechat", "wx"), ("wechatmp", "wechatmp")):
        raw = files[f"{inst}/config.json"]
        conf = json.loads(raw.decode("utf-8"))
        assert conf["channel_type"] == channel and conf["character_desc"] == desc
        assert "你是一个".encode() in raw and b"\\u4f60" not in raw          # not ASCII-escaped
        assert conf["subscribe_msg"].startswith("感谢您的关注")
        assert stack.file_mode(f"{inst}/config.json") == 0o600
    assert "wechatmp_token" in json.loads(files["wechatmp/config.json"]) and \
        "wechatmp_token" not in json.loads(files["wechat/config.json"])
    services = yaml.safe_load(files["compose.yml"])["services"]
    assert services["wechat"]["ports"] == ["81:80", "444:443"] and services["wechatmp"]["ports"] == ["80:80", "443:443"]
    assert services["wechat"]["security_opt"] == ["seccomp:unconfined"]


def test_changing_one_wechat_instance_relabels_only_that_instance():
    stack = load_stack(STACKS / "chatgpt-on-wechat")
    a = rendered(stack)
    b = rendered(stack, wechatmp_app_id="wx-other")
    assert labels(a, "wechatmp")[DIGEST_LABEL] != labels(b, "wechatmp")[DIGEST_LABEL]
    assert labels(a, "wechat") == labels(b, "wechat")


def test_required_value_left_empty_is_refused_naming_the_variable():
    stack = load_stack(STACKS / "chatgpt-on-wechat")
    layer = Layer("inventory.yml group bots", {**INVENTORY[stack.name], "wechatmp_token": ""})
    with pytest.raises(FerryError) as e:
        declarations(stack).check([layer], "h1")
    assert str(e.value) == "inventory.yml group bots: key 'wechatmp_token' (host h1): is empty; a value is required"


def test_api_yaml_change_relabels_uni_api_and_its_dependent_not_gpt_load():
    stack = load_stack(STACKS / "uni-load")
    a = rendered(stack)
    b = rendered(stack, uni_api_keys=["sk-uni", "sk-second"])          # api.yaml only
    c = rendered(stack, gpt_load_log_level="debug")                    # gpt-load.env only
    assert labels(a, "uni-api")[DIGEST_LABEL] != labels(b, "uni-api")[DIGEST_LABEL]
    assert labels(a, "uni-load-improved")[DIGEST_LABEL] != labels(b, "uni-load-improved")[DIGEST_LABEL]
    assert labels(a, "gpt-load") == labels(b, "gpt-load") == {}
    assert a["compose.yml"] == c["compose.yml"]        # env_file changes reach gpt-load via Compose
    assert config_values("api.yaml", b["api.yaml"])["api_keys[1].api"] == repr("sk-second")


def test_plugin_file_change_relabels_only_the_server(tmp_path):
    d = tmp_path / "xz"
    shutil.copytree(STACKS / "xiaozhi-esp32-server", d, ignore=shutil.ignore_patterns("images"))
    a = rendered(load_stack(d))
    plugin = d / "files" / "plugins_func" / "functions" / "get_weather.py"
    plugin.write_bytes(plugin.read_bytes().replace(b"25", b"26"))
    b = rendered(load_stack(d))
    assert labels(a, "xiaozhi-esp32-server")[DIGEST_LABEL] != labels(b, "xiaozhi-esp32-server")[DIGEST_LABEL]
    for svc in ("xiaozhi-esp32-server-web", "xiaozhi-esp32-server-db", "xiaozhi-esp32-server-redis"):
        assert labels(a, svc) == labels(b, svc) and DIGEST_LABEL not in labels(b, svc)   # anchors not shared


# -- static files and line endings -------------------------------------------------------

def test_static_files_crlf_normalised_binary_kept_modes_and_dirs(tmp_path):
    compose = ("services:\n  a:\n    image: img:1\n    volumes:\n"
               "      - {{ paths.current }}/plugins:/p:ro\n      - {{ paths.current }}/run.sh:/run.sh:ro\n")
    d = write_stack(tmp_path / "s", compose,
                    "files:\n  - {src: plugins, dest: plugins}\n  - {src: run.sh, dest: run.sh}\n",
                    {"files/plugins/a.py": b"x = 1\r\ny = 2\r\n", "files/plugins/sub/b.bin": b"\x00\r\n\x01",
                     "files/plugins/__pycache__/a.cpython-311.pyc": b"junk", "files/run.sh": b"#!/bin/sh\r\necho hi\r\n"})
    os.chmod(d / "files" / "run.sh", 0o755)
    stack = load_stack(d)
    assert [f.dest for f in stack.files] == ["plugins/a.py", "plugins/sub/b.bin", "run.sh"]
    files = rendered(stack)
    assert files["plugins/a.py"] == b"x = 1\ny = 2\n" and files["run.sh"] == b"#!/bin/sh\necho hi\n"
    assert files["plugins/sub/b.bin"] == b"\x00\r\n\x01"
    assert stack.file_mode("run.sh") == 0o755 and stack.file_mode("plugins/a.py") == 0o644
    before = labels(files, "a")[DIGEST_LABEL]
    (d / "files" / "plugins" / "sub" / "b.bin").write_bytes(b"\x00changed")
    assert labels(rendered(load_stack(d)), "a")[DIGEST_LABEL] != before


def test_crlf_template_renders_with_lf(tmp_path):
    d = write_stack(tmp_path / "s", "services:\r\n  a:\r\n    image: img:1\r\n")
    assert b"\r" not in rendered(load_stack(d))["compose.yml"]


def test_static_file_mistakes_name_file_and_key(tmp_path):
    d = write_stack(tmp_path / "s", "services:\n  a: {image: 'img:1'}\n", "files:\n  - {src: nope.py, dest: x.py}\n")
    with pytest.raises(FerryError, match=r"stack.yml: key 'files\[0\].src'"):
        load_stack(d)
    (d / "files").mkdir()
    (d / "files" / "x.py").write_text("1\n")
    (d / "stack.yml").write_text((d / "stack.yml").read_text().replace("nope.py, dest: x.py", "x.py, dest: compose.yml"))
    with pytest.raises(FerryError, match=r"key 'files\[0\].dest': 'compose.yml' is also produced by templates\[0\]"):
        load_stack(d)


# -- compose checks: refused on the controller, naming the stack file and key ------------

@pytest.mark.parametrize("compose,key,needle", [
    ("services:\n  a: {image: 'img:1', ports: ['{{ port }}:80']}\n  b: {image: 'img:1', ports: ['127.0.0.1:{{ port }}:81']}\n",
     "services.b.ports", "host port 9000/tcp is also published by service 'a'"),
    ("services:\n  a: {image: 'img:1', ports: ['8000-8002:8000-8002']}\n  b: {image: 'img:1', ports: [{target: 1, published: 8001}]}\n",
     "services.b.ports", "host port 8001/tcp"),
    ("services:\n  a: {image: 'img:1', volumes: ['/etc:/host-etc']}\n",
     "services.a.volumes[0]", "bind-mount source /etc is outside the stack's directory /opt/ferry/stacks/small/"),
    ("services:\n  a: {image: 'img:1', volumes: ['{{ paths.data }}/../../other/data:/d']}\n",
     "services.a.volumes[0]", "outside the stack's directory"),
    ("services:\n  a: {image: 'img:1', volumes: [{type: bind, source: /srv/x, target: /x}]}\n",
     "services.a.volumes[0]", "outside"),
    ("services:\n  a: {image: 'img:1', volumes: ['{{ paths.current }}/missing.conf:/m.conf']}\n",
     "services.a.volumes[0]", "no template or static file produces missing.conf"),
    ("services:\n  a: {image: 'img:1', env_file: app.env}\n", "services.a.env_file", "app.env is not a file of the release"),
])
def test_compose_mistakes_are_refused_with_file_and_key(tmp_path, compose, key, needle):
    stack = load_stack(write_stack(tmp_path / "small", compose))
    with pytest.raises(FerryError) as e:
        rendered(stack)
    msg = str(e.value)
    assert str(stack.dir / "templates" / "compose.yml.j2") in msg and f"key '{key}'" in msg and needle in msg, msg
    assert "host h1" in msg


def test_allowed_mounts_and_ports_pass(tmp_path):
    compose = ("services:\n  a:\n    image: img:1\n    ports: ['9000:80', '9000:80/udp', '127.0.0.1:9001:81']\n"
               "    volumes: ['{{ paths.data }}/db:/db', 'named:/n', './compose.yml:/c.yml:ro']\n"
               "  b: {image: 'img:1', ports: ['127.0.0.2:9001:81', '9002']}\nvolumes: {named: {}}\n")
    stack = load_stack(write_stack(tmp_path / "small", compose))
    assert "compose.yml" in rendered(stack)


def test_rendered_json_that_does_not_parse_names_the_template(tmp_path):
    d = write_stack(tmp_path / "s", "services:\n  a: {image: 'img:1'}\n", "  - {src: c.json.j2, dest: c.json}\n",
                    {"templates/c.json.j2": b'{"port": {{ port }}, "name": {{ "x" }} }\n'})
    with pytest.raises(FerryError) as e:
        rendered(load_stack(d))
    assert "c.json.j2" in str(e.value) and "renders c.json" in str(e.value) and "not valid JSON" in str(e.value)


def test_dependency_cycle_is_refused_by_compose(tmp_path):
    compose = ("services:\n  a: {image: 'img:1', depends_on: {b: {condition: service_started, restart: true}}}\n"
               "  b: {image: 'img:1', depends_on: {a: {condition: service_started, restart: true}}}\n")
    with pytest.raises(FerryError, match="Compose: dependency cycle detected: a -> b -> a"):
        rendered(load_stack(write_stack(tmp_path / "s", compose)))


def test_secret_diff_keys_for_json_yaml_and_env():
    assert config_values("c.json", b'{"a": {"b": 1}, "l": ["x"]}') == {"a.b": "1", "l": "['x']"}
    assert config_values("c.yaml", b"k:\n  - api: s1\n") == {"k[0].api": "'s1'"}
    assert config_values(".env", b"A='1'\n") == {"A": "1"}
