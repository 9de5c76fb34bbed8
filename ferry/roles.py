"""Roles: ``roles/<name>/`` folders, each with ``defaults.yml`` and ``role.py``.

A role module defines ``run(ctx: RoleContext) -> RoleResult`` and may define
``preflight(ctx) -> None``: read-only checks that raise :class:`ferry.errors.HostError`
for a host the role cannot serve; deploy runs every role's preflight on every host
before it changes anything anywhere. It may also define ``facts(ctx) -> list[argv]``:
the read-only commands its preflight and run read first, which deploy gathers for every
role in ONE round trip under the lock (:mod:`ferry.host.facts`; the role then runs them
as usual and gets the gathered answer while nothing on the host changed). It reads facts from the
host through ``ctx.t`` (a :class:`ferry.host.transport.Transport`), decides, and changes
only what is not already right (idempotent); with ``ctx.check`` it changes nothing
and reports what it would do (check mode). Role defaults are the lowest layer of
variable precedence (see ``ferry.controller.inventory``).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import FerryError
from .resources import data_dir
from .model.vars import Declarations, load_declarations

ROLES_DIR = data_dir("roles")

DEPLOY_ROLES = ["upload-bundle", "install-docker-offline", "load-images", "render-config", "compose-up",
                "backup", "prune-releases"]
"""The roles ``inv deploy`` runs, in order; verification runs before ``prune-releases``,
which only runs when it passed. ``backup`` there installs the backup program and the new
release's settings (scheduled backups follow the release that runs)."""

ENGINE_ROLES = ["swarm-cluster", "stack-deploy"]
"""Roles of the engines other than Compose (``ferry_engine: swarm``,
:mod:`ferry.actions.swarm`); their defaults are part of every host's variables."""


@dataclass
class RoleResult:
    """What a role did on one host.

    Attributes:
        changed: the host was changed (or, in check mode, would be).
        summary: one line for humans, e.g. ``uploaded 0 B (0 of 14 files)``.
        metrics: numbers for summaries and benchmarks (``bytes``, ``images_loaded``,
            ``recreated``, ``seconds``...).
    """

    changed: bool
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostState:
    """What the roles of one host run learn and hand on, in order (typed, not a dict).

    Attributes:
        host_facts: :class:`ferry.host.engine.EngineFacts` (install-docker-offline's
            preflight, renewed after it installs).
        docker_layout: ``deb`` or ``static``: how this host gets its Docker engine
            (install-docker-offline's preflight, from ``docker_install``).
        images_changed: load-images loaded or re-tagged an image.
        rendered: the new release's files ``{dest: bytes}`` (render-config), or the
            switched-to release's ``compose.yml`` (rollback).
        last_up: ``up.json`` as read before this run: ``{"release", "containers"}``.
        previous_release: the release ``current`` named before this run (None: first deploy).
        release: the release this run deploys (new, or the current one when unchanged).
        release_changed: ``release`` differs from ``previous_release`` (a new release
            directory was written, or rollback chose another one).
        containers_before: IDs of the stack's containers before this run's ``up``
            (a failed first deploy removes only the others).
        model: Compose's model of ``release`` (:class:`ferry.model.compose.ComposeModel`;
            render-config's; on a rollback, read on the host with the lock, else by
            compose-up once the release is up).
        planned_model: the model of deploy's trial render (compose-up's preflight).
        activated: compose-up switched ``current`` and brought the release up (a
            failure after that, such as a restart loop, must switch back).
        after_up: read-only commands the action will issue right after compose-up
            (verification's first batch, the backup role's facts): compose-up reads
            them in the round trip that activates the release, after ``up`` succeeded.
        backup_request: :class:`ferry.model.backup.BackupRequest` (``inv backup``): the
            backup role runs a backup after installing the program.
        restore_request: :class:`ferry.model.backup.RestoreRequest` (``inv restore``).
        backup_plan: :class:`ferry.model.backup.BackupPlan` the backup role computed
            (None when the settings on the host were up to date).
        engine: :class:`ferry.model.imagelayers.EngineImages`: the images (IDs, tags,
            layer chain IDs) the host's Docker held when upload-bundle planned.
        engine_changed: install-docker-offline installed, restarted or started Docker.
        cluster: on a swarm, what the nodes' ``swarm-cluster`` runs share (its
            ``ClusterRun``).
        swarm: on a swarm's primary manager, the other nodes ``stack-deploy`` acts on
            (its ``SwarmRun``).
    """

    host_facts: Any = None
    docker_layout: str | None = None
    images_changed: bool = False
    rendered: dict[str, bytes] = field(default_factory=dict)
    last_up: dict[str, Any] = field(default_factory=dict)
    previous_release: str | None = None
    release: str | None = None
    release_changed: bool = False
    containers_before: list[str] = field(default_factory=list)
    model: Any = None
    planned_model: Any = None
    activated: bool = False
    after_up: list = field(default_factory=list)
    backup_request: Any = None
    restore_request: Any = None
    backup_plan: Any = None
    engine: Any = None
    engine_changed: bool = False
    cluster: Any = None
    swarm: Any = None


@dataclass
class RoleContext:
    """Everything a role may use on one host.

    Attributes:
        host: inventory name.
        t: the host's transport (the SSH boundary).
        vars: merged variables (role/stack defaults < group < host < --set).
        bundle: :class:`ferry.controller.bundle.Bundle` being deployed.
        stack: :class:`ferry.model.stack.Stack` from the bundle.
        paths: :class:`ferry.model.paths.HostPaths` on the host.
        ui: :class:`ferry.ui.UI`.
        check: check mode: report, change nothing.
        state: what the roles of one host run hand on (:class:`HostState`).
    """

    host: str
    t: Any
    vars: dict[str, Any]
    bundle: Any
    stack: Any
    paths: Any
    ui: Any
    check: bool = False
    state: HostState = field(default_factory=HostState)


_cache: dict[str, ModuleType] = {}


def load_role(name: str) -> ModuleType:
    """Import ``roles/<name>/role.py``.

    Raises:
        FerryError: no such role folder.
    """
    if name in _cache:
        return _cache[name]
    path = ROLES_DIR / name / "role.py"
    if not path.is_file():
        known = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "role.py").is_file())
        raise FerryError(f"unknown role '{name}' (known: {', '.join(known)})")
    spec = importlib.util.spec_from_file_location(f"ferry_roles.{name.replace('-', '_')}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module        # as an import does: dataclasses in a role need it
    spec.loader.exec_module(module)
    _cache[name] = module
    return module


@functools.lru_cache(maxsize=1)
def role_declarations() -> Declarations:
    """The variables every role declares: ``roles/defaults.yml`` (shared: ferry_root...),
    then each role's ``defaults.yml`` (format: :mod:`ferry.model.vars`), read once.

    Raises:
        FerryError: a malformed declaration or a variable declared twice.
    """
    out = load_declarations(ROLES_DIR / "defaults.yml")
    for folder in sorted(p for p in ROLES_DIR.iterdir() if (p / "role.py").is_file()):
        out = out + load_declarations(folder / "defaults.yml")
    return out


def role_defaults(name: str) -> dict[str, Any]:
    """The defaults ``roles/<name>/defaults.yml`` declares (empty when absent)."""
    return load_declarations(ROLES_DIR / name / "defaults.yml").defaults()


def all_role_defaults(names: list[str] | None = None) -> dict[str, Any]:
    """The defaults of ``roles/defaults.yml`` (shared: ferry_root...), then of the given
    roles (default: every role), merged in order."""
    if names is None:
        return role_declarations().defaults()
    out = load_declarations(ROLES_DIR / "defaults.yml").defaults()
    for n in names:
        out.update(role_defaults(n))
    return out
