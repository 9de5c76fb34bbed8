"""``stack.import``: the three public-looking projects of the e2e tier become stacks that
render with no edits; the compose file is kept byte for byte; secrets are recognised."""

from pathlib import Path

import pytest
import yaml

from ferry.controller.composecli import resolver
from ferry.controller.importer import import_stack
from ferry.errors import FerryError
from ferry.model.paths import HostPaths
from ferry.model.render import render_release, template_context
from ferry.model.stack import load_stack

PROJECTS = Path(__file__).resolve().parents[1] / "e2e" / "projects"


def imported(tmp_path, project, **kw):
    result = import_stack(PROJECTS / project / "docker-compose.yml", None, kw.pop("name", None), tmp_path, **kw)
    return result, load_stack(result.dir)


def test_gateway_with_mysql_and_redis(tmp_path):
    result, stack = imported(tmp_path, "new-api")
    assert stack.name == "new-api"
    assert stack.images == {"new-api": "calciumion/new-api:latest", "redis": "redis:latest", "mysql": "mysql:latest"}
    assert stack.data_dirs == ["data", "logs"] and stack.health_paths == {"new-api": "/api/status"}
    assert (stack.dir / "templates" / "compose.yml.j2").read_bytes() == \
        (PROJECTS / "new-api" / "docker-compose.yml").read_bytes()
    assert stack.defaults["new_api_mysql_root_password"] == "Ferry-db-pw-1"
    assert stack.file_mode(".env") == 0o600 and ".env" in stack.secret_files()
    text = "\n".join(result.lines)
    assert "secret variables" in text and "new_api_session_secret" in text and "Ferry-db-pw-1" not in text
    paths = HostPaths("/opt/ferry", stack.name, "")
    rel = render_release(stack, template_context(stack.defaults, stack, paths.for_templates(), {}, "h"), "h", resolver())
    assert b"MYSQL_ROOT_PASSWORD='Ferry-db-pw-1'" in rel.files[".env"]
    assert rel.model.services["new-api"].ports[0].port == 3300 and rel.data_paths == ["data", "logs"]


def test_chat_ui_with_model_server_and_named_volumes(tmp_path):
    _, stack = imported(tmp_path, "open-webui", name="webui")
    assert stack.name == "webui" and stack.images == {"ollama": "ollama/ollama:latest",
                                                      "open-webui": "ghcr.io/open-webui/open-webui:main"}
    assert stack.data_dirs == [] and stack.defaults["webui_open_webui_port"] in (3080, "3080")


def test_second_gateway_env_file_and_conditions(tmp_path):
    result, stack = imported(tmp_path, "gpt-load")
    assert stack.data_dirs == ["data", "data/mysql"] and stack.health_paths == {"gpt-load": "/health"}
    secret = [l for l in result.lines if l.startswith("secret variables")][0]
    assert all(v in secret for v in ("gpt_load_auth_key", "gpt_load_redis_password", "gpt_load_mysql_root_password"))
    assert "gpt_load_port" not in secret


def test_existing_stack_is_kept_unless_forced(tmp_path):
    imported(tmp_path, "new-api")
    with pytest.raises(FerryError, match="exists already"):
        imported(tmp_path, "new-api")
    imported(tmp_path, "new-api", force=True)


def test_a_file_compose_refuses_is_one_line(tmp_path):
    bad = tmp_path / "p" / "docker-compose.yml"
    bad.parent.mkdir()
    bad.write_text("services:\n  a:\n    image: x\n    ports: ['${P:?P must be set}:80']\n")
    with pytest.raises(FerryError, match="docker-compose.yml: Compose: .*P must be set"):
        import_stack(bad, None, None, tmp_path / "stacks")
