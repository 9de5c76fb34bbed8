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
