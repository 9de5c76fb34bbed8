"""The Compose model of a release, as Compose itself resolves it, and Ferry's checks on it.

Ferry never reads Compose syntax itself. The controller runs the Compose v2 binary
(``docker-compose config --format json``, :mod:`ferry.controller.composecli`) on the
rendered release files; this module takes that normalized JSON (long syntax only:
interpolated values, absolute paths, expanded port ranges, ``extends``/``include``
merged, profiles applied) and works on it:

- :func:`parse_model` maps the paths of the controller's scratch copy back to the host
  (``<scratch>/opt/ferry/stacks/S/current/x`` -> ``/opt/ferry/stacks/S/current/x``) and
  remembers which bind sources were written relative to the project (``./data``);
- :func:`check_model` refuses, on the controller, what would misbehave on a host: a
  host port published twice, a bind mount outside the stack's directory, a mounted
  release file nothing produces, an ``env_file`` that is not a release file, an image
  the bundle does not carry, and host access no one declared (``privileged``,
  ``cap_add``, ``pid: host``, ``network_mode: host``, devices, bind mounts of host
  paths...: allowed only when stack.yml's ``allow`` says so, so that a variable value
  cannot smuggle them in);
- :func:`data_paths`: relative bind sources that no release file provides are data
  (``./data``, ``./mysql/data``): each release links them to ``<stack_dir>/data/<path>``,
  outside releases, so data survives releases, rollbacks and bundle upgrades;
- :func:`config_digests` and :func:`add_labels`: the ``ferry.config-digest`` label of
  every service that bind-mounts release files, so a changed ``nginx.conf`` recreates
  nginx only; ``depends_on: {X: {restart: true}}`` takes X's digest along;
- :func:`host_conflicts`: ports, container names and subnets another stack or process
  on the host already holds (facts gathered by :mod:`ferry.host.containers`).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import FerryError

DIGEST_LABEL = "ferry.config-digest"

#: ``service.<key>`` values that give a container host access, and how stack.yml's
#: ``allow.<service>`` declares them (see :func:`host_access`).
HOST_MODES = ("pid", "ipc", "uts", "userns_mode", "cgroup")


@dataclass(frozen=True)
class Bind:
    """A bind mount (or a file secret/config, which Compose bind-mounts too).

    Attributes:
        source: absolute path on the host.
        target: path in the container.
        relative: written relative to the project directory (``./data``).
        key: where it comes from, for messages (``services.db.volumes[0]``).
    """

    source: str
    target: str
    relative: bool
    key: str


@dataclass(frozen=True)
class Port:
    """A published host port (Compose expands ranges into one entry per port)."""

    host_ip: str          # "0.0.0.0" when not given
    port: int
    protocol: str         # tcp, udp
    target: int
    key: str


@dataclass
class Service:
    """One service of the resolved model (``raw``: Compose's JSON without ``environment``,
    which may hold secret values from ``env_file``)."""

    name: str
    raw: dict[str, Any]
    binds: list[Bind] = field(default_factory=list)
    volumes: list[tuple[str, str]] = field(default_factory=list)      # (named volume, target)
    ports: list[Port] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)                # host paths

    @property
    def image(self) -> str:
        """The image reference (``""`` when the service only has ``build``)."""
        return str(self.raw.get("image") or "")

    @property
    def container_name(self) -> str:
        """``container_name`` or ``""``."""
        return str(self.raw.get("container_name") or "")

    @property
    def pull_policy(self) -> str:
        """``pull_policy`` or ``""``."""
        return str(self.raw.get("pull_policy") or "")

    @property
    def healthcheck(self) -> bool:
        """The compose file declares an enabled healthcheck (an image's own HEALTHCHECK
        is not visible here; the container's inspect data tells)."""
        hc = self.raw.get("healthcheck") or {}
        return bool(hc) and not hc.get("disable") and (hc.get("test") or ["?"])[0] != "NONE"

    def depends_on(self) -> dict[str, dict[str, Any]]:
        """``{service: {condition, restart, required}}``."""
        return {str(k): dict(v or {}) for k, v in (self.raw.get("depends_on") or {}).items()}


@dataclass
class ComposeModel:
    """A resolved Compose project (paths already on the host)."""

    name: str
    services: dict[str, Service]
    volumes: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    binds_top: list[Bind]              # file secrets and configs (top level)

    def published(self) -> list[tuple[Port, str]]:
        """Every published host port with its service."""
        return [(p, s.name) for s in self.services.values() for p in s.ports]


def _host_path(path: str, scratch: str) -> tuple[str, bool]:
    """(host path, was it under the scratch copy) for a path from Compose's output."""
    if scratch and (path == scratch or path.startswith(scratch + "/")):
        return path[len(scratch):] or "/", True
    return path, False


def parse_model(data: dict[str, Any], scratch: str = "", env_files: dict[str, list[str]] | None = None) -> ComposeModel:
    """Read ``docker-compose config --format json`` output.

    Args:
        data: the parsed JSON.
        scratch: the controller directory whose contents mirror ``/`` of the host (the
            release was resolved in ``<scratch><host current dir>``): paths below it are
            mapped to the host and marked relative. ``""``: paths are already the host's
            (Compose run on the host).
        env_files: ``{service: [env_file path]}`` from a ``--no-interpolate`` run (the
            interpolating run inlines env files into ``environment``).

    Raises:
        FerryError: the JSON has no ``services`` mapping.
    """
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise FerryError("Compose's model has no 'services' mapping")
    services: dict[str, Service] = {}
    for name, svc in data["services"].items():
        svc = dict(svc or {})
        svc.pop("environment", None)
        s = Service(str(name), svc)
        for i, v in enumerate(svc.get("volumes") or []):
            key = f"services.{name}.volumes[{i}]"
            if v.get("type") == "bind":
                src, rel = _host_path(str(v.get("source", "")), scratch)
                s.binds.append(Bind(posixpath.normpath(src), str(v.get("target", "")), rel, key))
            elif v.get("type") == "volume" and v.get("source"):
                s.volumes.append((str(v["source"]), str(v.get("target", ""))))
        for i, p in enumerate(svc.get("ports") or []):
            published = str(p.get("published") or "")
            if not published:
                continue
            first, _, last = published.partition("-")
            for port in range(int(first), int(last or first) + 1):
                s.ports.append(Port(str(p.get("host_ip") or "0.0.0.0"), port, str(p.get("protocol") or "tcp"),
                                    int(p.get("target") or 0), f"services.{name}.ports[{i}]"))
        for path in (env_files or {}).get(str(name), []):
            s.env_files.append(_host_path(path, scratch)[0])
        services[str(name)] = s
    top: list[Bind] = []
    for kind in ("secrets", "configs"):
        for name, spec in (data.get(kind) or {}).items():
            if (spec or {}).get("file"):
                src, rel = _host_path(str(spec["file"]), scratch)
                top.append(Bind(posixpath.normpath(src), f"{kind}:{name}", rel, f"{kind}.{name}.file"))
    return ComposeModel(str(data.get("name") or ""), services, dict(data.get("volumes") or {}),
                        dict(data.get("networks") or {}), top)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _release_rel(source: str, current: str) -> str | None:
    """The release-relative path of ``source`` if it lies under ``current``, else None."""
    if not _under(source, current):
        return None
    return source[len(current):].strip("/")


def _produced(rel: str, files: Iterable[str]) -> bool:
    return any(f == rel or not rel or f.startswith(rel + "/") for f in files)


def all_binds(model: ComposeModel) -> list[tuple[str, Bind]]:
    """Every bind mount with its service (``""`` for top-level secrets/configs)."""
    return [(s.name, b) for s in model.services.values() for b in s.binds] + [("", b) for b in model.binds_top]


def data_paths(model: ComposeModel, files: Iterable[str], current: str) -> list[str]:
    """Release-relative paths of relative bind sources that no release file provides
    (``./data`` -> ``data``): the release links each to ``<stack_dir>/data/<path>``."""
    files = list(files)
    out = set()
    for _, b in all_binds(model):
        rel = _release_rel(b.source, current)
        if b.relative and rel and not _produced(rel, files):
            out.add(rel)
    # a path below another data path is covered by the outer link
    return sorted(p for p in out if not any(p.startswith(o + "/") for o in out))


def named_volumes(model: ComposeModel) -> dict[str, str]:
    """``{compose volume key: Docker volume name}`` of the volumes Compose manages
    (``<project>_<key>`` unless ``name:`` says otherwise; external ones included)."""
    return {k: str((v or {}).get("name") or f"{model.name}_{k}") for k, v in model.volumes.items()}


def host_access(svc: Service) -> dict[str, Any]:
    """What a service asks of the host beyond an ordinary container, in stack.yml
    ``allow`` terms: ``privileged: true``, ``cap_add: [..]``, ``network_mode: host``,
    ``pid``/``ipc``/``uts``/``userns_mode``/``cgroup: host``, ``devices: [host path]``,
    ``security_opt: [..unconfined/disable..]``."""
    raw = svc.raw
    out: dict[str, Any] = {}
    if raw.get("privileged"):
        out["privileged"] = True
    if raw.get("cap_add"):
        out["cap_add"] = sorted(str(c).upper().removeprefix("CAP_") for c in raw["cap_add"])
    if str(raw.get("network_mode") or "") == "host":
        out["network_mode"] = "host"
    for key in HOST_MODES:
        if str(raw.get(key) or "") == "host":
            out[key] = "host"
    devices = [str(d.get("source") if isinstance(d, dict) else str(d).split(":")[0]) for d in raw.get("devices") or []]
    if devices:
        out["devices"] = sorted(devices)
    loose = [str(o) for o in raw.get("security_opt") or [] if "unconfined" in str(o) or "disable" in str(o)]
    if loose:
        out["security_opt"] = sorted(loose)
    return out


def _allowed(have: dict[str, Any], allow: dict[str, Any]) -> list[str]:
    """The entries of ``have`` (from :func:`host_access`) that ``allow`` does not cover."""
    missing = []
    for key, value in have.items():
        granted = allow.get(key)
        if isinstance(value, list):
            granted = [str(g).upper().removeprefix("CAP_") if key == "cap_add" else str(g) for g in granted or []]
            missing += [f"{key}: {v}" for v in value if v not in granted]
        elif granted != value:
            missing.append(f"{key}: {str(value).lower()}")
    return missing


def check_model(model: ComposeModel, files: dict[str, bytes], paths: dict[str, str], stack: Any,
                host: str, where: str) -> None:
    """Refuse, on the controller, a resolved release that would misbehave on a host.

    Checks (each on Compose's own model): no host port (same IP or a wildcard, same
    protocol) published twice; every bind source inside the stack's directory
    ``paths["stack_dir"]`` unless ``allow.<service>.binds`` lists it; every bind source
    under ``paths["current"]`` that a template wrote (not ``./x``) produced by a
    release file; every ``env_file`` a release file; every image in stack.yml's
    ``images``; host access (:func:`host_access`) only as ``allow`` declares it; a
    named volume bound to a host ``device`` only inside the stack's directory.

    Args:
        model: from :func:`parse_model`.
        files: release files ``{dest: bytes}``.
        paths: the ``paths`` template variable (``stack_dir``, ``current``, ``data``).
        stack: :class:`ferry.model.stack.Stack` (``images``, ``allow``).
        host: inventory name, for messages.
        where: the compose template, for messages.

    Raises:
        FerryError: ``<where>: key '<key>': <problem> (host <host>)``.
    """
    def fail(key: str, msg: str) -> None:
        raise FerryError(f"{where}: key '{key}': {msg} (host {host})")

    stack_dir, current = paths["stack_dir"].rstrip("/"), paths["current"].rstrip("/")
    allow: dict[str, dict[str, Any]] = getattr(stack, "allow", {}) or {}
    taken: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for port, name in model.published():
        for other_ip, other in taken.get((port.port, port.protocol), []):
            if port.host_ip == other_ip or "0.0.0.0" in (port.host_ip, other_ip):
                fail(f"services.{name}.ports", f"host port {port.port}/{port.protocol} is also published by "
                     + (f"service '{other}'" if other != name else "this service"))
        taken.setdefault((port.port, port.protocol), []).append((port.host_ip, name))
    images = set(stack.images.values())
    for name, svc in model.services.items():
        declared = stack.images.get(name)
        if declared is not None and svc.image and svc.image != declared:
            fail(f"services.{name}.image", f"{svc.image} differs from stack.yml's images.{name} ({declared})")
        if declared is None and svc.image not in images:
            fail(f"services.{name}.image", f"image {svc.image or '(none: build only)'} is not in stack.yml's "
                 "'images', so the bundle does not carry it")
        missing = _allowed(host_access(svc), allow.get(name, {}))
        if missing:
            fail(f"services.{name}", f"{missing[0]} gives the container host access; declare it in stack.yml "
                 f"under allow.{name} if the stack needs it")
        for path in svc.env_files:
            rel = _release_rel(path, current)
            if not rel or rel not in files:
                fail(f"services.{name}.env_file", f"{rel or path} is not a file of the release (declare it in templates)")
    for name, b in all_binds(model):
        granted = [str(p).rstrip("/") for p in (allow.get(name, {}).get("binds") or [])]
        if any(_under(b.source, g) for g in granted):
            continue
        if not _under(b.source, stack_dir) or b.source == stack_dir:
            fail(b.key, f"bind-mount source {b.source} is outside the stack's directory {stack_dir}/ "
                        f"(use ./x or {{{{ paths.data }}}}/x for data, {{{{ paths.current }}}}/x for release files"
                        + (f", or declare it under allow.{name}.binds" if name else "") + ")")
        rel = _release_rel(b.source, current)
        if rel is not None and not b.relative and not _produced(rel, files):
            fail(b.key, f"mounts {b.source}, but no template or static file produces {rel}")
    for key, vol in model.volumes.items():
        device = str(((vol or {}).get("driver_opts") or {}).get("device") or "")
        if device.startswith("/") and not _under(posixpath.normpath(device), stack_dir):
            fail(f"volumes.{key}.driver_opts.device", f"{device} binds a host path outside the stack's "
                                                     f"directory {stack_dir}/")


def config_digests(model: ComposeModel, files: dict[str, bytes], current: str, where: str) -> dict[str, str]:
    """``{service: 16 hex chars}``: the digest of the release files each service
    bind-mounts (a mounted release directory covers every file below it), combined along
    ``depends_on: {X: {restart: true}}`` (transitively). Services with neither get none.

    Raises:
        FerryError: ``depends_on`` with ``restart: true`` forms a cycle.
    """
    own: dict[str, str] = {}
    for name, svc in model.services.items():
        mounted = [rel for b in svc.binds if (rel := _release_rel(b.source, current)) is not None]
        mounted += [rel for b in model.binds_top
                    if (rel := _release_rel(b.source, current)) is not None
                    and b.target.split(":", 1)[1] in {str(x.get("source")) for x in
                                                      (svc.raw.get("secrets") or []) + (svc.raw.get("configs") or [])}]
        used = sorted(f for f in files if any(not m or f == m or f.startswith(m + "/") for m in mounted))
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
            deps = [f"{dep}={d}" for dep, opts in sorted(model.services[name].depends_on().items())
                    if opts.get("restart") is True and dep in model.services and (d := digest(dep, chain + (name,)))]
            effective[name] = (hashlib.sha256("\0".join([own.get(name, ""), *deps]).encode()).hexdigest()
                               if deps else own.get(name, ""))
        return effective[name]

    return {name: d[:16] for name in model.services if (d := digest(name, ()))}


def add_labels(compose_text: bytes, labels: dict[str, dict[str, str]], where: str) -> bytes:
    """Add ``labels`` (``{service: {label: value}}``) to the services of a Compose file,
    leaving every other byte's meaning as it was: a round-trip YAML edit (ruamel.yaml)
    keeps comments, quoting, anchors and YAML-1.2 scalars such as ``yes`` as written.
    Labels given as a list get ``label=value`` items; labels shared through an anchor
    are copied first. Services defined only in an ``include``d file are left alone.

    Raises:
        FerryError: the text is not YAML (Compose accepted it, so this is rare).
    """
    if not labels:
        return compose_text
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 16
    try:
        doc = yaml.load(compose_text.decode("utf-8"))
    except (YAMLError, UnicodeDecodeError) as exc:
        raise FerryError(f"{where}: not YAML: {exc}") from None
    services = (doc or {}).get("services") or {}
    changed = False
    for name, extra in labels.items():
        svc = services.get(name)
        if not isinstance(svc, dict):
            continue
        current = svc.get("labels")
        if isinstance(current, list):
            new = CommentedSeq([x for x in current if str(x).split("=", 1)[0] not in extra])
            new += [f"{k}={v}" for k, v in extra.items()]
        else:
            new = CommentedMap(current or {})
            new.update(extra)
        svc["labels"] = new
        changed = True
    if not changed:
        return compose_text
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue().encode("utf-8")


def host_conflicts(model: ComposeModel, project: str, facts: dict[str, Any]) -> list[str]:
    """What on a host already holds what this project needs, one sentence each.

    Args:
        model: this stack's resolved model.
        project: this stack's Compose project name (its own containers do not count).
        facts: from :func:`ferry.host.containers.parse_host_facts`: ``containers``
            (``[{name, project, ports: [(ip, port, proto)]}]``), ``listening``
            (``[(proto, ip, port, process)]``) and ``networks`` (``[{name, project,
            subnets}]``).

    Returns:
        e.g. ``host port 8000/tcp (service api) is already published by stack
        'xiaozhi' (container xiaozhi-web-1)``; empty when nothing clashes.
    """
    out = []
    others = [c for c in facts.get("containers", []) if c.get("project") != project]
    owned_ports = {(p[1], p[2]) for c in facts.get("containers", []) for p in c.get("ports", [])}
    for port, svc in model.published():
        hit = next((c for c in others for ip, n, proto in c.get("ports", [])
                    if n == port.port and proto == port.protocol
                    and (ip in ("0.0.0.0", "::", "") or port.host_ip in ("0.0.0.0", "") or ip == port.host_ip)), None)
        if hit:
            who = f"stack '{hit['project']}'" if hit.get("project") else "a container of no Compose project"
            out.append(f"host port {port.port}/{port.protocol} (service {svc}) is already published by {who} "
                       f"(container {hit['name']})")
            continue
        if (port.port, port.protocol) in owned_ports:
            continue
        proc = next((p for proto, ip, n, p in facts.get("listening", [])
                     if n == port.port and proto == port.protocol
                     and (ip in ("0.0.0.0", "::", "*") or port.host_ip in ("0.0.0.0", "") or ip == port.host_ip)), None)
        if proc is not None:
            out.append(f"host port {port.port}/{port.protocol} (service {svc}) is already in use on the host "
                       f"by {proc or 'a process'}")
    for name, svc in model.services.items():
        cname = svc.container_name
        hit = next((c for c in others if cname and c["name"] == cname), None)
        if hit:
            who = f"stack '{hit['project']}'" if hit.get("project") else "a container of no Compose project"
            out.append(f"container_name {cname} (service {name}) is already taken by {who}")
    mine = {str((n or {}).get("name") or f"{model.name}_{k}") for k, n in model.networks.items()}
    for key, net in model.networks.items():
        if (net or {}).get("external"):
            continue
        for cfg in ((net or {}).get("ipam") or {}).get("config") or []:
            subnet = str(cfg.get("subnet") or "")
            hit = next((n for n in facts.get("networks", []) if subnet and subnet in n.get("subnets", [])
                        and n.get("name") not in mine and n.get("project") != project), None)
            if hit:
                who = f"stack '{hit['project']}'" if hit.get("project") else "Docker"
                out.append(f"network {key}: subnet {subnet} is already used by network {hit['name']} of {who}")
    return out
