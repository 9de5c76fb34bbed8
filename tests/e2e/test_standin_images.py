"""The llm-chat stand-in images, built with devkit.images and run on the local engine.

Each test talks to containers on its own user-defined bridge network through
``docker exec`` (python3 in backend/frontend, curl in nginx) and removes them after.
The first run builds the images with mmdebstrap (about 2 minutes); later runs find
them up to date (or re-import the cached rootfs tars).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ferry.errors import FerryError
from devkit.images import (RECIPE_LABEL, build_image, build_stack_images, load_recipe,
                          recipe_digest)
from ferry.controller.localdocker import docker, ensure_engine

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stacks" / "llm-chat"
BACKEND, FRONTEND, NGINX = "llm-chat-backend:1.0.0", "llm-chat-frontend:1.0.0", "nginx:1.22"

HEALTH_PY = ("import urllib.request; "
             "urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=3)")


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    ensure_engine()
    return build_stack_images(STACK)


@pytest.fixture
def net(images):
    """A bridge network, and a starter for containers on it; all removed afterwards."""
    name = f"ferry-e2e-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    started: list[str] = []

    def run(image: str, *args: str, alias: str | None = None, env: dict | None = None,
            mounts: list[str] = ()) -> str:
        cname = f"{name}-{len(started)}"
        cmd = ["run", "-d", "--name", cname, "--network", name]
        if alias:
            cmd += ["--network-alias", alias]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        for m in mounts:
            cmd += ["-v", m]
        started.append(cname)
        docker(*cmd, image, *args)
        return cname

    run.network = name
    yield run
    for cname in started:
        docker("rm", "-f", "-v", cname, check=False)
    docker("network", "rm", name, check=False)


def dexec(container: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return docker("exec", container, *cmd, check=check, timeout=30)


def http(container: str, url: str, method: str = "GET", body: dict | None = None):
    """(status, body text) of a request made with python3 inside ``container``."""
    code = f"""
import json, sys, urllib.request, urllib.error
data = {json.dumps(json.dumps(body)) if body is not None else None}
req = urllib.request.Request({url!r}, method={method!r},
                             data=data.encode() if data else None,
                             headers={{"Content-Type": "application/json"}})
try:
    r = urllib.request.urlopen(req, timeout=5)
    print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
"""
    out = dexec(container, "python3", "-c", code).stdout.decode()
    status, _, text = out.partition("\n")
    return int(status), text


def wait_until(fn, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
        except FerryError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def backend_env(**over) -> dict:
    env = {"LLM_API_URL": "http://llm.internal:11434/v1", "LLM_MODEL": "qwen2.5:7b",
           "LLM_API_KEY": "sk-test-key", "SECRET_KEY": "s3cret-value"}
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def inspect(ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]


# --- build and cache ---------------------------------------------------------------------


def test_images_built_labelled_and_small(images):
    assert set(images) == {BACKEND, FRONTEND, NGINX}
    for recipe_path in sorted(STACK.glob("images/*/recipe.yml")):
        recipe = load_recipe(recipe_path)
        info = inspect(recipe.tag)
        assert info["Id"] == images[recipe.tag]
        assert info["Config"]["Labels"][RECIPE_LABEL] == recipe_digest(recipe)
        assert info["Size"] < 150e6, f"{recipe.tag} is {info['Size'] / 1e6:.0f} MB"
    back = inspect(BACKEND)["Config"]
    assert back["Cmd"] == ["python3", "/app/server.py"]
    assert "APP_VERSION=1.0.0" in back["Env"] and back["WorkingDir"] == "/app"
    assert "8000/tcp" in back["ExposedPorts"]
    assert inspect(NGINX)["Config"]["Cmd"] == ["nginx", "-g", "daemon off;"]


def test_second_build_is_skipped_and_cached_tar_reimports(images, monkeypatch):
    import devkit.images
    recipe = load_recipe(STACK / "images" / "frontend" / "recipe.yml")
    tmp_tag = f"ferry-e2e-reimport:{uuid.uuid4().hex[:8]}"
    recipe.tag = tmp_tag
    try:
        build_image(recipe)                     # leaves the rootfs tar in the cache
        docker("rmi", tmp_tag)

        def no_mmdebstrap(*args, **kwargs):
            raise AssertionError("cache miss: tried to build a root filesystem")
        monkeypatch.setattr(devkit.images, "_build_rootfs", no_mmdebstrap)
        assert build_stack_images(STACK) == images      # up to date: nothing rebuilt
        image_id = build_image(recipe)          # after `docker rmi`: the cached tar, no mmdebstrap
        assert inspect(tmp_tag)["Config"]["Labels"][RECIPE_LABEL] == recipe_digest(recipe)
        assert image_id.startswith("sha256:") and image_id != images[FRONTEND]
    finally:
        docker("rmi", tmp_tag, check=False)


def test_digest_covers_copied_files(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x.py").write_text("print(1)\n")
    (tmp_path / "recipe.yml").write_text("tag: t:1\npackages: []\ncopy: {app: /app}\n")
    recipe = load_recipe(tmp_path / "recipe.yml")
    d1 = recipe_digest(recipe)
    (tmp_path / "app" / "__pycache__").mkdir()
    (tmp_path / "app" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert recipe_digest(recipe) == d1
    (tmp_path / "app" / "x.py").write_text("print(2)\n")
    assert recipe_digest(recipe) != d1


@pytest.mark.parametrize("text, key", [
    ("packages: []\n", "tag"),
    ("tag: t:1\n", "packages"),
    ("tag: t:1\npackages: [python3]\ncopy: {missing: /app}\n", "copy.missing"),
    ("tag: t:1\npackages: []\ncopy: {recipe.yml: relative}\n", "copy.recipe.yml"),
    ("tag: t:1\npackages: []\ncmd: python3 server.py\n", "cmd"),
    ("tag: t:1\npackages: []\nexpose: [http]\n", "expose"),
    ("tag: t:1\npackages: []\nfrobnicate: 1\n", "frobnicate"),
    ("tag: t:1\npackages: [\n", "invalid YAML"),
])
def test_bad_recipe_names_file_and_key(tmp_path, text, key):
    path = tmp_path / "recipe.yml"
    path.write_text(text)
    with pytest.raises(FerryError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and key in str(err.value)
    assert "\n" not in str(err.value)


# --- backend -------------------------------------------------------------------------------


def test_backend_health_conversations_and_db(net, tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    c = net(BACKEND, env=backend_env(), mounts=[f"{db}:/app/db"])
    wait_until(lambda: dexec(c, "python3", "-c", HEALTH_PY, check=False).returncode == 0,
               what="backend health")
    status, text = http(c, "http://127.0.0.1:8000/api/health")
    assert status == 200
    assert json.loads(text) == {"status": "ok", "version": "1.0.0", "model": "qwen2.5:7b", "db": "ok"}

    status, text = http(c, "http://127.0.0.1:8000/api/conversations", "POST", {"title": "first chat"})
    assert status == 201
    new_id = json.loads(text)["id"]
    status, text = http(c, "http://127.0.0.1:8000/api/conversations")
    assert status == 200
    assert [(x["id"], x["title"]) for x in json.loads(text)] == [(new_id, "first chat")]
    assert http(c, "http://127.0.0.1:8000/api/conversations", "POST", {"title": 5})[0] == 400

    status, text = http(c, "http://127.0.0.1:8000/api/config")
    assert status == 200
    assert json.loads(text)["model"] == "qwen2.5:7b"
    assert json.loads(text)["api_url"] == "http://llm.internal:11434/v1"
    assert "sk-test-key" not in text and "s3cret-value" not in text
    assert http(c, "http://127.0.0.1:8000/nope")[0] == 404

    assert (db / "chat.db").is_file()
    logs = docker("logs", c).stdout.decode()
    assert '"POST /api/conversations HTTP/1.1" 201' in logs
    assert '"GET /api/config HTTP/1.1" 200' in logs

    # SIGTERM (docker stop) ends it cleanly (exit 0), not by SIGKILL after the grace time (137).
    docker("stop", "-t", "10", c)
    assert inspect_container(c)["State"]["ExitCode"] == 0

    # Data survives a new container on the same host directory.
    c2 = net(BACKEND, env=backend_env(), mounts=[f"{db}:/app/db"])
    wait_until(lambda: dexec(c2, "python3", "-c", HEALTH_PY, check=False).returncode == 0,
               what="second backend health")
    assert [x["title"] for x in json.loads(http(c2, "http://127.0.0.1:8000/api/conversations")[1])] \
        == ["first chat"]


def inspect_container(name: str) -> dict:
    return json.loads(docker("container", "inspect", name).stdout)[0]


def test_backend_unwritable_db_answers_503(net, tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    c = net(BACKEND, env=backend_env(), mounts=[f"{db}:/app/db:ro"])
    wait_until(lambda: http(c, "http://127.0.0.1:8000/api/health")[0] == 503, what="503")
    body = json.loads(http(c, "http://127.0.0.1:8000/api/health")[1])
    assert body["status"] == "error" and body["db"] != "ok"


def test_backend_creates_missing_db_dir(net):
    c = net(BACKEND, env=backend_env())
    wait_until(lambda: dexec(c, "python3", "-c", HEALTH_PY, check=False).returncode == 0,
               what="backend health")
    assert dexec(c, "test", "-f", "/app/db/chat.db", check=False).returncode == 0


@pytest.mark.parametrize("missing", ["SECRET_KEY", "LLM_MODEL"])
def test_backend_refuses_to_start_without_required_env(images, missing):
    env = backend_env(**{missing: None})
    args = ["run", "--rm"] + [a for k, v in env.items() for a in ("-e", f"{k}={v}")] + [BACKEND]
    proc = docker(*args, check=False, timeout=60)
    assert proc.returncode != 0
    assert missing in proc.stderr.decode()


# --- frontend and nginx ----------------------------------------------------------------------


def test_frontend_serves_chat_page(net):
    c = net(FRONTEND)
    wait_until(lambda: http(c, "http://127.0.0.1:3000/")[0] == 200, what="frontend")
    status, text = http(c, "http://127.0.0.1:3000/")
    assert status == 200 and "<title>LLM Chat</title>" in text
    assert "/api/health" in text and "/api/conversations" in text
    assert http(c, "http://127.0.0.1:3000/missing.js")[0] == 404
    docker("stop", "-t", "10", c)
    assert inspect_container(c)["State"]["ExitCode"] == 0       # SIGTERM handled, not SIGKILLed


NGINX_CONF = """
server {
    listen 80 default_server;
    location /api/ { proxy_pass http://backend:8000; }
    location / { proxy_pass http://frontend:3000; }
}
"""


def test_nginx_proxies_backend_and_frontend(net, tmp_path):
    conf = tmp_path / "default.conf"
    conf.write_text(NGINX_CONF)
    net(BACKEND, alias="backend", env=backend_env(), mounts=[f"{tmp_path / 'db'}:/app/db"])
    net(FRONTEND, alias="frontend")
    ngx = net(NGINX, mounts=[f"{conf}:/etc/nginx/conf.d/default.conf:ro"])

    def health():
        proc = dexec(ngx, "curl", "-fsS", "http://127.0.0.1/api/health", check=False)
        return proc.returncode == 0 and json.loads(proc.stdout)

    assert wait_until(health, what="health through nginx")["model"] == "qwen2.5:7b"
    page = dexec(ngx, "curl", "-fsS", "http://127.0.0.1/").stdout.decode()
    assert "<title>LLM Chat</title>" in page
    version = dexec(ngx, "nginx", "-v").stderr.decode()
    assert "nginx/1.22" in version
    assert dexec(ngx, "test", "-e", "/etc/nginx/sites-enabled/default", check=False).returncode != 0
    logs = docker("logs", ngx)
    assert '"GET /api/health HTTP/1.1" 200' in logs.stdout.decode()  # access log on stdout


def test_nginx_without_config_still_runs(net):
    ngx = net(NGINX)
    wait_until(lambda: inspect_container(ngx)["State"]["Running"], what="nginx running")
    time.sleep(1)
    assert inspect_container(ngx)["State"]["Running"]
    assert dexec(ngx, "curl", "--version").returncode == 0
