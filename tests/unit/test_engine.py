"""The engine's fact script (run in a real shell here), its parser on answers captured
from sandbox hosts, the static engine's requirements, and the checks of Docker's static
tarball (``inv bundle --docker-static``)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from ferry.controller.dockerstatic import add_static_engine, inspect_static
from ferry.model.manifest import validate_manifest
from ferry.errors import FerryError
from ferry.host import engine
from ferry.host.engine import parse_engine_facts, requirements

# Captured from the sandbox's host without dpkg (nodpkg-1): the host, then its engine,
# fresh and after the upgrade to 20.10.24 (two engines kept).
NODPKG = """machine=x86_64
kernel=6.18.44-fc-v595
os=Rocky Linux 9.3 (Blue Onyx)
dpkg_arch=
rpm=
systemd=yes
cgroup=hybrid
iptables=iptables v1.8.9 (nf_tables)
nft=
tar=/usr/bin/tar
gzip=/usr/bin/gzip
"""
NODPKG_FRESH = NODPKG + """dockerd=
compose=
docker_active=inactive
docker_enabled=
containerd_active=inactive
containerd_enabled=
static_current=
static_dirs=
link=dockerd -
link=runc -
link=docker -
"""

NODPKG_RUNNING = NODPKG + """dockerd=Docker version 20.10.24+dfsg1, build 5d6db84
compose=2.40.3
docker_active=active
docker_enabled=enabled
docker_exe=/usr/local/lib/docker-static/20.10.24-1eb84c8f0fa0/dockerd
containerd_active=active
containerd_enabled=enabled
containerd_exe=/usr/local/lib/docker-static/20.10.24-1eb84c8f0fa0/containerd
static_current=20.10.24-1eb84c8f0fa0
static_dirs=20.10.24-1eb84c8f0fa0 20.10.5-b79f1c370dbd 
sum=3f1c0a9e0e7f5d1b2a4c6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2e4f6a8b /etc/docker/daemon.json
sum=6b1d0c7f2e3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c /etc/systemd/system/docker.service
ferry_units=yes
"""


def test_fresh_host_without_dpkg():
    f = parse_engine_facts(NODPKG_FRESH)
    assert (f.machine, f.os, f.dpkg_arch, f.systemd, f.cgroup) == \
        ("x86_64", "Rocky Linux 9.3 (Blue Onyx)", None, True, "hybrid")
    assert f.iptables.startswith("iptables v1.8.9") and f.tar and f.kernel_version == (6, 18)
    assert f.docker_version is None and f.compose_version is None and not f.running("docker")
    assert f.static_current == "" and f.static_dirs == [] and not f.ferry_units
    assert f.links == {"dockerd": "-", "runc": "-", "docker": "-"} and f.packages == {}
    assert requirements(f, static=True) == []


def test_running_static_engine():
    f = parse_engine_facts(NODPKG_RUNNING)
    assert f.docker_version == "20.10.24+dfsg1" and f.compose_version == "2.40.3"
    assert f.running("docker") and f.running("containerd") and f.enabled["docker"] == "enabled"
    assert f.exe["docker"] == "/usr/local/lib/docker-static/20.10.24-1eb84c8f0fa0/dockerd"
    assert f.static_dirs == ["20.10.24-1eb84c8f0fa0", "20.10.5-b79f1c370dbd"]
    assert f.sums["/etc/docker/daemon.json"].startswith("3f1c0a9e") and f.ferry_units and f.links == {}


def test_an_answer_that_is_not_the_script_s():
    with pytest.raises(ValueError, match="no machine= or kernel="):
        parse_engine_facts("bash: sh: command not found\n")


def test_the_script_runs_in_a_real_shell():
    """The controller is a Debian host with dpkg and docker.io: the same script, for real."""
    argv = engine.engine_facts(["docker.io", "no-such-package"], ["dockerd", "runc"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    f = parse_engine_facts(out)
    assert f.machine == os.uname().machine and f.kernel == os.uname().release
    assert f.dpkg_arch == "amd64" and "docker.io" in f.packages and "no-such-package" not in f.packages
    assert f.cgroup in ("v1", "v2", "hybrid") and f.tar
    assert f.links["runc"] in ("-", "runc")                  # /usr/bin/runc: absent, or dpkg's
    assert set(f.links) <= {"dockerd", "runc"}


def test_version_probes_are_kept_for_the_very_same_engine_files(tmp_path):
    """dockerd and docker (stubs that count their runs) answer once; the next run reuses
    the cache; a replaced dockerd (another file) is asked again."""
    bin_dir, runs, cache = tmp_path / "bin", tmp_path / "runs", str(tmp_path / "engine-facts")
    bin_dir.mkdir()

    def stub(name: str, answer: str) -> None:
        tmp = bin_dir / (name + ".new")
        tmp.write_text(f"#!/bin/sh\necho {name} >> {runs}\necho '{answer}'\n")
        tmp.chmod(0o755)
        tmp.rename(bin_dir / name)              # a new file, as an upgrade installs it
    stub("dockerd", "Docker version 20.10.24+dfsg1, build 5d6db84")
    stub("docker", "2.40.3")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def facts(write: bool):
        out = subprocess.run(engine.engine_facts([], [], cache, write), capture_output=True, text=True,
                             timeout=60, check=True, env=env).stdout
        return parse_engine_facts(out)
    first = facts(write=False)
    assert first.probed and not (tmp_path / "engine-facts").exists()     # a read-only run keeps nothing
    first = facts(write=True)
    assert first.probed and (first.docker_version, first.compose_version) == ("20.10.24+dfsg1", "2.40.3")
    runs.write_text("")
    again = facts(write=False)
    assert not again.probed and runs.read_text() == ""
    assert (again.docker_version, again.compose_version, again.fingerprint) == \
        (first.docker_version, first.compose_version, first.fingerprint)
    stub("dockerd", "Docker version 24.0.7, build afdd53b")
    upgraded = facts(write=False)
    assert upgraded.probed and upgraded.docker_version == "24.0.7" and upgraded.fingerprint != first.fingerprint
    assert (tmp_path / "engine-facts").read_text() == engine.cache_text(first).decode()


@pytest.mark.parametrize("kernel, ok", [("3.10.0-1160.el7.x86_64", True), ("4.18.0-513.el8", True),
                                         ("3.9.11", False), ("2.6.32-754.el6.x86_64", False), ("", False)])
def test_kernel_floor(kernel, ok):
    f = parse_engine_facts(NODPKG_FRESH.replace("kernel=6.18.44-fc-v595", f"kernel={kernel}"))
    assert (requirements(f, static=False) == []) is ok


def test_deb_layout_does_not_need_iptables_or_tar():
    f = parse_engine_facts(NODPKG_FRESH.replace("iptables=iptables v1.8.9 (nf_tables)", "iptables=")
                           .replace("tar=/usr/bin/tar", "tar="))
    assert requirements(f, static=False) == []
    assert requirements(f, static=True) == ["an iptables command (legacy or nf_tables)", "tar and gzip"]


def test_engine_directory_names():
    assert engine.engine_id("24.0.7", "0a1b2c3d4e5f" + "0" * 52) == "24.0.7-0a1b2c3d4e5f"
    assert engine.is_engine_id("20.10.5-b79f1c370dbd") and not engine.is_engine_id("current")
    assert not engine.is_engine_id("my-notes") and not engine.is_engine_id("24.0.7-0a1b2c3d4e5f.partial")
    with pytest.raises(ValueError):
        engine.remove_static(["../../etc"])
    assert engine.remove_static(["20.10.5-b79f1c370dbd"]) == \
        ["rm", "-rf", "--", "/usr/local/lib/docker-static/20.10.5-b79f1c370dbd"]


# -- Docker's static tarball ------------------------------------------------------------

ELF_ARM64 = b"\x7fELF\x02\x01\x01" + b"\x00" * 11 + (183).to_bytes(2, "little") + b"\x00" * 44
ELF_AMD64 = b"\x7fELF\x02\x01\x01" + b"\x00" * 11 + (62).to_bytes(2, "little") + b"\x00" * 44
NAMES = ["containerd", "containerd-shim-runc-v2", "ctr", "docker", "docker-init", "docker-proxy", "dockerd", "runc"]


def tgz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def members(data: bytes, **extra: bytes) -> dict[str, bytes]:
    return {**{f"docker/{n}": data for n in NAMES}, **{f"docker/{k}": v for k, v in extra.items()}}


def test_another_architecture_s_tarball_is_described_without_running_it(tmp_path):
    path = tgz(tmp_path / "docker-24.0.7.tgz", members(ELF_ARM64, **{"containerd-shim": ELF_ARM64}))
    info = inspect_static(path, "arm64")
    assert info["version"] == "24.0.7" and info["uname_arch"] == "aarch64" and info["size"] == path.stat().st_size
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["binaries"] == {n: None for n in NAMES + ["containerd-shim"]}
    entry = add_static_engine(path, tmp_path / "bundle" / "docker", "arm64")
    assert entry["file"] == "docker/static/docker-24.0.7.tgz"
    assert (tmp_path / "bundle" / entry["file"]).read_bytes() == path.read_bytes()


def test_dockerd_must_say_the_version_of_the_file_name(tmp_path):
    """Real executables of this machine stand in for Docker's: ``true --version`` says
    coreutils' version, not 24.0.7."""
    true = Path("/usr/bin/true").read_bytes()
    with pytest.raises(FerryError, match=r"its dockerd reports version 9\.\d+, the file name says 24\.0\.7"):
        inspect_static(tgz(tmp_path / "docker-24.0.7.tgz", members(true)), "amd64")


@pytest.mark.parametrize("name, content, message", [
    ("docker-latest.tgz", None, "expected Docker's static tarball named docker-<version>.tgz"),
    ("docker-24.0.7.tgz", {"docker/dockerd": ELF_AMD64}, "docker/containerd, docker/containerd-shim-runc-v2"),
    ("docker-24.0.7.tgz", {**members(ELF_AMD64), "etc/cron.d/x": b"x"}, "member 'etc/cron.d/x' is not a file directly under docker/"),
    ("docker-24.0.7.tgz", {**members(ELF_AMD64), "docker/../../x": b"x"}, "is not a file directly under docker/"),
    ("docker-24.0.7.tgz", members(ELF_ARM64), r"docker/containerd is not an amd64 \(x86_64\) executable"),
    ("docker-24.0.7.tgz", members(b"#!/bin/sh\necho hi\n"), "is not an amd64"),
])
def test_what_is_not_docker_s_static_tarball_is_refused(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.write_bytes(b"")
    else:
        tgz(path, content)
    with pytest.raises(FerryError, match=message):
        inspect_static(path, "amd64")


def test_links_and_junk_refused(tmp_path):
    with pytest.raises(FerryError, match="member 'docker/runc' is not a regular file"):
        inspect_static(tgz(tmp_path / "docker-24.0.7.tgz", {f"docker/{n}": ELF_AMD64 for n in NAMES if n != "runc"},
                           {"docker/runc": "/bin/sh"}), "amd64")
    (tmp_path / "docker-25.0.0.tgz").write_bytes(b"not gzip")
    with pytest.raises(FerryError, match="not a readable .tgz"):
        inspect_static(tmp_path / "docker-25.0.0.tgz", "amd64")
    with pytest.raises(FerryError, match="no such file .*download.docker.com/linux/static/stable/x86_64/"):
        inspect_static(tmp_path / "docker-26.1.0.tgz", "amd64")


def test_manifest_static_entry_checked_by_the_schema():
    sha = "a" * 64
    good = {"file": "docker/static/docker-24.0.7.tgz", "version": "24.0.7", "sha256": sha, "size": 1,
            "binaries": {n: None for n in NAMES}}

    def manifest(static, files=None):
        return {"format": 1, "stack": "llm-chat", "version": "1.0.0", "images": [],
                "files": files or [{"path": good["file"], "sha256": sha, "size": 1}],
                "docker": {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64",
                           "packages": {"docker.io": "20.10.24"}, "static": static}}
    validate_manifest(manifest(good), "m.json")
    for bad, key, why in [
            ({**good, "version": "24.0.7; rm -rf /"}, "version", "must be a Docker version like 24.0.7"),
            ({**good, "sha256": "x"}, "sha256", "must be a sha256 hex digest"),
            ({**good, "file": "../../etc/shadow"}, "file", "must be 'docker/static/docker-<version>.tgz'"),
            ({**good, "binaries": {**good["binaries"], "../x": None}}, "binaries", "must be a plain executable name"),
            ({**good, "binaries": {"dockerd": None}}, "binaries", "'containerd' is a required property")]:
        with pytest.raises(FerryError, match=f"m.json: key 'docker.static.{key}': .*{re.escape(why)}"):
            validate_manifest(manifest(bad), "m.json")
    with pytest.raises(FerryError, match="key 'docker.static.file': .* listed in 'files' with the same sha256"):
        validate_manifest(manifest(good, [{"path": good["file"], "sha256": "b" * 64, "size": 1}]), "m.json")
