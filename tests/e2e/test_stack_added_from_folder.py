"""End to end: a new stack is a folder under stacks/ and nothing else. The test writes
one (stack.yml, defaults.yml, templates/, files/ with CRLF line endings, images/ with
a stand-in recipe), then uses the unchanged command line: `inv bundle --stack NAME`,
`inv deploy --host sandbox-3 --stack NAME`, `inv verify`. The folder is removed after."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from stack_e2e import STACKS, Hosts, http, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-3")]
HOST = "sandbox-3"
NAME = f"e2e-hello-{os.getpid()}"

STACK_YML = f"""\
name: {NAME}
version: "0.1.0"
description: a page and a JSON greeting served by nginx on 8088
images:
  web: nginx:1.22
templates:
  - src: compose.yml.j2
    dest: compose.yml
  - src: site.conf.j2
    dest: site.conf
  - src: hello.json.j2
    dest: hello.json
files:
  - src: site
    dest: site
health_paths:
  web: /
"""
DEFAULTS = """\
hello_port:
  type: port
  default: 8088
  help: Host port of the page.
hello_greeting:
  type: string
  default: "你好，Ferry"
  help: Greeting in hello.json (any UTF-8 text).
"""
COMPOSE = """\
name: {{ stack.name }}
services:
  web:
    image: {{ images.web }}
    restart: unless-stopped
    ports: ["{{ hello_port }}:80"]
    volumes:
      - {{ paths.current }}/site.conf:/etc/nginx/conf.d/default.conf:ro
      - {{ paths.current }}/site:/usr/share/nginx/html:ro
      - {{ paths.current }}/hello.json:/usr/share/nginx/json/hello.json:ro
    healthcheck:
      test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/"]
      interval: 2s
      retries: 30
"""
SITE = ("server {\r\n    listen 80 default_server;\r\n    charset utf-8;\r\n    root /usr/share/nginx/html;\r\n"
        "    location = /hello.json { root /usr/share/nginx/json; default_type application/json; }\r\n}\r\n")
INDEX = b"<!doctype html>\r\n<title>hello</title>\r\n<p>served by a stack added as a folder</p>\r\n"


@pytest.fixture(scope="module")
def new_stack():
    d = STACKS / NAME
    (d / "templates").mkdir(parents=True)
    try:
        (d / "stack.yml").write_text(STACK_YML)
        (d / "defaults.yml").write_text(DEFAULTS, encoding="utf-8")
        (d / "templates" / "compose.yml.j2").write_text(COMPOSE)
        (d / "templates" / "site.conf.j2").write_bytes(SITE.encode())
        (d / "templates" / "hello.json.j2").write_text('{"greeting": {{ hello_greeting | to_json }}}\n')
        (d / "files" / "site").mkdir(parents=True)
        (d / "files" / "site" / "index.html").write_bytes(INDEX)
        shutil.copytree(STACKS / "llm-chat" / "images" / "nginx", d / "images" / "nginx")   # its stand-in recipe
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def deployed(sandbox, new_stack, tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist-hello")
    b = inv_cli("bundle", "--stack", NAME, "--dist", str(dist))
    assert b.returncode == 0, b.stdout + b.stderr
    bundle = dist / f"{NAME}-0.1.0"
    d = inv_cli("deploy", "--host", HOST, "--stack", NAME, "-i", str(sandbox.inventory), "--bundle", str(bundle))
    return bundle, d


def test_a_folder_is_enough_to_bundle_deploy_and_verify(sandbox, deployed):
    bundle, d = deployed
    assert d.returncode == 0, d.stdout[-3000:] + d.stderr[-2000:]
    assert "checks passed" in d.stdout
    hosts = Hosts(sandbox.inventory)
    ip = hosts.ip(HOST)
    assert http(f"http://{ip}:8088/") == (200, INDEX.replace(b"\r\n", b"\n"))     # CRLF normalised on the way
    assert json.loads(http(f"http://{ip}:8088/hello.json")[1].decode("utf-8")) == {"greeting": "你好，Ferry"}
    assert b"\r" not in hosts.t(HOST).run(["cat", f"/opt/ferry/stacks/{NAME}/current/site.conf"]).stdout
    v = inv_cli("verify", "--host", HOST, "--stack", NAME, "-i", str(sandbox.inventory))
    assert v.returncode == 0 and "FAIL" not in v.stdout, v.stdout + v.stderr
    again = inv_cli("deploy", "--host", HOST, "--stack", NAME, "-i", str(sandbox.inventory), "--bundle", str(bundle))
    assert again.returncode == 0
    assert f"{HOST}: uploaded 0 B, loaded 0 images, recreated 0 containers; nothing changed" in again.stdout
