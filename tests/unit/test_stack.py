"""Stack definitions and rendering: StrictUndefined, secrets, config digests."""

import shutil
from pathlib import Path

import pytest
import yaml

from ferry.errors import FerryError
from ferry.model.compose import DIGEST_LABEL
from ferry.model.stack import load_stack
from ferry.controller.composecli import resolver
from ferry.model.render import render, template_context

RESOLVE = resolver()

LLM_CHAT = Path(__file__).resolve().parents[2] / "stacks" / "llm-chat"
PATHS = {"stack_dir": "/opt/ferry/stacks/llm-chat", "current": "/opt/ferry/stacks/llm-chat/current",
         "data": "/opt/ferry/stacks/llm-chat/data"}


def ctx(stack, **over):
    v = {**stack.defaults, **over}
    return template_context(v, stack, PATHS, {"SECRET_KEY": "s3cr3t"}, "web-1")


def labels(files, service):
    return yaml.safe_load(files["compose.yml"])["services"][service].get("labels", {})


def test_llm_chat_renders_with_defaults():
    stack = load_stack(LLM_CHAT)
    files = render(stack, ctx(stack, llm_model="m1"), "web-1", RESOLVE)
    assert set(files) == {"compose.yml", ".env", "nginx.conf"}
    assert b"LLM_MODEL='m1'" in files[".env"]
    assert b"SECRET_KEY='s3cr3t'" in files[".env"]
    compose = yaml.safe_load(files["compose.yml"])
    assert set(compose["services"]) == {"backend", "frontend", "nginx"}
    assert stack.secret_files() == {".env"}


def test_digest_label_changes_only_for_the_service_mounting_the_file():
    stack = load_stack(LLM_CHAT)
    a = render(stack, ctx(stack), "web-1", RESOLVE)
    b = render(stack, ctx(stack, client_max_body_size="20m"), "web-1", RESOLVE)   # nginx.conf only
    c = render(stack, ctx(stack, llm_model="other"), "web-1", RESOLVE)            # .env only
    assert labels(a, "nginx")[DIGEST_LABEL] != labels(b, "nginx")[DIGEST_LABEL]
    assert labels(a, "backend") == labels(b, "backend") == labels(c, "backend")
    assert labels(a, "nginx") == labels(c, "nginx")
    assert a["compose.yml"] == c["compose.yml"]   # .env changes reach backend via env_file


def test_undefined_variable_is_named_with_template_and_host(tmp_path):
    d = tmp_path / "llm-chat"
    shutil.copytree(LLM_CHAT, d, ignore=shutil.ignore_patterns("images"))
    (d / "templates" / "nginx.conf.j2").write_text("server_name {{ public_hostname }};\n")
    stack = load_stack(d)
    with pytest.raises(FerryError) as e:
        render(stack, ctx(stack), "web-1", RESOLVE)
    msg = str(e.value)
    assert "public_hostname" in msg and "nginx.conf.j2" in msg and "web-1" in msg


def test_env_values_cannot_break_out_of_their_line():
    stack = load_stack(LLM_CHAT)
    with pytest.raises(FerryError, match="single quote"):
        render(stack, ctx(stack, llm_api_key="a'b"), "web-1", RESOLVE)
    with pytest.raises(FerryError, match="newline"):
        render(stack, ctx(stack, llm_model="a\nEVIL=1"), "web-1", RESOLVE)


def test_stack_file_mistakes_name_file_and_key(tmp_path):
    d = tmp_path / "s"
    shutil.copytree(LLM_CHAT, d, ignore=shutil.ignore_patterns("images"))
    text = (d / "stack.yml").read_text()
    (d / "stack.yml").write_text(text.replace("dest: nginx.conf", "dest: ../../etc/nginx.conf"))
    with pytest.raises(FerryError) as e:
        load_stack(d)
    assert "stack.yml" in str(e.value) and "templates[2].dest" in str(e.value)
    (d / "stack.yml").write_text(text + "\nbogus: 1\n")
    with pytest.raises(FerryError, match="'bogus': unknown key"):
        load_stack(d)


@pytest.mark.parametrize("old,new,needle", [
    ("name: llm-chat", "name: ../etc", "key 'name': '../etc' must be lowercase letters, digits, '-' and '_'"),
    ("name: llm-chat", "name: a/b", "key 'name': 'a/b' must be"),
    ('version: "1.0.0"', 'version: "../../root/vtrav"', "key 'version': '../../root/vtrav' must be an identifier"),
    ('version: "1.0.0"', "version: 1.10", "key 'version': 1.1 must be an identifier"),
    ('version: "1.0.0"', 'version: "1.0.0\\n"', "key 'version': '1.0.0\\n' must be an identifier"),
    ("dest: .env", "dest: /etc/passwd", "key 'templates[1].dest': '/etc/passwd' must be a relative path"),
    ("dest: .env", "dest: a/../../x", "key 'templates[1].dest'"),
    ("dest: .env", "dest: .env\n    mode: 777", "key 'templates[1].mode': unknown key (known: dest, secret, src, vars)"),
    ("nginx: nginx:1.22", "nginx: nginx:1.22 --privileged", "key 'images.nginx': 'nginx:1.22 --privileged' must be an image"),
    ("frontend: /", "frontend: 'x y'", "key 'health_paths.frontend': 'x y' must be a URL path"),
    ("file: db/chat.db", "file: ../../etc/shadow", "key 'backup.sqlite[0].file'"),
    ("  - SECRET_KEY", "  - SECRET-KEY", "key 'generated_secrets[0]': 'SECRET-KEY' must be a variable name"),
    ("  - db", "  - /var/lib", "key 'data_dirs[0]'"),
    ("name: llm-chat\n", "", "key 'name': is required"),
    ("service: backend", "service: nobody", "key 'backup.sqlite[0].service': 'nobody' is not a service in 'images'"),
])
def test_stack_yml_is_checked_against_its_schema(tmp_path, old, new, needle):
    d = tmp_path / "s"
    shutil.copytree(LLM_CHAT, d, ignore=shutil.ignore_patterns("images"))
    text = (d / "stack.yml").read_text()
    assert old in text
    (d / "stack.yml").write_text(text.replace(old, new, 1))
    with pytest.raises(FerryError) as e:
        load_stack(d)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{d / 'stack.yml'}: ") and needle in msg, msg
