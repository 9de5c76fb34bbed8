"""Where Ferry keeps things on a host (all under ``ferry_root``, default ``/opt/ferry``)::

    /opt/ferry/
      store/<sha256>                 bundle files, content-addressed, verified on arrival
      bundles/<stack>-<version>/...  the bundle's layout, as symlinks into store/
      stacks/<stack>/
        releases/<id>/               one immutable directory per deploy: rendered
                                     config, compose.yml, manifest.json, release.json
        current -> releases/<id>     switched atomically (rename)
        data/                        data dirs (db/ ...): outside releases, never switched
        secrets.json                 generated secrets (0600), kept across deploys
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt",
                         "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib",
                         "/var/log", "/var/backups", "/usr/local"})
"""``/`` and the system directories: never a directory of Ferry's own (``ferry_root``),
nor one ``uninstall`` removes things from."""


def own_directory(path: str) -> bool:
    """True when ``path`` may be a directory of Ferry's own: absolute, normalised, not
    ``/`` nor one of :data:`SYSTEM_DIRS`."""
    p = str(path)
    return p.startswith("/") and posixpath.normpath(p) == p and p not in SYSTEM_DIRS


@dataclass(frozen=True)
class HostPaths:
    """Paths on one host for one stack and bundle.

    Args:
        root: ``ferry_root`` (absolute).
        stack: stack name.
        bundle: bundle directory name (``<stack>-<version>``).
    """

    root: str
    stack: str
    bundle: str

    @property
    def store(self) -> str:
        """Content-addressed bundle files: ``<root>/store``."""
        return posixpath.join(self.root, "store")

    @property
    def bundle_dir(self) -> str:
        """The bundle's layout as symlinks: ``<root>/bundles/<stack>-<version>``."""
        return posixpath.join(self.root, "bundles", self.bundle)

    @property
    def stack_dir(self) -> str:
        """``<root>/stacks/<stack>``: releases, current, data, secrets."""
        return posixpath.join(self.root, "stacks", self.stack)

    @property
    def releases(self) -> str:
        """``<stack_dir>/releases``: one immutable directory per release."""
        return posixpath.join(self.stack_dir, "releases")

    @property
    def current(self) -> str:
        """``<stack_dir>/current``: symlink to the current release."""
        return posixpath.join(self.stack_dir, "current")

    @property
    def data(self) -> str:
        """``<stack_dir>/data``: data directories, outside releases."""
        return posixpath.join(self.stack_dir, "data")

    @property
    def secrets(self) -> str:
        """``<stack_dir>/secrets.json``: generated secrets (0600)."""
        return posixpath.join(self.stack_dir, "secrets.json")

    def for_templates(self) -> dict[str, str]:
        """The ``paths`` variable templates see: ``stack_dir``, ``current``, ``data``."""
        return {"stack_dir": self.stack_dir, "current": self.current, "data": self.data}
