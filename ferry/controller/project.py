"""A Ferry project: the directory holding ``stacks/``, ``inventories/`` and ``dist/``.

Like ``ansible.cfg``, it is found from ``--project DIR`` / ``$FERRY_PROJECT``, else
upward from the current directory: the first directory with a ``ferry.cfg`` file or a
``stacks/`` folder. ``ferry.cfg`` (INI, optional) may set, under ``[defaults]``:

- ``inventory``: the inventory used when ``-i`` is not given (relative to the project);
- ``stack``: the stack used when ``--stack`` is not given.

Without ``stack`` there, a project with exactly one stack uses it; otherwise
``--stack`` is required.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FerryError

CONFIG = "ferry.cfg"


@dataclass
class Project:
    """A project directory and its ``ferry.cfg`` ``[defaults]``."""

    root: Path
    defaults: dict[str, str] = field(default_factory=dict)

    @property
    def stacks_dir(self) -> Path:
        """``<root>/stacks``: one folder per stack."""
        return self.root / "stacks"

    @property
    def dist(self) -> Path:
        """``<root>/dist``: bundles built by ``bundle``."""
        return self.root / "dist"

    def stacks(self) -> list[str]:
        """Names of the stacks under ``stacks/`` (folders with a ``stack.yml``)."""
        if not self.stacks_dir.is_dir():
            return []
        return sorted(p.name for p in self.stacks_dir.iterdir() if (p / "stack.yml").is_file())

    def declared_variables(self) -> set[str]:
        """Names of the variables the project's stacks declare (their ``defaults.yml``):
        an inventory shared by several stacks sets them all, which is no typo. A stack
        whose ``defaults.yml`` does not load contributes none (it fails when it is used)."""
        from ..model.vars import load_declarations
        names: set[str] = set()
        for name in self.stacks():
            try:
                names |= load_declarations(self.stacks_dir / name / "defaults.yml").names()
            except FerryError:
                continue
        return names

    def stack_name(self, given: str | None) -> str:
        """``--stack`` if given, else ``ferry.cfg``'s ``stack``, else the only stack.

        Raises:
            FerryError: none of those (names the known stacks).
        """
        if given:
            return given
        if self.defaults.get("stack"):
            return self.defaults["stack"]
        known = self.stacks()
        if len(known) == 1:
            return known[0]
        raise FerryError(f"which stack? give --stack NAME (stacks in {self.stacks_dir}: "
                         f"{', '.join(known) or 'none'}), or set stack = NAME in {self.root / CONFIG}")

    def stack_dir(self, name: str | None) -> Path:
        """The folder of stack ``name`` (see :meth:`stack_name`): ``stacks/<name>``, or
        ``name`` itself when it is a directory with a ``stack.yml``.

        Raises:
            FerryError: no such stack (names the known ones).
        """
        name = self.stack_name(name)
        if (Path(name) / "stack.yml").is_file():
            return Path(name)
        d = self.stacks_dir / name
        if not (d / "stack.yml").is_file():
            raise FerryError(f"unknown stack '{name}' (stacks in {self.stacks_dir}: "
                             f"{', '.join(self.stacks()) or 'none'})")
        return d

    def inventory(self, given: str | None) -> Path:
        """``-i`` if given, else ``$FERRY_INVENTORY``, else ``ferry.cfg``'s ``inventory``.

        Raises:
            FerryError: none of those.
        """
        value = given or os.environ.get("FERRY_INVENTORY") or self.defaults.get("inventory")
        if not value:
            raise FerryError(f"no inventory: give -i FILE, set $FERRY_INVENTORY, or set inventory = FILE "
                             f"in {self.root / CONFIG}")
        path = Path(value).expanduser()
        return path if path.is_absolute() or given else self.root / path


def find_project(given: str | None = None, cwd: Path | None = None) -> Project:
    """The project: ``given``, else ``$FERRY_PROJECT``, else the nearest directory at or
    above ``cwd`` with a ``ferry.cfg`` or a ``stacks/`` folder, else ``cwd`` itself.

    Raises:
        FerryError: ``given``/``$FERRY_PROJECT`` is not a directory, or ``ferry.cfg`` is
            malformed (names the file and line).
    """
    explicit = given or os.environ.get("FERRY_PROJECT")
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not root.is_dir():
            raise FerryError(f"project directory {root} does not exist")
    else:
        start = (cwd or Path.cwd()).resolve()
        root = next((d for d in (start, *start.parents) if (d / CONFIG).is_file() or (d / "stacks").is_dir()),
                    start)
    defaults: dict[str, str] = {}
    cfg = root / CONFIG
    if cfg.is_file():
        parser = configparser.ConfigParser()
        try:
            parser.read(cfg, encoding="utf-8")
        except configparser.Error as exc:
            raise FerryError(f"{cfg}: {str(exc).splitlines()[0]}") from None
        if parser.has_section("defaults"):
            defaults = dict(parser["defaults"])
    return Project(root, defaults)
