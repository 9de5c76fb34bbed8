"""Stack definitions and config rendering.

A stack is a folder (``stacks/<name>/``)::

    stack.yml        what the stack runs (format below)
    defaults.yml     every variable the templates use, with its default, documented
    templates/       Jinja2 templates, rendered on the controller per host
    images/          optional: recipes for locally built stand-in images (ferry.images)

``stack.yml`` keys: ``name``, ``version``, ``description``; ``images`` (service name ->
image reference, each docker-saved into the bundle); ``templates`` (list of ``{src,
dest, secret}``; ``secret: true`` files are written 0600 and never shown in diffs);
``generated_secrets`` (variable names generated once per host and kept there);
``data_dirs`` (directories under the host's data dir, outside releases);
``health_paths`` (service -> HTTP path answering 200 when healthy); ``backup`` (what a
consistent backup of the stack needs, :class:`BackupSpec`):

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

Every ``data_dirs`` entry is archived as tar (minus the SQLite files above, which are
copied consistently instead), with the current release's rendered config and
``secrets.json``.

Rendering uses Jinja2 with ``StrictUndefined``: a variable with no value is an error
naming the template, the variable and the host, raised before anything reaches a host.
The rendered ``compose.yml`` must follow the Compose specification; Ferry adds a label
``ferry.config-digest`` to every service that bind-mounts a rendered file, so
``docker compose up`` recreates exactly the services whose mounted config changed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .errors import FerryError
from .inventory import load_yaml_file

STACK_KEYS = {"name", "version", "description", "images", "templates", "generated_secrets",
              "data_dirs", "health_paths", "backup"}
BACKUP_KEYS = {"sqlite", "mysql", "redis", "volumes", "stop", "exclude"}
COMPOSE_FILE = "compose.yml"
DIGEST_LABEL = "ferry.config-digest"


@dataclass
class TemplateSpec:
    """One template: ``src`` under ``templates/``, ``dest`` relative to the release dir."""

    src: str
    dest: str
    secret: bool = False


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
    """

    sqlite: list[dict[str, str]] = field(default_factory=list)
    mysql: list[dict[str, str]] = field(default_factory=list)
    redis: list[dict[str, str]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

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
    _need(isinstance(data, dict), path, "backup", "must be a mapping")
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
    backup: BackupSpec = field(default_factory=BackupSpec)

    @property
    def file(self) -> Path:
        return self.dir / "stack.yml"

    def secret_files(self) -> set[str]:
        return {t.dest for t in self.templates if t.secret}


def _need(cond: bool, path: Path, key: str, msg: str) -> None:
    if not cond:
        raise FerryError(f"{path}: key '{key}': {msg}")


def load_stack(stack_dir: Path) -> Stack:
    """Load and validate ``stack_dir/stack.yml`` and ``stack_dir/defaults.yml``.

    Raises:
        FerryError: missing file, malformed YAML, unknown or ill-typed key, a template
            file that does not exist, a relative path escaping the release dir. The
            message names the file and the key.
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
        _need(not dest.startswith("/") and ".." not in Path(dest).parts, path, f"{key}.dest",
              "must be a relative path inside the release directory")
        _need((stack_dir / "templates" / str(t["src"])).is_file(), path, f"{key}.src",
              f"template {t['src']} not found in {stack_dir / 'templates'}")
        templates.append(TemplateSpec(str(t["src"]), dest, bool(t.get("secret", False))))
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
                 backup=load_backup_spec(data.get("backup"), path, images))


# -- rendering -------------------------------------------------------------------------

def dotenv_value(value: Any) -> str:
    """Jinja2 filter ``dotenv``: a value quoted for a Compose ``env_file`` line.

    Single quotes make Compose take the value literally (no ``$`` interpolation).

    Raises:
        FerryError: the value contains a newline or a single quote, which a one-line
            ``.env`` entry cannot carry literally.
    """
    s = "" if value is None else str(value)
    if "\n" in s or "'" in s:
        raise FerryError("a .env value may not contain a newline or a single quote")
    return f"'{s}'"


def _environment(stack: Stack) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(stack.dir / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["dotenv"] = dotenv_value
    env.filters["to_json"] = lambda v: __import__("json").dumps(v, ensure_ascii=False)
    return env


def render(stack: Stack, context: dict[str, Any], host: str) -> dict[str, bytes]:
    """Render every template of ``stack`` for one host.

    Args:
        stack: the stack.
        context: merged variables (defaults < group < host < --set) plus ``stack``,
            ``paths``, ``images`` and the generated secrets.
        host: inventory name, for error messages.

    Returns:
        ``{dest: content_bytes}``; ``compose.yml`` carries the config-digest labels.

    Raises:
        FerryError: an undefined variable (named, with template and host), a template
            syntax error, or a ``compose.yml`` that is not a Compose mapping of services.
    """
    env = _environment(stack)
    out: dict[str, bytes] = {}
    for t in stack.templates:
        try:
            text = env.get_template(t.src).render(**context)
        except jinja2.UndefinedError as exc:
            m = re.search(r"'([^']+)' is undefined", str(exc))
            var = m.group(1) if m else str(exc)
            raise FerryError(f"{stack.dir / 'templates' / t.src}: variable '{var}' has no value "
                             f"for host {host} (set it in the inventory or with --set)") from None
        except jinja2.TemplateSyntaxError as exc:
            raise FerryError(f"{stack.dir / 'templates' / t.src}:{exc.lineno}: template error: {exc.message}") from None
        except FerryError as exc:
            raise FerryError(f"{stack.dir / 'templates' / t.src}: {exc} (host {host})") from None
        out[t.dest] = text.encode("utf-8")
    out[COMPOSE_FILE] = add_config_digests(out, context["paths"]["current"], stack, host)
    return out


def load_compose(compose_text: bytes | str, where: str = COMPOSE_FILE) -> dict:
    """Parse a Compose file and check it has a ``services`` mapping.

    Raises:
        FerryError: not YAML, or no ``services`` mapping.
    """
    try:
        data = yaml.safe_load(compose_text)
    except yaml.YAMLError as exc:
        raise FerryError(f"{where}: rendered compose file is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise FerryError(f"{where}: rendered compose file has no 'services' mapping")
    return data


def compose_services(compose_text: bytes | str, where: str = COMPOSE_FILE) -> dict[str, dict]:
    """The ``services`` mapping of a Compose file (see :func:`load_compose`)."""
    return load_compose(compose_text, where)["services"]


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """``(source, target)`` of a service's bind mounts, short or long Compose syntax.
    Named volumes are returned with the volume name as source (no leading ``/``/``.``)."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2:
                out.append((parts[0], parts[1]))
        elif isinstance(v, dict) and v.get("source") and v.get("target"):
            out.append((str(v["source"]), str(v["target"])))
    return out


def add_config_digests(files: dict[str, bytes], current_dir: str, stack: Stack, host: str) -> bytes:
    """Label each service with the digest of the rendered files it bind-mounts.

    Compose recreates a service when its configuration changes, but the *content* of a
    bind-mounted file is not part of that configuration. The label makes it so: change
    ``nginx.conf`` and only nginx is recreated.

    Args:
        files: rendered files ``{dest: bytes}`` (must include ``compose.yml``).
        current_dir: the host path of the ``current`` release symlink.
        stack: for error messages and the service list.
        host: for error messages.
    """
    where = f"{stack.dir / 'templates'} ({COMPOSE_FILE} for {host})"
    data = load_compose(files[COMPOSE_FILE], where)
    services = data["services"]
    missing = set(stack.images) - set(services)
    if missing:
        raise FerryError(f"{stack.file}: key 'images': service '{sorted(missing)[0]}' is not in {COMPOSE_FILE}")
    prefix = current_dir.rstrip("/") + "/"
    for name, svc in services.items():
        used = sorted(src[len(prefix):] for src, _ in bind_mounts(svc or {})
                      if src.startswith(prefix) and src[len(prefix):] in files)
        if not used:
            continue
        h = hashlib.sha256()
        for rel in used:
            h.update(rel.encode() + b"\0" + files[rel] + b"\0")
        labels = svc.setdefault("labels", {})
        if isinstance(labels, list):
            labels = dict(item.split("=", 1) for item in labels)
            svc["labels"] = labels
        labels[DIGEST_LABEL] = h.hexdigest()[:16]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


def template_context(variables: dict[str, Any], stack: Stack, paths: dict[str, str],
                     secrets: dict[str, str], host: str) -> dict[str, Any]:
    """The variables a template sees: the merged inventory variables, the generated
    secrets by name (``SECRET_KEY``), and ``stack`` (name, version), ``images``
    (service -> reference), ``paths`` (``stack_dir``, ``current``, ``data`` on the host)
    and ``inventory_hostname`` (as in Ansible)."""
    return {**variables, **secrets, "stack": {"name": stack.name, "version": stack.version},
            "images": dict(stack.images), "paths": dict(paths), "inventory_hostname": host}
