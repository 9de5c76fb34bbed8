"""Docker's static tarball: the names a bundle and a host rely on (pure; the tarball
itself is checked on the controller by :mod:`ferry.controller.dockerstatic`, the
manifest's ``docker.static`` by the schema in :mod:`ferry.model.manifest`).
"""

from __future__ import annotations

import re

REQUIRED = ("containerd", "containerd-shim-runc-v2", "ctr", "docker", "docker-init",
            "docker-proxy", "dockerd", "runc")
"""Members ``docker/<name>`` every static tarball must have."""

VERSION = r"\d+\.\d+\.\d+(?:[-+~][0-9A-Za-z.+~-]*)?"
"""Docker's version as in its file names: ``24.0.7``, ``25.0.0-rc.1``."""

NAME_RE = re.compile(rf"docker-({VERSION})\.tgz")
"""Docker's file name: ``docker-<version>.tgz`` (``docker-24.0.7.tgz``, ``docker-25.0.0-rc.1.tgz``)."""

MEMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A member's name below ``docker/``: a plain file name, nothing that walks out."""

DOWNLOAD_HINT = "https://download.docker.com/linux/static/stable/{uname}/"

