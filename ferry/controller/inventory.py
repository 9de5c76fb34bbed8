"""Inventory: hosts, groups and their variables, in the Ansible YAML inventory format.

The format is Ansible's (``ansible.builtin.yaml`` inventory plugin)::

    all:
      vars: {ansible_user: root}
      children:
        prod:
          hosts:
            web-1: {ansible_host: 10.0.0.5, ansible_port: 22}
          vars: {llm_model: gpt-4o}

plus, as in Ansible, optional ``group_vars/<group>.yml`` and ``host_vars/<host>.yml``
files next to the inventory file. An existing Ansible inventory works as is.

Variable precedence, lowest to highest (a later layer overrides an earlier one):

1. role defaults (``roles/<role>/defaults.yml``) and the stack's ``defaults.yml``
2. group vars: ``all`` first, then groups ordered by depth (a child overrides its
   parent), groups at the same depth by name, as Ansible does
3. host vars
4. ``--set key=value`` on the command line

The connection variables Ferry reads are Ansible's: ``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file``; plus ``ferry_known_hosts`` (path of
the known_hosts file used to verify host keys, default ``~/.ssh/known_hosts``) and
``ferry_connect_timeout`` (seconds, default 10). Relative paths are relative to the
inventory file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import FerryError
from ..model.vars import merge_vars, parse_set_args  # noqa: F401 (re-exported)
from ..model.yamlfile import load_yaml_file

GROUP_KEYS = {"hosts", "vars", "children"}


@dataclass
class Host:
    """One inventory host.

    Attributes:
        name: inventory name (``web-1``); used in every message about the host.
        groups: names of the groups the host belongs to, directly or through children.
        vars: host variables merged from group and host vars (no defaults, no --set).
        origins: where each of ``vars`` comes from, for messages
            (``inventory.yml group prod``, ``host_vars/web-1.yml``).
    """

    name: str
    groups: set[str] = field(default_factory=set)
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


@dataclass
class Group:
    """One inventory group: its own vars, direct hosts and child group names."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    origins: dict[str, str] = field(default_factory=dict)


class Inventory:
    """An Ansible-format inventory loaded from one YAML file.

    Args:
        path: the inventory file (``.yml``/``.yaml``).

    Raises:
        FerryError: the file is missing, is not valid YAML, or is not shaped like an
            Ansible inventory (the message names the file and the group or key).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.base_dir = self.path.parent
        self.groups: dict[str, Group] = {}
        data = load_yaml_file(self.path, "inventory")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise FerryError(f"{self.path}: inventory must be a mapping of group names")
        self.groups["all"] = Group("all")
        for name, body in data.items():
            self._add_group(str(name), body, parent=None)
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                group.parents.add("all")
                self.groups["all"].children.append(name)
        self._load_vars_dirs()
        self.hosts: dict[str, Host] = {}
        self._resolve_hosts()

    # -- parsing ---------------------------------------------------------------------

    def _add_group(self, name: str, body: Any, parent: str | None) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise FerryError(f"{self.path}: group '{name}' must be a mapping with hosts/vars/children")
        unknown = set(body) - GROUP_KEYS
        if unknown:
            raise FerryError(f"{self.path}: group '{name}' has unknown key '{sorted(unknown)[0]}' "
                             f"(expected hosts, vars, children)")
        group = self.groups.setdefault(name, Group(name))
        if parent is not None and parent != name:
            group.parents.add(parent)
            if name not in self.groups[parent].children:
                self.groups[parent].children.append(name)
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise FerryError(f"{self.path}: 'vars' of group '{name}' must be a mapping")
        group.vars.update(gvars)
        group.origins.update({str(k): f"{self.path} group {name}" for k in gvars})
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise FerryError(f"{self.path}: 'hosts' of group '{name}' must be a mapping of host names")
        for hname, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                raise FerryError(f"{self.path}: host '{hname}' in group '{name}' must map to its vars")
            group.hosts.setdefault(str(hname), {}).update(hvars or {})
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise FerryError(f"{self.path}: 'children' of group '{name}' must be a mapping of groups")
        for cname, cbody in children.items():
            self._add_group(str(cname), cbody, parent=name)

    def _load_vars_dirs(self) -> None:
        """Merge ``group_vars/`` and ``host_vars/`` files next to the inventory (Ansible layout)."""
        self._host_file_vars: dict[str, dict[str, Any]] = {}
        self._host_file_origins: dict[str, dict[str, str]] = {}
        for kind in ("group_vars", "host_vars"):
            folder = self.base_dir / kind
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.suffix not in (".yml", ".yaml"):
                    continue
                data = load_yaml_file(f, kind) or {}
                if not isinstance(data, dict):
                    raise FerryError(f"{f}: {kind} file must be a mapping")
                if kind == "group_vars":
                    group = self.groups.setdefault(f.stem, Group(f.stem))
                    group.vars.update(data)
                    group.origins.update({str(k): str(f) for k in data})
                else:
                    self._host_file_vars.setdefault(f.stem, {}).update(data)
                    self._host_file_origins.setdefault(f.stem, {}).update({str(k): str(f) for k in data})

    def _depth(self, name: str, seen: frozenset = frozenset()) -> int:
        group = self.groups[name]
        if name == "all" or not group.parents:
            return 0
        if name in seen:
            raise FerryError(f"{self.path}: group '{name}' is its own ancestor")
        return 1 + max(self._depth(p, seen | {name}) for p in group.parents)

    def _ancestors(self, name: str) -> set[str]:
        out = {name}
        for parent in self.groups[name].parents:
            out |= self._ancestors(parent)
        return out

    def _resolve_hosts(self) -> None:
        direct: dict[str, set[str]] = {}
        for gname, group in self.groups.items():
            for hname in group.hosts:
                direct.setdefault(hname, set()).add(gname)
        clash = set(direct) & set(self.groups)
        if clash:
            raise FerryError(f"{self.path}: '{sorted(clash)[0]}' is both a host and a group")
        for hname, gnames in direct.items():
            groups: set[str] = {"all"}
            for g in gnames:
                groups |= self._ancestors(g)
            merged: dict[str, Any] = {}
            origins: dict[str, str] = {}
            for g in sorted(groups, key=lambda n: (self._depth(n), n)):
                merged.update(self.groups[g].vars)
                origins.update(self.groups[g].origins)
            for g in sorted(gnames, key=lambda n: (self._depth(n), n)):
                merged.update(self.groups[g].hosts[hname])
                origins.update({str(k): f"{self.path} host {hname}" for k in self.groups[g].hosts[hname]})
            merged.update(self._host_file_vars.get(hname, {}))
            origins.update(self._host_file_origins.get(hname, {}))
            self.hosts[hname] = Host(hname, groups, merged, origins)

    # -- queries ---------------------------------------------------------------------

    def group_hosts(self, name: str) -> list[str]:
        """Host names in group ``name`` and its descendants, in inventory order
        (depth first: a group's own hosts, then each child's)."""
        out: list[str] = []
        seen: set[str] = set()

        def walk(g: str) -> None:
            if g in seen:
                return
            seen.add(g)
            out.extend(h for h in self.groups[g].hosts if h not in out)
            for child in self.groups[g].children:
                walk(child)
        walk(name)
        return out

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching ``pattern``: a host name, a group name, or a comma list of them.

        Args:
            pattern: e.g. ``prod``, ``web-1``, ``prod,staging``.

        Returns:
            Matching hosts, in inventory order, without duplicates.

        Raises:
            FerryError: a name is neither a host nor a group (lists the known ones), or
                the selection is empty.
        """
        names: list[str] = []
        for part in [p.strip() for p in pattern.split(",") if p.strip()]:
            if part in self.hosts:
                found = [part]
            elif part in self.groups:
                found = self.group_hosts(part)
            else:
                raise FerryError(
                    f"unknown host or group '{part}' in {self.path}; known groups: "
                    f"{', '.join(sorted(self.groups))}; known hosts: {', '.join(sorted(self.hosts)) or '(none)'}")
            names.extend(n for n in found if n not in names)
        if not names:
            raise FerryError(f"'{pattern}' selects no hosts in {self.path}")
        return [self.hosts[n] for n in names]

    def resolve_path(self, value: str) -> Path:
        """A path from an inventory variable: ``~`` expanded, relative to the inventory dir."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


