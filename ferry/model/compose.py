"""The rendered ``compose.yml`` must follow the Compose specification, and is checked
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
import posixpath

import yaml

from ..errors import FerryError
from .stack import COMPOSE_FILE, Stack
from .yamlfile import parse_yaml

DIGEST_LABEL = "ferry.config-digest"


def load_compose(compose_text: bytes | str, where: str = COMPOSE_FILE) -> dict:
    """Parse a Compose file and check it has a ``services`` mapping.

    Raises:
        FerryError: not YAML, or no ``services`` mapping.
    """
    try:
        data = parse_yaml(compose_text)
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
        if not (first.isdigit() and (last or first).isdigit()):
            raise FerryError(f"host port {host!r} is not a port number or range")
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
        try:
            ports = published_ports(svc)
        except FerryError as exc:
            fail(f"services.{name}.ports", str(exc))
        for ip, port, proto in ports:
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
