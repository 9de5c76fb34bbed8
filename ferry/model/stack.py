"""Stack definitions and config rendering.

A stack is a folder (``stacks/<name>/``)::

    stack.yml        what the stack runs (format below)
    defaults.yml     every variable the templates use, with its default, documented
    templates/       Jinja2 templates, rendered on the controller per host
    files/           optional: static files shipped as they are (plugins, scripts...)
    images/          optional: recipes for locally built stand-in images (devkit.images)

``stack.yml`` keys: ``name``, ``version``, ``description``; ``images`` (service name ->
image reference, each docker-saved into the bundle); ``templates`` (list of ``{src,
dest, secret, vars}``; ``secret: true`` files are written 0600 and their diffs show
changed keys only; ``vars`` is a mapping of extra variables for that template alone, so
one template can render one file per instance); ``files`` (list of ``{src, dest,
secret}``: a file or a directory under ``files/``, copied into the release unrendered;
a directory brings every file below it); ``generated_secrets`` (variable names
generated once per host and kept there); ``data_dirs`` (directories under the host's
data dir, outside releases); ``health_paths`` (service -> HTTP path answering 200 when
healthy); ``backup`` (what a consistent backup of the stack needs,
:class:`BackupSpec`):

.. code-block:: yaml

    backup:
      sqlite:                      # SQLite files under the data dir, copied with
        - service: backend         #   VACUUM INTO inside the service's container,
          file: db/chat.db         #   then PRAGMA integrity_check
      mysql:                       # mariadb-dump/mysqldump --single-transaction
        - service: mariadb         #   inside the container (root over the unix socket,
          password_env: ""         #   or user + the password in this container env var)
          user: root
      redis:                       # BGSAVE, wait for LASTSAVE to change, copy the RDB
        - service: redis
      volumes: [uploads]           # Compose named volumes archived as tar
      stop: []                     # services stopped during the backup (always restarted)
      exclude: []                  # paths under the data dir left out of the data tar

Without any ``backup`` key a backup still covers every named volume, every entry of the
data dir and the databases recognised by image (:mod:`ferry.model.backup`); the key adds
to that or, as ``backup: none``, opts out of data backups. Every ``data_dirs`` entry is
archived as tar (minus the SQLite files above, which are
copied consistently instead), with the current release's rendered config and
``secrets.json``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FerryError
from .yamlfile import load_yaml_file

STACK_KEYS = {"name", "version", "description", "images", "templates", "files", "generated_secrets",
              "data_dirs", "health_paths", "backup", "allow"}


ALLOW_KEYS = {"privileged": bool, "cap_add": list, "network_mode": str, "pid": str, "ipc": str, "uts": str,
              "userns_mode": str, "cgroup": str, "devices": list, "security_opt": list, "binds": list}
"""``allow.<service>`` keys: host access a service may have (checked on Compose's model
by :func:`ferry.model.compose.check_model`)."""


BACKUP_KEYS = {"sqlite", "mysql", "redis", "volumes", "stop", "exclude"}


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


_SAFE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


_SAFE_REL = re.compile(r"[A-Za-z0-9._-][A-Za-z0-9._/-]*")


def _rel_ok(value: str) -> bool:
    return bool(_SAFE_REL.fullmatch(value)) and ".." not in value.split("/")


def load_backup_spec(data: Any, path: Path, images: dict[str, str]) -> BackupSpec:
    """Validate the ``backup`` key of ``path`` (stack.yml).

    Names and paths are restricted to ``[A-Za-z0-9._/-]`` (no ``..``) because they end
    up in a shell script on the host (quoted as well).

    Raises:
        FerryError: unknown key, a service not in ``images``, a bad name or path; the
            message names the file and the key (``backup.sqlite[0].file``).
    """
    if data is None:
        return BackupSpec()
    if data == "none":
        return BackupSpec(none=True)
    _need(isinstance(data, dict), path, "backup", "must be a mapping, or 'none' to opt out of data backups")
    unknown = set(data) - BACKUP_KEYS
    _need(not unknown, path, f"backup.{sorted(unknown)[0]}" if unknown else "", "unknown key")
    spec = BackupSpec()
    fields = {"sqlite": ("service", "file"), "mysql": ("service", "user", "password_env"), "redis": ("service",)}
    for kind, allowed in fields.items():
        items = data.get(kind) or []
        _need(isinstance(items, list), path, f"backup.{kind}", "must be a list")
        for i, item in enumerate(items):
            key = f"backup.{kind}[{i}]"
            _need(isinstance(item, dict) and "service" in item, path, key, "needs 'service'")
            bad = set(item) - set(allowed)
            _need(not bad, path, f"{key}.{sorted(bad)[0]}" if bad else key, "unknown key")
            svc = str(item["service"])
            _need(svc in images, path, f"{key}.service", f"'{svc}' is not a service in 'images'")
            entry = {"service": svc}
            if kind == "sqlite":
                _need("file" in item, path, f"{key}.file", "is required (a path under the data dir)")
                _need(_rel_ok(str(item["file"])), path, f"{key}.file",
                      f"'{item['file']}' must be a relative path inside the data directory")
                entry["file"] = str(item["file"])
            if kind == "mysql":
                entry["user"] = str(item.get("user") or "root")
                entry["password_env"] = str(item.get("password_env") or "")
                _need(_SAFE_WORD.fullmatch(entry["user"]) is not None, path, f"{key}.user", "bad user name")
                _need(entry["password_env"] == "" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", entry["password_env"])
                      is not None, path, f"{key}.password_env", "must be an environment variable name")
            getattr(spec, kind).append(entry)
    for kind in ("volumes", "stop", "exclude"):
        items = data.get(kind) or []
        _need(isinstance(items, list), path, f"backup.{kind}", "must be a list")
        for i, v in enumerate(items):
            ok = _rel_ok(str(v)) if kind == "exclude" else _SAFE_WORD.fullmatch(str(v)) is not None
            _need(ok, path, f"backup.{kind}[{i}]", f"'{v}' is not a valid name")
            if kind == "stop":
                _need(str(v) in images, path, f"backup.stop[{i}]", f"'{v}' is not a service in 'images'")
        setattr(spec, kind, [str(v) for v in items])
    both = spec.services() & set(spec.stop)
    if both:
        raise FerryError(f"{path}: key 'backup.stop': '{sorted(both)[0]}' must keep running "
                         "(its database is backed up live)")
    return spec


def load_allow(data: Any, path: Path, images: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Validate the ``allow`` key of ``path`` (stack.yml): ``{service: {key: value}}``
    with the keys of :data:`ALLOW_KEYS` (``privileged: true``, ``cap_add: [NET_ADMIN]``,
    ``network_mode: host``, ``pid: host``..., ``devices: [/dev/x]``, ``security_opt:
    [seccomp:unconfined]``, ``binds: [/abs/host/path]``).

    Raises:
        FerryError: not a mapping, unknown key or service, wrong type, a relative bind.
    """
    if data is None:
        return {}
    _need(isinstance(data, dict), path, "allow", "must map service names to what they may do")
    out: dict[str, dict[str, Any]] = {}
    for svc, spec in data.items():
        key = f"allow.{svc}"
        _need(str(svc) in images, path, key, "is not a service in 'images'")
        _need(isinstance(spec, dict), path, key, f"must be a mapping of {', '.join(sorted(ALLOW_KEYS))}")
        for k, v in spec.items():
            _need(k in ALLOW_KEYS, path, f"{key}.{k}", f"unknown (one of {', '.join(sorted(ALLOW_KEYS))})")
            _need(isinstance(v, ALLOW_KEYS[k]), path, f"{key}.{k}", f"must be a {ALLOW_KEYS[k].__name__}")
            if ALLOW_KEYS[k] is str:
                _need(v == "host", path, f"{key}.{k}", "the only value to allow is 'host'")
            if k == "binds":
                for b in v:
                    _need(str(b).startswith("/") and ".." not in str(b).split("/"), path, f"{key}.binds",
                          f"'{b}' must be an absolute host path")
        out[str(svc)] = {k: ([str(x) for x in v] if isinstance(v, list) else v) for k, v in spec.items()}
    return out


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


def _release_path_ok(dest: str) -> bool:
    return bool(dest) and not dest.startswith("/") and ".." not in Path(dest).parts


def _static_files(stack_dir: Path, path: Path, entries: Any) -> list[StaticFile]:
    """Expand the ``files`` key: each ``{src, dest, secret}`` (src a file or a directory
    under ``files/``) into one :class:`StaticFile` per file, sorted within a directory."""
    _need(isinstance(entries, list), path, "files", "must be a list of {src, dest}")
    out: list[StaticFile] = []
    root = (stack_dir / FILES_DIR).resolve()
    for i, e in enumerate(entries):
        key = f"files[{i}]"
        _need(isinstance(e, dict) and "src" in e and "dest" in e and not set(e) - {"src", "dest", "secret"},
              path, key, "needs src and dest (and optionally secret)")
        src, dest, secret = str(e["src"]).strip("/"), str(e["dest"]).rstrip("/"), bool(e.get("secret", False))
        _need(_release_path_ok(dest), path, f"{key}.dest", "must be a relative path inside the release directory")
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
    """Load and validate ``stack_dir/stack.yml`` and ``stack_dir/defaults.yml``.

    Raises:
        FerryError: missing file, malformed YAML, unknown or ill-typed key, a template
            or static file that does not exist, a relative path escaping the release
            dir, two entries producing the same release file. The message names the
            file and the key.
    """
    path = stack_dir / "stack.yml"
    data = load_yaml_file(path, "stack")
    _need(isinstance(data, dict), path, "(top)", "must be a mapping")
    unknown = set(data) - STACK_KEYS
    _need(not unknown, path, sorted(unknown)[0] if unknown else "", "unknown key")
    for key in ("name", "version", "images", "templates"):
        _need(key in data, path, key, "is required")
    name = str(data["name"])
    _need(re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) is not None, path, "name",
          "lowercase letters, digits, '-' and '_' only (it names a Compose project)")
    images = data["images"]
    _need(isinstance(images, dict) and images, path, "images", "must map service names to image references")
    templates = []
    for i, t in enumerate(data["templates"] or []):
        key = f"templates[{i}]"
        _need(isinstance(t, dict) and "src" in t and "dest" in t, path, key, "needs src and dest")
        dest = str(t["dest"])
        _need(_release_path_ok(dest), path, f"{key}.dest", "must be a relative path inside the release directory")
        _need((stack_dir / "templates" / str(t["src"])).is_file(), path, f"{key}.src",
              f"template {t['src']} not found in {stack_dir / 'templates'}")
        _need(isinstance(t.get("vars", {}) or {}, dict), path, f"{key}.vars", "must be a mapping")
        templates.append(TemplateSpec(str(t["src"]), dest, bool(t.get("secret", False)), dict(t.get("vars") or {})))
    files = _static_files(stack_dir, path, data.get("files") or [])
    seen: dict[str, str] = {}
    produced = [(f"templates[{i}]", t.dest) for i, t in enumerate(templates)] + [(f.key, f.dest) for f in files]
    for key, dest in produced:
        _need(dest not in seen, path, f"{key}.dest", f"'{dest}' is also produced by {seen.get(dest)}")
        seen[dest] = key
    _need(any(t.dest == COMPOSE_FILE for t in templates), path, "templates",
          f"one template must render {COMPOSE_FILE}")
    for key in ("generated_secrets", "data_dirs"):
        _need(isinstance(data.get(key, []) or [], list), path, key, "must be a list")
    for d in data.get("data_dirs") or []:
        _need(not str(d).startswith("/") and ".." not in Path(str(d)).parts, path, "data_dirs",
              f"'{d}' must be a relative path inside the data directory")
    health = data.get("health_paths") or {}
    _need(isinstance(health, dict), path, "health_paths", "must map service names to URL paths")
    for svc in health:
        _need(svc in images, path, f"health_paths.{svc}", "is not a service in 'images'")
    defaults_file = stack_dir / "defaults.yml"
    defaults = load_yaml_file(defaults_file, "defaults") if defaults_file.exists() else {}
    _need(isinstance(defaults or {}, dict), defaults_file, "(top)", "must be a mapping")
    return Stack(dir=stack_dir, name=name, version=str(data["version"]),
                 description=str(data.get("description", "")), images={str(k): str(v) for k, v in images.items()},
                 templates=templates, generated_secrets=[str(s) for s in data.get("generated_secrets") or []],
                 data_dirs=[str(d) for d in data.get("data_dirs") or []],
                 health_paths={str(k): str(v) for k, v in health.items()}, defaults=defaults or {},
                 files=files, backup=load_backup_spec(data.get("backup"), path, images),
                 allow=load_allow(data.get("allow"), path, images))
