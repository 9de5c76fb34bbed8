"""Compose reads Compose: real compose files (the forms public projects use) resolved by the
Compose v2 binary on the controller, and Ferry's checks on that model."""

from pathlib import Path

import pytest
import yaml

from ferry.controller.composecli import resolver
from ferry.errors import FerryError
from ferry.model.compose import DIGEST_LABEL, add_labels, host_conflicts
from ferry.model.render import render_release, template_context
from ferry.model.stack import load_stack

RESOLVE = resolver()
BASE = "/opt/ferry/stacks/gw"
PATHS = {"stack_dir": BASE, "current": f"{BASE}/current", "data": f"{BASE}/data"}


def stack_dir(root, compose: str, extra: str = "", images: str = "{api: 'calciumion/new-api:latest', "
              "mysql: 'mysql:8.2', redis: 'redis:7'}", files: dict | None = None,
              templates: str = "  - {src: env.j2, dest: .env, secret: true}\n"):
    (root / "templates").mkdir(parents=True)
    (root / "templates" / "env.j2").write_text("SQL_DSN=root:pw@tcp(mysql:3306)/newapi\n")
    (root / "stack.yml").write_text(f"name: gw\nversion: '1'\nimages: {images}\ntemplates:\n"
                                    "  - {src: compose.yml.j2, dest: compose.yml}\n" + templates + extra)
    (root / "templates" / "compose.yml.j2").write_text(compose)
    for rel, data in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data)
    return root


def release(root, **variables):
    stack = load_stack(root)
    return render_release(stack, template_context(variables, stack, PATHS, {}, "h1"), "h1", RESOLVE)


GATEWAY = """\
services:
  api:
    image: calciumion/new-api:latest
    pull_policy: always
    ports: ["${API_PORT:-3000}:3000"]
    volumes:
      - ./data:/data
      - ${LOG_DIR:-./logs}:/app/logs
    env_file: .env
    depends_on:
      mysql: {condition: service_healthy}
      redis: {condition: service_started}
    networks: [gw]
  mysql:
    image: mysql:8.2
    volumes: [mysql_data:/var/lib/mysql]
    healthcheck: {test: ["CMD", "mysqladmin", "ping"], interval: 5s}
    networks: [gw]
  redis:
    image: redis:7
    networks: [gw]
volumes:
  mysql_data:
networks:
  gw:
    driver: bridge
"""


def test_interpolation_relative_data_named_volumes_networks_from_compose(tmp_path):
    d = stack_dir(tmp_path / "gw", GATEWAY, files={"templates/env.j2": "API_PORT=3300\nSQL_DSN=x\n"})
    r = release(d)
    api = r.model.services["api"]
    assert [(p.port, p.target) for p in api.ports] == [(3300, 3000)]          # ${API_PORT:-3000} from .env
    assert {(b.source, b.target, b.relative) for b in api.binds} == {
        (f"{BASE}/current/data", "/data", True), (f"{BASE}/current/logs", "/app/logs", True)}
    assert r.data_paths == ["data", "logs"]            # linked to <stack_dir>/data/<path> by each release
    assert r.model.services["mysql"].volumes == [("mysql_data", "/var/lib/mysql")]
    assert "gw" in r.model.networks and api.pull_policy == "always"
    assert "environment" not in api.raw                # env_file values (secrets) never kept in the model
    assert not api.healthcheck and r.model.services["mysql"].healthcheck
    assert r.files["compose.yml"] == GATEWAY.encode()  # nothing mounts a release file: no label, file unchanged


def test_default_applies_when_the_variable_is_unset_and_required_one_is_refused(tmp_path):
    d = stack_dir(tmp_path / "gw", GATEWAY.replace("${API_PORT:-3000}", "${API_PORT-3000}"))
    assert release(d).model.services["api"].ports[0].port == 3000
    d2 = stack_dir(tmp_path / "gw2", GATEWAY.replace("${API_PORT:-3000}", "${API_PORT:?set API_PORT}"))
    with pytest.raises(FerryError, match=r"compose.yml.j2: Compose: .*set API_PORT.*\(host h1\)"):
        release(d2)


def test_a_mount_escaping_through_a_default_is_refused(tmp_path):
    d = stack_dir(tmp_path / "gw", GATEWAY.replace("${LOG_DIR:-./logs}", "${DATA_DIR:-/x}/app"))
    with pytest.raises(FerryError, match=r"key 'services.api.volumes\[1\]': bind-mount source /x/app is outside"):
        release(d)


@pytest.mark.parametrize("snippet,needle", [
    ("    privileged: true\n", "privileged: true gives the container host access"),
    ("    cap_add: [NET_ADMIN]\n", "cap_add: NET_ADMIN"),
    ("    pid: host\n", "pid: host"),
    ("    network_mode: host\n", "network_mode: host"),
    ("    devices: ['/dev/sda:/dev/sda']\n", "devices: /dev/sda"),
])
def test_host_access_no_one_declared_is_refused(tmp_path, snippet, needle):
    compose = GATEWAY.replace("  redis:\n    image: redis:7\n    networks: [gw]\n", "  redis:\n    image: redis:7\n" + snippet)
    with pytest.raises(FerryError, match=needle + ".*allow.redis"):
        release(stack_dir(tmp_path / "gw", compose))
    extra = {"privileged": "privileged: true", "cap_add": "cap_add: [NET_ADMIN]", "pid": "pid: host",
             "network_mode": "network_mode: host", "devices": "devices: [/dev/sda]"}[needle.split(":")[0]]
    release(stack_dir(tmp_path / "ok", compose, f"allow:\n  redis: {{{extra}}}\n"))     # declared: accepted


def test_a_variable_cannot_smuggle_keys_into_the_compose_file(tmp_path):
    compose = GATEWAY.replace('["${API_PORT:-3000}:3000"]', '["{{ port }}:3000"]').replace("ports:", "ports:")
    compose = compose.replace('    ports: ["{{ port }}:3000"]', '    ports:\n      - {{ port }}:3000')
    d = stack_dir(tmp_path / "gw", compose)
    assert release(d, port=3000).model.services["api"].ports[0].port == 3000
    with pytest.raises(FerryError, match="privileged: true gives the container host access"):
        release(d, port="3000:3000\n    privileged: true\n    x-y:\n      - 1")


def test_host_bind_declared_under_allow_and_volume_device_outside_refused(tmp_path):
    compose = GATEWAY.replace("      - ./data:/data\n", "      - ./data:/data\n      - /var/run/docker.sock:/var/run/docker.sock\n")
    with pytest.raises(FerryError, match="docker.sock is outside the stack's directory"):
        release(stack_dir(tmp_path / "a", compose))
    release(stack_dir(tmp_path / "b", compose, "allow:\n  api: {binds: [/var/run/docker.sock]}\n"))
    dev = GATEWAY.replace("  mysql_data:\n", "  mysql_data:\n    driver_opts: {type: none, o: bind, device: /etc}\n")
    with pytest.raises(FerryError, match=r"volumes.mysql_data.driver_opts.device': /etc binds a host path"):
        release(stack_dir(tmp_path / "c", dev))


def test_an_image_the_bundle_does_not_carry_is_refused(tmp_path):
    with pytest.raises(FerryError, match=r"services.redis.image': redis:6 differs from stack.yml's images.redis"):
        release(stack_dir(tmp_path / "a", GATEWAY.replace("image: redis:7", "image: redis:6")))


def test_profiles_include_and_extends(tmp_path):
    compose = ("include: [extra.yml]\nservices:\n  api:\n    extends: {file: base.yml, service: base}\n"
               "    image: calciumion/new-api:latest\n  mysql:\n    image: mysql:8.2\n    profiles: [debug]\n")
    d = stack_dir(tmp_path / "gw", compose, templates="  - {src: base.yml, dest: base.yml}\n"
                  "  - {src: extra.yml, dest: extra.yml}\n",
                  files={"templates/base.yml": "services:\n  base:\n    image: x\n    ports: ['8080:80']\n"
                                               "    volumes: ['./nginx.conf:/etc/nginx.conf:ro']\n",
                         "templates/extra.yml": "services:\n  redis:\n    image: redis:7\n"},
                  images="{api: 'calciumion/new-api:latest', redis: 'redis:7'}")
    (d / "templates" / "nginx.conf").write_text("events {}\n")
    (d / "stack.yml").write_text((d / "stack.yml").read_text() + "  - {src: nginx.conf, dest: nginx.conf}\n")
    r = release(d)
    assert set(r.model.services) == {"api", "redis"}               # mysql's profile is not active
    assert r.model.services["api"].ports[0].port == 8080            # from extends
    assert r.model.services["api"].binds[0].source == f"{BASE}/current/nginx.conf"
    assert DIGEST_LABEL in yaml.safe_load(r.files["compose.yml"])["services"]["api"]["labels"]
    assert r.data_paths == []                                       # nginx.conf is a release file


def test_labels_keep_the_users_yaml_as_written():
    text = (b"# my comment\nx-common: &common\n  restart: always\nservices:\n  web:\n    <<: *common\n"
            b"    image: nginx\n    environment:\n      FLAG: yes\n      MODE: 'on'\n    labels: [a=b]\n"
            b"  db:\n    image: mysql\n    labels: {keep: '1'}\n")
    out = add_labels(text, {"web": {DIGEST_LABEL: "abc"}, "db": {DIGEST_LABEL: "def"}}, "c.yml").decode()
    assert "# my comment" in out and "FLAG: yes" in out and "MODE: 'on'" in out and "<<: *common" in out
    assert "- a=b" in out and f"- {DIGEST_LABEL}=abc" in out and f"{DIGEST_LABEL}: def" in out and "keep: '1'" in out


def test_host_conflicts_name_the_other_stack(tmp_path):
    r = release(stack_dir(tmp_path / "gw", GATEWAY.replace("    image: redis:7\n", "    image: redis:7\n"
                                                           "    container_name: redis\n")))
    facts = {"containers": [{"name": "xz-web-1", "project": "xiaozhi", "ports": [("0.0.0.0", 3000, "tcp")]},
                            {"name": "redis", "project": "other", "ports": []},
                            {"name": "gw-api-1", "project": "gw", "ports": [("0.0.0.0", 3000, "tcp")]}],
             "listening": [("tcp", "0.0.0.0", 22, "sshd (pid 1)")], "networks": []}
    found = host_conflicts(r.model, "gw", facts)
    assert found == ["host port 3000/tcp (service api) is already published by stack 'xiaozhi' (container xz-web-1)",
                     "container_name redis (service redis) is already taken by stack 'other'"]
    facts = {"containers": [], "networks": [], "listening": [("tcp", "*", 3000, "python3 (pid 9)")]}
    assert host_conflicts(r.model, "gw", facts) == [
        "host port 3000/tcp (service api) is already in use on the host by python3 (pid 9)"]


def test_a_bundle_given_by_a_relative_path_uses_its_own_compose_binary(tmp_path, monkeypatch):
    """``ferry deploy --bundle dist/x``: the bundle's Compose binary runs from a scratch
    directory, so a relative bundle path must not make it unfindable (it raised
    FileNotFoundError with a traceback)."""
    from ferry.controller import composecli
    real = composecli.binary(None)
    (tmp_path / "dist" / "b" / "docker").mkdir(parents=True)
    (tmp_path / "dist" / "b" / "docker" / "docker-compose").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    files = {"compose.yml": b"services:\n  web:\n    image: nginx:1.25\n"}
    model, _ = composecli.resolve(files, "p", "/opt/ferry/stacks/p/current", Path("dist/b"))
    assert set(model.services) == {"web"}
    assert composecli.binary(Path("dist/b")) == tmp_path / "dist" / "b" / "docker" / "docker-compose"
