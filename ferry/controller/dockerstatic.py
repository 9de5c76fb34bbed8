"""Docker's static tarball (``docker-<version>.tgz``) as a bundle's engine for any systemd Linux.

Docker publishes its engine for hosts without a package manager it supports as
``https://download.docker.com/linux/static/stable/<uname -m>/docker-<version>.tgz``: one
top-level ``docker/`` directory of executables. Ferry needs these members (others that
some versions add, such as ``containerd-shim`` in 20.10, are carried and installed too):

    docker/dockerd  docker/docker  docker/docker-proxy  docker/docker-init
    docker/containerd  docker/containerd-shim-runc-v2  docker/ctr  docker/runc

:func:`add_static_engine` checks such a file (name, members, every member an ELF
executable of the bundle's architecture, the version ``dockerd`` reports) and places it
in the bundle as ``docker/static/docker-<version>.tgz``. The manifest's ``docker.static``
describes it::

    {"file": "docker/static/docker-24.0.7.tgz", "version": "24.0.7", "sha256": hex,
     "size": bytes, "arch": "amd64", "uname_arch": "x86_64",
     "binaries": {"dockerd": "24.0.7", "containerd": "v1.7.6", "docker-proxy": null, ...}}

``binaries`` holds what each executable says with ``--version`` (``-v`` for the shim),
or null when it has no version flag or is for another architecture than the
controller's. They are run only on a controller of the same architecture, as the
``nobody`` user when the controller runs as root, with an empty environment, from a
scratch directory, with a 10 s limit each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..errors import FerryError

REQUIRED = ("containerd", "containerd-shim-runc-v2", "ctr", "docker", "docker-init",
            "docker-proxy", "dockerd", "runc")
"""Members ``docker/<name>`` every static tarball must have."""

NAME_RE = re.compile(r"docker-(\d+\.\d+\.\d+(?:[-+~][0-9A-Za-z.+~-]*)?)\.tgz")
"""Docker's file name: ``docker-<version>.tgz`` (``docker-24.0.7.tgz``, ``docker-25.0.0-rc.1.tgz``)."""

MEMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A member's name below ``docker/``: a plain file name, nothing that walks out."""

DOWNLOAD_HINT = "https://download.docker.com/linux/static/stable/{uname}/"

_VERSION_RE = re.compile(r"\bv?(\d+\.\d+(?:\.\d+)?[^\s,]*)")


def _elf(path: Path) -> tuple[int, int] | None:
    from .dockerdist import _elf_machine
    return _elf_machine(path)


def _version_of(path: Path, name: str, workdir: Path) -> str | None:
    """What ``path --version`` (``-v`` for the shim) reports as its version, or None."""
    flag = "-v" if name.startswith("containerd-shim") else "--version"
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs.update(user=65534, group=65534, extra_groups=[])
    try:
        proc = subprocess.run([str(path), flag], cwd=workdir, env={}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10, **kwargs)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    text = proc.stdout + proc.stderr
    if name in ("containerd", "ctr"):
        # "containerd github.com/containerd/containerd v1.7.6 091922f..."
        words = text.split()
        return words[2] if len(words) > 2 else None
    m = re.search(r"Version:\s+(\S+)", text) or _VERSION_RE.search(text)
    return m.group(1) if m else None


def inspect_static(path: Path, arch: str) -> dict[str, Any]:
    """Check a Docker static tarball and describe it (no copy made).

    Args:
        path: the ``docker-<version>.tgz`` file.
        arch: dpkg architecture of the bundle (``amd64``); every member must be an ELF
            executable for it.

    Returns:
        ``{"version", "sha256", "size", "arch", "uname_arch", "binaries": {name:
        version or None}, "source": file name}`` (``file`` is added by
        :func:`add_static_engine`).

    Raises:
        FerryError: the file is missing, not named ``docker-<version>.tgz``, not a gzip'd
            tar, has members outside ``docker/`` or links, lacks a required member, holds
            a member that is not an executable for ``arch``, or its ``dockerd`` reports
            another version than the file name's.
    """
    from .bundle import sha256_file
    from .dockerdist import ARCHES
    path = Path(path)
    uname = ARCHES[arch][0]
    where = f"--docker-static {path}"
    if not path.is_file():
        raise FerryError(f"{where}: no such file (download it from {DOWNLOAD_HINT.format(uname=uname)})")
    m = NAME_RE.fullmatch(path.name)
    if not m:
        raise FerryError(f"{where}: expected Docker's static tarball named docker-<version>.tgz "
                         f"(from {DOWNLOAD_HINT.format(uname=uname)})")
    version = m.group(1)
    _, machine, elf_class = ARCHES[arch]
    controller = os.uname().machine
    binaries: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="ferry-docker-static-") as tmp:
        os.chmod(tmp, 0o755)
        out = Path(tmp) / "docker"
        out.mkdir(mode=0o755)
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    parts = member.name.rstrip("/").split("/")
                    if member.isdir() and parts in (["docker"], [".", "docker"]):
                        continue
                    if parts[:1] == ["."]:
                        parts = parts[1:]
                    if len(parts) != 2 or parts[0] != "docker" or not MEMBER_RE.fullmatch(parts[1]):
                        raise FerryError(f"{where}: member {member.name!r} is not a file directly "
                                         f"under docker/ (not Docker's static tarball layout)")
                    if not member.isfile():
                        raise FerryError(f"{where}: member {member.name!r} is not a regular file")
                    src = tar.extractfile(member)
                    with open(out / parts[1], "wb") as fh:
                        shutil.copyfileobj(src, fh, 1 << 20)
                    os.chmod(out / parts[1], 0o755)
                    binaries[parts[1]] = None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FerryError(f"{where}: not a readable .tgz ({exc})") from None
        missing = [n for n in REQUIRED if n not in binaries]
        if missing:
            raise FerryError(f"{where}: docker/{', docker/'.join(missing)} missing "
                             f"(Docker's static tarball has {', '.join(REQUIRED)})")
        for name in sorted(binaries):
            got = _elf(out / name)
            if got != (elf_class, machine):
                raise FerryError(f"{where}: docker/{name} is not an {arch} ({uname}) executable")
            if uname == controller:
                binaries[name] = _version_of(out / name, name, Path(tmp))
    reported = binaries.get("dockerd")
    if reported is not None and not re.fullmatch(re.escape(version) + r"([-+~].*)?", reported):
        raise FerryError(f"{where}: its dockerd reports version {reported}, the file name says {version}")
    return {"version": version, "sha256": sha256_file(path), "size": path.stat().st_size,
            "arch": arch, "uname_arch": uname, "binaries": binaries, "source": path.name}


def add_static_engine(path: Path, docker_dir: Path, arch: str) -> dict[str, Any]:
    """Check ``path`` (see :func:`inspect_static`) and place it as
    ``<docker_dir>/static/docker-<version>.tgz`` (hard link, else copy).

    Args:
        path: the user's ``docker-<version>.tgz``.
        docker_dir: the bundle's ``docker/`` directory being built.
        arch: the bundle's dpkg architecture.

    Returns:
        The manifest's ``docker.static`` entry (see the module docstring); ``file`` is
        relative to the bundle.

    Raises:
        FerryError: see :func:`inspect_static`.
    """
    info = inspect_static(path, arch)
    dest_dir = docker_dir / "static"
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    dest_dir.mkdir(parents=True)
    dest = dest_dir / f"docker-{info['version']}.tgz"
    try:
        os.link(path, dest)
    except OSError:
        shutil.copy2(path, dest)
    return {"file": f"docker/static/{dest.name}", **info}


def validate_static_entry(entry: Any, files: list[dict[str, Any]], bundle: Path) -> None:
    """Check a manifest's ``docker.static`` (untrusted: its words reach host commands)
    before any host is changed.

    Raises:
        FerryError: naming ``<bundle>/manifest.json`` and the key: not a mapping, a
            version that is not Docker's, a sha256 that is not hex, a ``file`` that is not
            ``docker/static/docker-<version>.tgz`` listed in ``files`` with that sha256, a
            binary name that is not a plain file name or a required one missing.
    """
    where = f"{bundle / 'manifest.json'}: key 'docker.static"
    if not isinstance(entry, dict):
        raise FerryError(f"{where}' must be a mapping")
    version, sha, file = entry.get("version"), entry.get("sha256"), entry.get("file")
    if not isinstance(version, str) or not NAME_RE.fullmatch(f"docker-{version}.tgz"):
        raise FerryError(f"{where}.version' is not a Docker version: {version!r}")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise FerryError(f"{where}.sha256' is not a sha256 hex digest")
    if file != f"docker/static/docker-{version}.tgz" or \
            not any(f.get("path") == file and f.get("sha256") == sha for f in files):
        raise FerryError(f"{where}.file' must be docker/static/docker-{version}.tgz, listed in files with its sha256")
    binaries = entry.get("binaries")
    if not isinstance(binaries, dict) or not all(isinstance(b, str) and MEMBER_RE.fullmatch(b) for b in binaries):
        raise FerryError(f"{where}.binaries' must map plain executable names to versions")
    missing = [n for n in REQUIRED if n not in binaries]
    if missing:
        raise FerryError(f"{where}.binaries' lacks {', '.join(missing)}")
