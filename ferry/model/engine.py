"""Docker's static tarball as the manifest describes it: names and the check of the
manifest's ``docker.static`` entry (pure; the tarball itself is checked on the
controller by :mod:`ferry.controller.dockerstatic`).
"""

from __future__ import annotations

import re
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
