"""``stack.import``: turn an existing compose project (``docker-compose.yml`` + ``.env``,
as it runs on a machine with internet) into a Ferry stack folder, with no hand edits.

Compose resolves the project (:mod:`ferry.controller.composecli`: the same binary and
rules as every deploy), and from its model the importer writes ``stacks/NAME/``:

- ``templates/compose.yml.j2``: the compose file unchanged (wrapped in ``{% raw %}``
  only if it happens to contain Jinja delimiters); add Jinja later where per-host
  values are wanted;
- ``templates/env.j2`` -> ``.env`` (0600, ``secret: true``): one line per ``.env`` key,
  ``KEY={{ key | dotenv }}``, so Compose interpolates ``${KEY}`` on the host exactly as
  it did before;
- ``defaults.yml``: each ``.env`` key declared as a variable (``<stack>_<key>``
  lower-cased: inventory variables are shared by the stacks of a host) with the value
  it had as its default; names that say key/secret/token/password/passwd are
  ``secret``, ``*_PORT`` keys holding a port number ``port``, the rest ``string``;
- ``stack.yml``: ``images`` (service -> image, every service Compose runs),
  ``data_dirs`` (the ``./x`` bind mounts that are data), ``files`` (``./x`` bind
  mounts of existing files, read-only directories, other ``env_file`` files: shipped as
  they are), ``health_paths`` (from ``http://localhost:PORT/path`` in a healthcheck
  whose port is published), ``allow`` (host access the file asks for, as written).

At the end the new stack is loaded and rendered for a placeholder host, with the same
checks as a deploy, so that ``inv bundle`` and ``inv deploy`` work as they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import FerryError
from ..model.compose import ComposeModel, host_access, named_volumes, parse_model

SECRET_NAME = re.compile(r"key|secret|token|passw|pwd", re.I)
"""``.env`` keys whose names say they hold a secret."""

_HEALTH_URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0)(?::(\d+))?(/[^\s'\"|;&]*)?")
_JINJA = ("{{", "{%", "{#")


@dataclass
class Imported:
    """The result: where the stack was written and what to tell the user."""

    dir: Path
    lines: list[str] = field(default_factory=list)


def _compose(exe: Path, compose: Path, env: Path | None, *args: str) -> subprocess.CompletedProcess:
    argv = [str(exe), "-f", str(compose), "--project-directory", str(compose.parent),
            "--env-file", str(env) if env else os.devnull, "config", *args]
    return subprocess.run(argv, cwd=compose.parent, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.defpath})


def _environment(exe: Path, compose: Path, env: Path | None) -> dict[str, str]:
    """The ``.env`` values as Compose reads them (its own parser and interpolation)."""
    if env is None:
        return {}
    with_env = _compose(exe, compose, env, "--environment")
    parse = lambda text: dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
    found = parse(with_env.stdout)
    return {k: found[k] for k in _env_keys(env) if k in found}


def _env_keys(env: Path) -> list[str]:
    """The keys of a ``.env`` file in file order (values come from Compose)."""
    keys: list[str] = []
    for line in env.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=", line)
        if m and m.group(1) not in keys:
            keys.append(m.group(1))
    return keys


def _var_name(stack: str, key: str, taken: set[str]) -> str:
    """``<stack>_<key>`` lower-cased: inventory variables are shared by every stack of
    a host, so each stack's names carry its own prefix."""
    name = re.sub(r"[^a-z0-9_]", "_", f"{stack}_{key}".lower())
    if not re.match(r"[a-z_]", name):
        name = "v_" + name
    while name in taken:
        name = "env_" + name
    return name


def _stack_name(given: str | None, model: ComposeModel, compose: Path) -> str:
    name = given or model.name or compose.parent.name
    name = re.sub(r"[^a-z0-9_-]", "-", name.lower()).strip("-_")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or ""):
        raise FerryError(f"--name: cannot make a stack name of '{given or compose.parent.name}' "
                         "(lowercase letters, digits, '-' and '_')")
    return name


def _health_path(svc: Any) -> str | None:
    test = " ".join(str(x) for x in ((svc.raw.get("healthcheck") or {}).get("test") or []))
    targets = {p.target for p in svc.ports}
    for m in _HEALTH_URL.finditer(test):
        port = int(m.group(1) or 80)
        if port in targets:
            return m.group(2) or "/"
    return None


def _declaration(key: str, value: str, secret: bool) -> dict[str, Any]:
    """The ``defaults.yml`` declaration (:mod:`ferry.model.vars`) of one ``.env`` key:
    ``secret`` for secret names, ``port`` for ``*_PORT`` keys holding a port number,
    else ``string``; the value it had is the default."""
    help_text = f"{key} in .env" + (" (secret: 0600 on the host, never printed)" if secret else "")
    if secret:
        return {"type": "secret", "default": value, "help": help_text}
    if key.upper().endswith("PORT") and value.isdigit() and 0 < int(value) < 65536:
        return {"type": "port", "default": int(value), "help": help_text}
    return {"type": "string", "default": value, "help": help_text}


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)


def import_stack(compose: Path, env: Path | None, name: str | None, stacks_dir: Path, force: bool = False) -> Imported:
    """Write ``stacks_dir/NAME/`` from an existing compose project (module docstring).

    Args:
        compose: the project's compose file.
        env: its ``.env`` (default: ``.env`` next to ``compose``, when there is one).
        name: stack name (default: the file's ``name:``, else its directory's name).
        stacks_dir: the project's ``stacks/``.
        force: replace an existing stack folder of that name.

    Returns:
        Where it was written and lines for the user (no secret value among them).

    Raises:
        FerryError: no such file, Compose refuses the project, the stack exists, or the
            result does not render (the message names the file and key).
    """
    from .composecli import binary
    compose = compose.expanduser().resolve()
    if not compose.is_file():
        raise FerryError(f"{compose}: no such compose file")
    if env is None and (compose.parent / ".env").is_file():
        env = compose.parent / ".env"
    if env is not None:
        env = env.expanduser().resolve()
        if not env.is_file():
            raise FerryError(f"--env {env}: no such file")
    exe = binary()
    proc = _compose(exe, compose, env, "--format", "json")
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip() and "level=warning" not in l]
        raise FerryError(f"{compose}: Compose: {lines[-1] if lines else 'config failed'}")
    plain = _compose(exe, compose, env, "--format", "json", "--no-interpolate")
    env_files = {s: [str(e.get("path") if isinstance(e, dict) else e) for e in (spec or {}).get("env_file") or []]
                 for s, spec in (json.loads(plain.stdout).get("services") or {}).items()} if plain.returncode == 0 else {}
    project = str(compose.parent)
    model = parse_model(json.loads(proc.stdout), project, env_files)
    stack = _stack_name(name, model, compose)
    dest = stacks_dir / stack
    if dest.exists() and not force:
        raise FerryError(f"{dest} exists already (choose another --name, or --force to replace it)")
    values = _environment(exe, compose, env)
    out = Imported(dest)
    stacks_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stack}-", dir=stacks_dir))
    try:
        _write(tmp, stack, compose, env, model, env_files, values, out)
        _check(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    out.lines.insert(0, f"imported {compose} as stack '{stack}' in {dest}")
    out.lines.append(f"next: inv bundle --stack {stack}; inv deploy --host HOST --stack {stack}")
    return out


def _write(d: Path, stack: str, compose: Path, env: Path | None, model: ComposeModel,
           env_files: dict[str, list[str]], values: dict[str, str], out: Imported) -> None:
    project = compose.parent
    (d / "templates").mkdir(parents=True)
    text = compose.read_text(encoding="utf-8")
    if any(mark in text for mark in _JINJA):
        text = "{% raw %}" + text + "{% endraw %}"
        out.lines.append("the compose file contains Jinja delimiters: wrapped in {% raw %} as it is")
    (d / "templates" / "compose.yml.j2").write_text(text, encoding="utf-8")
    templates: list[dict[str, Any]] = [{"src": "compose.yml.j2", "dest": "compose.yml"}]
    defaults_lines = [f"# Variables of the '{stack}' stack, imported from {env.name if env else 'no .env'}.",
                      "# Each is one line of the release's .env, which Compose reads on the host to",
                      "# interpolate ${KEY} in compose.yml. Override per host in the inventory.", ""]
    secrets = []
    if env is not None:
        taken: set[str] = set()
        env_lines = ["# Rendered by Ferry: the project's .env, one variable per line (defaults.yml)."]
        for key in values:
            var = _var_name(stack, key, taken)
            taken.add(var)
            secret = bool(SECRET_NAME.search(key))
            if secret:
                secrets.append(var)
            defaults_lines.append(_dump({var: _declaration(key, values[key], secret)}).rstrip("\n"))
            env_lines.append(f"{key}={{{{ {var} | dotenv }}}}")
        (d / "templates" / "env.j2").write_text("\n".join(env_lines) + "\n", encoding="utf-8")
        templates.append({"src": "env.j2", "dest": ".env", "secret": True})
    (d / "defaults.yml").write_text("\n".join(defaults_lines) + "\n", encoding="utf-8")
    files: list[dict[str, Any]] = []
    data_dirs: list[str] = []
    shipped: set[str] = set()

    def ship(rel: str, secret: bool = False) -> None:
        if rel in shipped or rel == ".env":
            return
        src = project / rel
        target = d / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy2(src, target)
        shipped.add(rel)
        files.append({"src": rel, "dest": rel, **({"secret": True} if secret else {})})

    for svc, paths in env_files.items():
        for path in paths:
            rel = os.path.relpath(path, project)
            if rel != ".env" and not rel.startswith("..") and Path(path).is_file():
                ship(rel, secret=True)
    allow: dict[str, dict[str, Any]] = {}
    for svc in model.services.values():
        access = host_access(svc)
        for b in svc.binds:
            rel = b.source.lstrip("/")
            if not b.relative or rel.startswith(".."):
                allow.setdefault(svc.name, {}).setdefault("binds", []).append(b.source)
                out.lines.append(f"service {svc.name}: host path {b.source} is mounted as it is (allow.{svc.name}.binds)")
                continue
            src = project / rel
            read_only = bool(next((v.get("read_only") for v in svc.raw.get("volumes") or []
                                   if v.get("target") == b.target), False))
            if src.is_file() or (src.is_dir() and read_only and any(src.iterdir())):
                ship(rel)
            elif rel and rel not in data_dirs:
                data_dirs.append(rel)
                if src.is_dir() and any(src.iterdir()):
                    out.lines.append(f"{rel}/ is data: it starts empty on the hosts (its current content here is "
                                     f"not shipped; restore it with inv restore or copy it once)")
        if access:
            allow.setdefault(svc.name, {}).update(access)
    for b in model.binds_top:
        rel = b.source.lstrip("/")
        if b.relative and (project / rel).is_file():
            ship(rel, secret=True)
    images = {}
    for svc in model.services.values():
        images[svc.name] = svc.image or f"{stack}-{svc.name}"
        if not svc.image:
            out.lines.append(f"service {svc.name} has only `build:`: build image {images[svc.name]} locally "
                             "before inv bundle")
    health = {s.name: p for s in model.services.values() if (p := _health_path(s))}
    ports = [f"{p.port}/{p.protocol} ({svc})" for p, svc in model.published()]
    volumes = sorted(named_volumes(model))
    data: dict[str, Any] = {"name": stack, "version": "1.0.0",
                            "description": f"imported from {compose.name} by ferry stack.import",
                            "images": images, "templates": templates}
    if files:
        data["files"] = files
    if data_dirs:
        data["data_dirs"] = sorted(data_dirs)
    if health:
        data["health_paths"] = health
    if allow:
        data["allow"] = allow
    header = [f"# Stack '{stack}', imported from {compose} by `ferry stack.import`.",
              "# The compose file is templates/compose.yml.j2, unchanged.",
              f"# Published ports: {', '.join(ports) or 'none'}.",
              f"# Named volumes (Docker keeps them across releases): {', '.join(volumes) or 'none'}.", ""]
    (d / "stack.yml").write_text("\n".join(header) + _dump(data), encoding="utf-8")
    out.lines.append(f"images: {', '.join(sorted(set(images.values())))}")
    if data_dirs:
        out.lines.append(f"data dirs (outside releases, kept): {', '.join(sorted(data_dirs))}")
    if volumes:
        out.lines.append(f"named volumes: {', '.join(volumes)}")
    if health:
        out.lines.append("health paths: " + ", ".join(f"{k} {v}" for k, v in health.items()))
    if secrets:
        out.lines.append(f"secret variables (0600 on the host, never printed): {', '.join(secrets)}")


def _check(d: Path) -> None:
    """Load and render the new stack for a placeholder host: what ``inv deploy`` checks."""
    from ..model.render import render_release, template_context
    from ..model.stack import load_stack
    from ..model.paths import HostPaths
    from ..actions.common import declarations
    from .composecli import resolver
    stack = load_stack(d)
    variables = declarations(stack).defaults()
    paths = HostPaths(str(variables.get("ferry_root", "/opt/ferry")), stack.name, "")
    render_release(stack, template_context(variables, stack, paths.for_templates(),
                                           {k: "x" for k in stack.generated_secrets}, "import-check"),
                   "import-check", resolver())
