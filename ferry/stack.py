"""Stack definitions and config rendering.

A stack is a folder (``stacks/<name>/``)::

    stack.yml        what the stack runs (format below)
    defaults.yml     every variable the templates use, with its default, documented
    templates/       Jinja2 templates, rendered on the controller per host
    files/           optional: static files shipped as they are (plugins, scripts...)
    images/          optional: recipes for locally built stand-in images (ferry.images)

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

Every ``data_dirs`` entry is archived as tar (minus the SQLite files above, which are
copied consistently instead), with the current release's rendered config and
``secrets.json``.

Rendering uses Jinja2 with ``StrictUndefined``: a variable with no value is an error
naming the template, the variable and the host, raised before anything reaches a host.
Text files (rendered or static) reach the host with LF line endings (CRLF and CR are
normalised); a file with a NUL byte is binary and shipped as it is. A rendered
``*.json`` must parse as JSON (UTF-8) and a ``*.yaml``/``*.yml`` as YAML.

The rendered ``compose.yml`` must follow the Compose specification, and is checked
(:func:`check_compose`): no host port published twice, every bind-mount source inside
the stack's directory on the host (``<ferry_root>/stacks/<name>/``), every mounted
release file produced by a template or a static file. Ferry adds a label
``ferry.config-digest`` to every service that bind-mounts release files (or
directories), so ``docker compose up`` recreates exactly the services whose mounted
files changed; a service that declares ``depends_on: {X: {restart: true}}`` (Compose's
own "restart me when X is updated") also takes X's digest, so it is recreated with X.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .errors import FerryError
from .inventory import load_yaml_file

STACK_KEYS = {"name", "version", "description", "images", "templates", "files", "generated_secrets",
              "data_dirs", "health_paths", "backup"}
BACKUP_KEYS = {"sqlite", "mysql", "redis", "volumes", "stop", "exclude"}
COMPOSE_FILE = "compose.yml"
DIGEST_LABEL = "ferry.config-digest"
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
    files: list[StaticFile] = field(default_factory=list)
    backup: BackupSpec = field(default_factory=BackupSpec)

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
                 files=files, backup=load_backup_spec(data.get("backup"), path, images))


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


def to_json(value: Any, indent: int | None = None) -> str:
    """Jinja2 filter ``to_json``: ``value`` as JSON text, non-ASCII characters kept as
    they are (UTF-8 on the host, e.g. Chinese text stays readable).

    Args:
        value: any JSON-serialisable value (str, number, bool, None, list, mapping).
        indent: spaces per level, or None for one line.

    Raises:
        FerryError: the value cannot be represented in JSON (e.g. a date or a set).
    """
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent)
    except (TypeError, ValueError) as exc:
        raise FerryError(f"to_json: {exc}") from None


def required(value: Any, name: str = "value") -> Any:
    """Jinja2 filter ``required(NAME)``: ``value`` unchanged, or an error when it is
    empty (``""``, ``None``, an empty list or mapping): a setting the stack cannot run
    without, such as an account token, refused on the controller.

    Raises:
        FerryError: the value is empty (names ``name``).
    """
    if value is None or value == "" or value == [] or value == {}:
        raise FerryError(f"variable '{name}' is empty and the stack needs it (set it in the inventory "
                         f"or with --set {name}=...)")
    return value


@jinja2.pass_context
def _lookup(context: jinja2.runtime.Context, kind: str, name: str, *default: Any) -> Any:
    """Jinja2 global ``lookup('vars', NAME[, DEFAULT])``, as in Ansible: the variable
    whose name is computed, e.g. ``lookup('vars', instance ~ '_port')``."""
    if kind != "vars":
        raise FerryError(f"lookup('{kind}', ...): only lookup('vars', NAME) is supported")
    value = context.resolve_or_missing(name)
    if value is jinja2.utils.missing:
        if default:
            return default[0]
        raise jinja2.UndefinedError(f"'{name}' is undefined")
    return value


def _environment(stack: Stack) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(stack.dir / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["dotenv"] = dotenv_value
    env.filters["to_json"] = to_json
    env.filters["required"] = required
    env.globals["lookup"] = _lookup
    return env


def normalize_newlines(data: bytes) -> bytes:
    """LF line endings for text (CRLF and lone CR become LF); binary data (a NUL byte
    in it) is returned unchanged."""
    if b"\0" in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def check_file_syntax(dest: str, data: bytes) -> str | None:
    """Why release file ``dest`` is malformed, or None: ``*.json`` must be UTF-8 JSON,
    ``*.yaml``/``*.yml`` UTF-8 YAML; other files are not checked."""
    if not dest.endswith((".json", ".yaml", ".yml")):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        json.loads(text) if dest.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return f"not valid YAML: {getattr(exc, 'problem', exc)}" + (f" at line {mark.line + 1}" if mark else "")
    return None


def render(stack: Stack, context: dict[str, Any], host: str) -> dict[str, bytes]:
    """Render every template of ``stack`` for one host and add its static files.

    Args:
        stack: the stack.
        context: merged variables (defaults < group < host < --set) plus ``stack``,
            ``paths``, ``images`` and the generated secrets.
        host: inventory name, for error messages.

    Returns:
        ``{dest: content_bytes}`` in :meth:`Stack.release_files` order, text with LF line
        endings; ``compose.yml`` carries the config-digest labels.

    Raises:
        FerryError: an undefined variable (named, with template and host), a template
            syntax error, a ``*.json``/``*.yaml`` file that does not parse, a static file
            that cannot be read, or a ``compose.yml`` that fails :func:`check_compose`.
    """
    env = _environment(stack)
    out: dict[str, bytes] = {}
    for t in stack.templates:
        where = stack.dir / "templates" / t.src
        try:
            text = env.get_template(t.src).render(**{**context, **t.vars})
        except jinja2.UndefinedError as exc:
            m = re.search(r"'([^']+)' is undefined", str(exc))
            var = m.group(1) if m else str(exc)
            raise FerryError(f"{where}: variable '{var}' has no value "
                             f"for host {host} (set it in the inventory or with --set)") from None
        except jinja2.TemplateSyntaxError as exc:
            raise FerryError(f"{where}:{exc.lineno}: template error: {exc.message}") from None
        except FerryError as exc:
            raise FerryError(f"{where}: {exc} (host {host})") from None
        out[t.dest] = normalize_newlines(text.encode("utf-8"))
    for f in stack.files:
        try:
            out[f.dest] = normalize_newlines((stack.dir / FILES_DIR / f.src).read_bytes())
        except OSError as exc:
            raise FerryError(f"{stack.dir / FILES_DIR / f.src}: cannot read: {exc.strerror}") from None
    for dest, data in out.items():
        problem = check_file_syntax(dest, data)
        if problem:
            raise FerryError(f"{stack.template_file(dest)}: renders {dest} for host {host}, {problem}")
    out[COMPOSE_FILE] = add_config_digests(out, context["paths"]["current"], stack, host)
    check_compose(out, context["paths"], stack, host)
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


def _is_bind_source(source: str) -> bool:
    return source.startswith(("/", ".", "~"))


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


def published_ports(service: dict) -> list[tuple[str, int, str]]:
    """``(host_ip, host_port, protocol)`` for every host port a service publishes (short
    or long Compose syntax; a range ``8000-8002:8000-8002`` gives three). Ports that are
    only exposed to the Compose network (``"80"`` with no host part) are left out.
    ``host_ip`` is ``0.0.0.0`` when not given; ``protocol`` defaults to ``tcp``."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published") in (None, ""):
                continue
            ip, host, proto = str(p.get("host_ip") or "0.0.0.0"), str(p["published"]), str(p.get("protocol") or "tcp")
        else:
            spec, _, proto = str(p).partition("/")
            parts = spec.rsplit(":", 2)
            if len(parts) < 2 or not parts[-2]:
                continue
            ip = parts[0].strip("[]") if len(parts) == 3 and parts[0] else "0.0.0.0"
            host, proto = parts[-2], proto or "tcp"
        first, _, last = host.partition("-")
        for port in range(int(first), int(last or first) + 1):
            out.append((ip, port, proto))
    return out


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(d): {} for d in deps}
    return {str(k): (v or {}) for k, v in deps.items()}


def add_config_digests(files: dict[str, bytes], current_dir: str, stack: Stack, host: str) -> bytes:
    """Label each service with the digest of the release files it bind-mounts.

    Compose recreates a service when its configuration changes, but the *content* of a
    bind-mounted file is not part of that configuration. The label makes it so: change
    ``nginx.conf`` and only nginx is recreated. A bind mount of a release *directory*
    covers every release file below it. A service whose ``depends_on`` entry for X says
    ``restart: true`` takes X's digest into its own (transitively), so it is recreated
    whenever X is recreated for a changed file.

    Args:
        files: release files ``{dest: bytes}`` (must include ``compose.yml``).
        current_dir: the host path of the ``current`` release symlink.
        stack: for error messages and the service list.
        host: for error messages.

    Returns:
        The new ``compose.yml`` bytes.

    Raises:
        FerryError: ``compose.yml`` is not a Compose file, a service of ``images`` is
            missing from it, or ``depends_on`` with ``restart: true`` forms a cycle.
    """
    where = f"{stack.template_file(COMPOSE_FILE)} ({COMPOSE_FILE} for {host})"
    data = load_compose(files[COMPOSE_FILE], where)
    services = data["services"]
    missing = set(stack.images) - set(services)
    if missing:
        raise FerryError(f"{stack.file}: key 'images': service '{sorted(missing)[0]}' is not in {COMPOSE_FILE}")
    prefix = current_dir.rstrip("/") + "/"
    own: dict[str, str] = {}
    for name, svc in services.items():
        mounted = [src[len(prefix):].rstrip("/") for src, _ in bind_mounts(svc or {}) if src.startswith(prefix)]
        used = sorted(rel for rel in files if rel != COMPOSE_FILE
                      and any(rel == m or rel.startswith(m + "/") for m in mounted))
        if used:
            h = hashlib.sha256()
            for rel in used:
                h.update(rel.encode() + b"\0" + files[rel] + b"\0")
            own[name] = h.hexdigest()

    effective: dict[str, str] = {}

    def digest(name: str, chain: tuple[str, ...]) -> str:
        if name in chain:
            raise FerryError(f"{where}: key 'services.{name}.depends_on': restart cycle {' -> '.join(chain + (name,))}")
        if name not in effective:
            deps = [f"{dep}={d}" for dep, opts in sorted(_depends_on(services[name] or {}).items())
                    if isinstance(opts, dict) and opts.get("restart") is True and dep in services
                    and (d := digest(dep, chain + (name,)))]
            effective[name] = (hashlib.sha256("\0".join([own.get(name, ""), *deps]).encode()).hexdigest()
                               if deps else own.get(name, ""))
        return effective[name]

    for name, svc in services.items():
        value = digest(name, ())
        if not value:
            continue
        labels = svc.get("labels") or {}
        # a copy: labels may be a YAML anchor shared with other services
        labels = dict(item.split("=", 1) for item in labels) if isinstance(labels, list) else dict(labels)
        labels[DIGEST_LABEL] = value[:16]
        svc["labels"] = labels
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


def check_compose(files: dict[str, bytes], paths: dict[str, str], stack: Stack, host: str) -> None:
    """Refuse, on the controller, a rendered ``compose.yml`` that would misbehave on a host.

    Checks: no host port (same IP or a wildcard, same protocol) published by two services
    or twice by one; every bind-mount source (absolute, or relative to the release
    directory) inside the stack's directory ``paths["stack_dir"]``; every bind-mounted
    path under ``paths["current"]`` produced by a template or static file (Docker would
    otherwise create an empty directory in its place); every ``env_file`` a release file.

    Args:
        files: release files ``{dest: bytes}`` including ``compose.yml``.
        paths: the ``paths`` template variable (``stack_dir``, ``current``, ``data``).
        stack: for error messages.
        host: for error messages.

    Raises:
        FerryError: ``<compose template>: key 'services.<svc>.<key>[<i>]': <problem>
            (host <host>)``.
    """
    where = stack.template_file(COMPOSE_FILE)
    services = compose_services(files[COMPOSE_FILE], str(where))

    def fail(key: str, msg: str) -> None:
        raise FerryError(f"{where}: key '{key}': {msg} (host {host})")

    stack_dir = paths["stack_dir"].rstrip("/")
    current = paths["current"].rstrip("/")
    taken: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for name, svc in services.items():
        svc = svc or {}
        for ip, port, proto in published_ports(svc):
            for other_ip, other in taken.get((port, proto), []):
                if ip == other_ip or "0.0.0.0" in (ip, other_ip):
                    fail(f"services.{name}.ports", f"host port {port}/{proto} is also published by "
                         + (f"service '{other}'" if other != name else "this service"))
            taken.setdefault((port, proto), []).append((ip, name))
        for i, (source, _target) in enumerate(bind_mounts(svc)):
            if not _is_bind_source(source):
                continue
            key = f"services.{name}.volumes[{i}]"
            full = posixpath.normpath(source if source.startswith("/") else posixpath.join(current, source))
            if source.startswith("~") or not full.startswith(stack_dir + "/"):
                fail(key, f"bind-mount source {source} is outside the stack's directory {stack_dir}/ "
                          f"(use {{{{ paths.data }}}}/... for data, {{{{ paths.current }}}}/... for release files)")
            if full.startswith(current + "/"):
                rel = full[len(current) + 1:]
                if not any(f == rel or f.startswith(rel + "/") for f in files):
                    fail(key, f"mounts {source}, but no template or static file produces {rel}")
        env_files = svc.get("env_file") or []
        for i, e in enumerate([env_files] if isinstance(env_files, (str, dict)) else env_files):
            rel = str(e.get("path") if isinstance(e, dict) else e)
            full = posixpath.normpath(rel if rel.startswith("/") else posixpath.join(current, rel))
            if not full.startswith(current + "/") or full[len(current) + 1:] not in files:
                fail(f"services.{name}.env_file", f"{rel} is not a file of the release (declare it in templates)")


def template_context(variables: dict[str, Any], stack: Stack, paths: dict[str, str],
                     secrets: dict[str, str], host: str) -> dict[str, Any]:
    """The variables a template sees: the merged inventory variables, the generated
    secrets by name (``SECRET_KEY``), and ``stack`` (name, version), ``images``
    (service -> reference), ``paths`` (``stack_dir``, ``current``, ``data`` on the host)
    and ``inventory_hostname`` (as in Ansible)."""
    return {**variables, **secrets, "stack": {"name": stack.name, "version": stack.version},
            "images": dict(stack.images), "paths": dict(paths), "inventory_hostname": host}
