"""Stack definitions and config rendering.

A stack is a folder (``stacks/<name>/``)::

    stack.yml        what the stack runs (format: stack.schema.yml)
    defaults.yml     every variable the templates use, declared with its type, default
                     and help (format: :mod:`ferry.model.vars`)
    templates/       Jinja2 templates, rendered on the controller per host
    files/           optional: static files shipped as they are (plugins, scripts...)
    images/          optional: recipes for locally built stand-in images (devkit.images)

``stack.yml``'s format is described once, key by key, by its JSON Schema
(``stack.schema.yml`` next to this module; :data:`STACK_SCHEMA`), e.g. the ``backup``
key (what a consistent backup of the stack needs, :class:`BackupSpec`):

.. code-block:: yaml

    backup:
      sqlite: [{service: backend, file: db/chat.db}]   # VACUUM INTO, integrity_check
      mysql: [{service: mariadb, user: root, password_env: ""}]
      redis: [{service: redis}]                       # BGSAVE, copy the RDB
      volumes: [uploads]                              # named volumes archived as tar
      stop: []                                        # services stopped meanwhile
      exclude: []                                     # paths left out of the data tar

Without any ``backup`` key a backup still covers every named volume, every entry of the
data dir and the databases recognised by image (:mod:`ferry.model.backup`); the key adds
to that or, as ``backup: none``, opts out of data backups. Every ``data_dirs`` entry is
archived as tar (minus the SQLite files above, which are
copied consistently instead), with the current release's rendered config and
``secrets.json``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FerryError
from .schema import check, load_schema
from .vars import Declarations, load_declarations
from .yamlfile import load_yaml_file

STACK_SCHEMA = load_schema(Path(__file__).with_name("stack.schema.yml"))
"""JSON Schema of ``stack.yml`` (``stack.schema.yml``: every key, described)."""


COMPOSE_FILE = "compose.yml"


FILES_DIR = "files"


_SKIP = ("__pycache__", ".pyc", ".pyo", ".DS_Store", "~")


@dataclass
class TemplateSpec:
    """One template: ``src`` under ``templates/``, ``dest`` relative to the release dir,
    ``vars``: extra variables seen by this template only."""

    src: str
    dest: str
    secret: bool = False
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class StaticFile:
    """One static file: ``src`` under ``files/`` (a file, after directory expansion),
    ``dest`` relative to the release dir, ``mode`` on the host (0600 when secret, 0755
    when the source is executable, else 0644)."""

    src: str
    dest: str
    secret: bool = False
    mode: int = 0o644
    key: str = ""


@dataclass
class BackupSpec:
    """The ``backup`` key of stack.yml (format in the module docstring).

    Attributes:
        sqlite: ``[{"service": str, "file": path relative to the data dir}]``.
        mysql: ``[{"service": str, "user": str, "password_env": str}]``.
        redis: ``[{"service": str}]``.
        volumes: Compose volume names (keys of the compose file's ``volumes``).
        stop: services stopped while the backup runs.
        exclude: paths relative to the data dir left out of the data tar.
        none: ``backup: none``: the stack opts out of data backups (config only).
    """

    sqlite: list[dict[str, str]] = field(default_factory=list)
    mysql: list[dict[str, str]] = field(default_factory=list)
    redis: list[dict[str, str]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    none: bool = False

    def services(self) -> set[str]:
        """Services whose containers must be running for a consistent backup."""
        return {e["service"] for e in self.sqlite + self.mysql + self.redis}


def load_backup_spec(data: Any, path: Path, images: dict[str, str]) -> BackupSpec:
    """The ``backup`` key of ``path`` (stack.yml), whose shape :data:`STACK_SCHEMA`
    has checked (names and paths restricted to ``[A-Za-z0-9._/-]``, no ``..``: they end
    up in a shell script on the host, quoted as well).

    Raises:
        FerryError: a service not in ``images``, or a service both backed up live and
            stopped; the message names the file and the key (``backup.sqlite[0].service``).
    """
    if data == "none":
        return BackupSpec(none=True)
    data = data or {}
    spec = BackupSpec()
    for kind in ("sqlite", "mysql", "redis"):
        for i, item in enumerate(data.get(kind) or []):
            _need(item["service"] in images, path, f"backup.{kind}[{i}].service",
                  f"'{item['service']}' is not a service in 'images'")
            entry = dict(item)
            if kind == "mysql":
                entry = {"service": item["service"], "user": item.get("user") or "root",
                         "password_env": item.get("password_env") or ""}
            getattr(spec, kind).append(entry)
    for i, svc in enumerate(data.get("stop") or []):
        _need(svc in images, path, f"backup.stop[{i}]", f"'{svc}' is not a service in 'images'")
    spec.volumes, spec.stop, spec.exclude = (list(data.get(k) or []) for k in ("volumes", "stop", "exclude"))
    both = spec.services() & set(spec.stop)
    if both:
        raise FerryError(f"{path}: key 'backup.stop': '{sorted(both)[0]}' must keep running "
                         "(its database is backed up live)")
    return spec


def load_allow(data: Any, path: Path, images: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The ``allow`` key of ``path`` (stack.yml), whose shape :data:`STACK_SCHEMA` has
    checked: ``{service: {key: value}}``, host access a service may have (``privileged:
    true``, ``cap_add: [NET_ADMIN]``, ``network_mode: host``, ``pid: host``...,
    ``devices: [/dev/x]``, ``security_opt: [seccomp:unconfined]``, ``binds:
    [/abs/host/path]``), checked on Compose's model by
    :func:`ferry.model.compose.check_model`.

    Raises:
        FerryError: a service that is not in ``images``.
    """
    for svc in data or {}:
        _need(svc in images, path, f"allow.{svc}", "is not a service in 'images'")
    return {svc: dict(spec or {}) for svc, spec in (data or {}).items()}


@dataclass
class Stack:
    """A loaded, validated stack definition (see module docstring for the format)."""

    dir: Path
    name: str
    version: str
    description: str
    images: dict[str, str]
    templates: list[TemplateSpec]
    generated_secrets: list[str] = field(default_factory=list)
    data_dirs: list[str] = field(default_factory=list)
    health_paths: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    files: list[StaticFile] = field(default_factory=list)
    backup: BackupSpec = field(default_factory=BackupSpec)
    allow: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: Declarations = field(default_factory=Declarations)

    @property
    def file(self) -> Path:
        """Path of ``stack.yml``."""
        return self.dir / "stack.yml"

    def secret_files(self) -> set[str]:
        """Release paths written 0600 whose diffs show changed keys only."""
        return {t.dest for t in self.templates if t.secret} | {f.dest for f in self.files if f.secret}

    def release_files(self) -> list[str]:
        """Every path (relative to the release dir) a release holds: templates, then static files."""
        return [t.dest for t in self.templates] + [f.dest for f in self.files]

    def file_mode(self, dest: str) -> int:
        """Mode bits of release file ``dest`` on the host (0600 for secret files)."""
        if dest in self.secret_files():
            return 0o600
        return next((f.mode for f in self.files if f.dest == dest), 0o644)

    def template_file(self, dest: str) -> Path:
        """The controller file that produces release file ``dest`` (for error messages)."""
        for t in self.templates:
            if t.dest == dest:
                return self.dir / "templates" / t.src
        for f in self.files:
            if f.dest == dest:
                return self.dir / FILES_DIR / f.src
        return self.file


def _need(cond: bool, path: Path, key: str, msg: str) -> None:
    if not cond:
        raise FerryError(f"{path}: key '{key}': {msg}")


def _static_files(stack_dir: Path, path: Path, entries: list[dict[str, Any]]) -> list[StaticFile]:
    """Expand the ``files`` key: each ``{src, dest, secret}`` (src a file or a directory
    under ``files/``) into one :class:`StaticFile` per file, sorted within a directory."""
    out: list[StaticFile] = []
    root = (stack_dir / FILES_DIR).resolve()
    for i, e in enumerate(entries):
        key = f"files[{i}]"
        src, dest, secret = e["src"].strip("/"), e["dest"].rstrip("/"), bool(e.get("secret", False))
        full = (root / src).resolve()
        _need(full == root or root in full.parents, path, f"{key}.src", f"must be inside {root}")
        _need(full.exists(), path, f"{key}.src", f"{src} not found in {root}")
        found = [full] if full.is_file() else sorted(
            p for p in full.rglob("*") if p.is_file() and not any(part.endswith(_SKIP) for part in p.parts))
        for p in found:
            rel_src = p.relative_to(root).as_posix()
            rel_dest = dest if p == full else posixpath.join(dest, p.relative_to(full).as_posix())
            mode = 0o755 if p.stat().st_mode & 0o111 else 0o644
            out.append(StaticFile(rel_src, rel_dest, secret, mode, key))
    return out


def load_stack(stack_dir: Path) -> Stack:
    """Load and validate ``stack_dir/stack.yml`` (against :data:`STACK_SCHEMA`, then
    what a schema cannot say) and ``stack_dir/defaults.yml`` (:mod:`ferry.model.vars`).

    Raises:
        FerryError: missing file, malformed YAML, a key the schema refuses (unknown,
            ill-typed, a name or version that is no identifier, a path with ``..``), a
            template or static file that does not exist, two entries producing the same
            release file, a service that is not in ``images``. The message names the
            file and the key.
    """
    path = stack_dir / "stack.yml"
    data = load_yaml_file(path, "stack")
    check(data, STACK_SCHEMA, str(path))
    images = data["images"]
    templates = []
    for i, t in enumerate(data["templates"]):
        _need((stack_dir / "templates" / t["src"]).is_file(), path, f"templates[{i}].src",
              f"template {t['src']} not found in {stack_dir / 'templates'}")
        templates.append(TemplateSpec(t["src"], t["dest"], bool(t.get("secret", False)), dict(t.get("vars") or {})))
    files = _static_files(stack_dir, path, data.get("files") or [])
    seen: dict[str, str] = {}
    produced = [(f"templates[{i}]", t.dest) for i, t in enumerate(templates)] + [(f.key, f.dest) for f in files]
    for key, dest in produced:
        _need(dest not in seen, path, f"{key}.dest", f"'{dest}' is also produced by {seen.get(dest)}")
        seen[dest] = key
    _need(any(t.dest == COMPOSE_FILE for t in templates), path, "templates",
          f"one template must render {COMPOSE_FILE}")
    health = data.get("health_paths") or {}
    for svc in health:
        _need(svc in images, path, f"health_paths.{svc}", "is not a service in 'images'")
    variables = load_declarations(stack_dir / "defaults.yml")
    return Stack(dir=stack_dir, name=data["name"], version=str(data["version"]),
                 description=data.get("description", ""), images=dict(images), templates=templates,
                 generated_secrets=list(data.get("generated_secrets") or []),
                 data_dirs=list(data.get("data_dirs") or []),
                 health_paths=dict(health), defaults=variables.defaults(),
                 files=files, backup=load_backup_spec(data.get("backup"), path, images),
                 allow=load_allow(data.get("allow"), path, images), variables=variables)
