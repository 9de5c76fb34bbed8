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
from ..model.engine import DOWNLOAD_HINT, MEMBER_RE, NAME_RE, REQUIRED

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

