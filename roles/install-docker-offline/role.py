"""install-docker-offline: Docker Engine and the Compose v2 plugin from the bundle only.

Two layouts, chosen per host by ``docker_install`` (``auto``: ``deb`` when the host has
dpkg, else ``static``):

- ``deb``: the bundle's Debian packages (``docker/debs/``: docker.io and what it needs
  beyond a minimal Debian) that the host lacks, installed with apt from those local
  files only (no source list, so it never reaches for a network); the packages' own
  ``docker`` unit.
- ``static`` (any systemd Linux): Docker's static tarball from the bundle
  (``docker/static/docker-<ver>.tgz``, ``inv bundle --docker-static``) unpacked into
  ``/usr/local/lib/docker-static/<version>-<sha12>/``, ``current`` switched to it,
  ``/usr/bin/<name>`` linked to ``current/<name>`` for each executable, and Ferry's units
  ``/etc/systemd/system/containerd.service`` and ``docker.service`` (from the top-level
  ``templates/``). A new engine replaces a running one by stopping docker and
  containerd, switching ``current`` and starting them again; the containers that ran
  are started again (those with a restart policy restart by themselves). If the new
  engine does not start, the previous engine, units and daemon.json are put back and
  started: the host runs what it ran before, and the role fails naming the unit's last
  log line. The engine before the current one is kept, older ones are removed.

Both layouts then install the Compose v2 plugin into
``/usr/local/lib/docker/cli-plugins/``, write ``/etc/docker/daemon.json`` (json-file
logs with rotation; ``templates/daemon.json.j2``), enable and start the units, and skip
everything when the same engine, Compose, daemon.json (and units) already run.

Facts come from ONE remote command (:func:`ferry.host.engine.engine_facts`), gathered in
``preflight`` (by deploy, with every role's facts, in one round trip) and kept in
``ctx.state.host_facts``. The version probes (``dockerd --version``, ``docker compose
version``) are skipped when ``<ferry_root>/engine-facts`` holds their answer for the very
same engine files (same inode, size, times); a probe's answer is kept there after an
install, or when nothing had to be installed. Preflight refuses, before any
change on any host, with one line: an invalid ``docker_install``; another CPU
architecture than the bundle's; what the engine needs and the host lacks (kernel >=
3.10, cgroups, systemd as PID 1; for the static engine also an iptables command, tar
and gzip); a host without dpkg when the bundle has no static engine (saying how to
build one); ``deb`` on a host without dpkg; the static engine over Debian's docker
packages or over files a package owns; the deb layout over Ferry's static engine.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

import jinja2

from ferry.model.engine import DOWNLOAD_HINT
from ferry.errors import HostError
from ferry.host import engine, files, system
from ferry.host.engine import EngineFacts, parse_engine_facts
from ferry.model.render import to_json
from ferry.resources import data_dir
from ferry.roles import RoleContext, RoleResult

DAEMON_JSON = engine.DAEMON_JSON
PLUGIN = engine.PLUGIN
TEMPLATES = data_dir("templates")
LAYOUTS = ("auto", "static", "deb")
DOCKER_DEBS = ("docker.io", "docker-ce", "docker-ce-cli", "containerd.io", "moby-engine")
"""Debian packages of a Docker engine: the static engine refuses to go over them."""
UNIT_FILES = {f"{engine.UNIT_DIR}/{u}": f"{u}.j2" for u in engine.UNITS}


def _render(name: str, variables: dict) -> bytes:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = to_json
    return env.get_template(name).render(**variables).encode()


def render_daemon_json(variables: dict) -> bytes:
    """daemon.json for ``variables`` (role defaults merged with inventory vars)."""
    text = _render("daemon.json.j2", variables)
    json.loads(text)  # a template bug must not reach the host
    return text


def render_units(variables: dict, static: dict) -> dict[str, bytes]:
    """``{unit path: bytes}`` of Ferry's containerd and docker units for the static
    engine described by ``static`` (the manifest's ``docker.static``)."""
    context = {**variables, "bin_dir": engine.BIN_DIR,
               "engine_label": f"Docker {static['version']}, {Path(static['file']).name}"}
    return {path: _render(tpl, context) for path, tpl in UNIT_FILES.items()}


def deb_files(manifest: dict) -> dict[str, str]:
    """``{package: bundle path}`` of the .deb files in the bundle (name_version_arch.deb)."""
    return {Path(f["path"]).name.split("_")[0]: f["path"] for f in manifest["files"]
            if f["path"].startswith("docker/debs/") and f["path"].endswith(".deb")}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layout_for(ctx: RoleContext, facts: EngineFacts) -> str:
    """``deb`` or ``static`` for this host: ``docker_install`` (auto: deb when the host
    has dpkg). Raises HostError for a value that is not auto, static or deb."""
    choice = str(ctx.vars.get("docker_install", "auto")).strip()
    if choice not in LAYOUTS:
        raise HostError(ctx.host, f"docker_install: {choice!r} is not one of {', '.join(LAYOUTS)}")
    if choice == "auto":
        return "deb" if facts.dpkg_arch else "static"
    return choice


def engine_cache(ctx: RoleContext) -> str:
    """``<ferry_root>/engine-facts``: the last version probes of the host's engine (see
    :func:`ferry.host.engine.engine_facts`)."""
    return posixpath.join(ctx.paths.root, "engine-facts")


def facts_command(ctx: RoleContext, write_cache: bool = False) -> list[str]:
    """The one fact script for this bundle (its packages and static executables)."""
    manifest = ctx.bundle.manifest
    static = manifest["docker"].get("static")
    packages = sorted(set(deb_files(manifest)) | set(DOCKER_DEBS))
    binaries = sorted(static["binaries"]) if static else []
    return engine.engine_facts(packages, binaries, engine_cache(ctx), write_cache)


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`preflight` reads (gathered ahead by deploy)."""
    return [facts_command(ctx)]


def gather(ctx: RoleContext, write_cache: bool = False) -> EngineFacts:
    """Run the one fact script on the host and parse it (see :mod:`ferry.host.engine`);
    ``write_cache``: keep new version probes in :func:`engine_cache`."""
    try:
        return parse_engine_facts(ctx.t.run(facts_command(ctx, write_cache)).out)
    except ValueError as exc:
        raise HostError(ctx.host, str(exc)) from None


def _keep_probes(ctx: RoleContext, facts: EngineFacts) -> None:
    """Nothing to install, but the versions were probed (the engine changed since the
    cache was written, or there was none): keep them, so the next run need not."""
    if facts.probed and facts.fingerprint and facts.dockerd and not ctx.check:
        ctx.t.run(files.write_file(engine_cache(ctx), 0o644), input=engine.cache_text(facts))


def _no_static_engine(ctx: RoleContext, facts: EngineFacts, why: str) -> HostError:
    return HostError(ctx.host, f"{why} ({facts.describe()}), and bundle {ctx.bundle.name} has no "
                               f"static Docker engine: build it with `inv bundle --stack {ctx.stack.name} "
                               f"--docker-static docker-<version>.tgz` (Docker's static tarball, from "
                               f"{DOWNLOAD_HINT.format(uname=facts.machine)})")


def preflight(ctx: RoleContext) -> None:
    """Refuse, before any change, a host this role cannot serve (see the module
    docstring). Leaves ``host_facts`` and ``docker_layout`` in ``ctx.state``."""
    payload = ctx.bundle.manifest["docker"]
    facts = gather(ctx)
    layout = layout_for(ctx, facts)
    if facts.machine != payload["uname_arch"]:
        raise HostError(ctx.host, f"CPU architecture is {facts.machine}, the bundle's Docker is "
                                  f"for {payload['uname_arch']}: build the bundle for this architecture")
    static = payload.get("static")
    if layout == "deb" and not facts.dpkg_arch:
        raise HostError(ctx.host, f"docker_install is deb but this host has no dpkg ({facts.describe()}): "
                                  f"use docker_install: static (or auto) with a bundle built with --docker-static")
    if layout == "static":
        if not static:
            raise _no_static_engine(ctx, facts, "no dpkg on this host, so Docker must come from Docker's "
                                                "static tarball" if not facts.dpkg_arch else
                                                "docker_install is static")
        missing = engine.requirements(facts, static=True)
        if missing:
            raise HostError(ctx.host, f"cannot run Docker's static engine ({facts.describe()}): missing "
                                      + "; ".join(missing))
        debs = sorted(p for p in DOCKER_DEBS if p in facts.packages)
        if debs:
            raise HostError(ctx.host, f"Docker from Debian packages is installed ({', '.join(debs)}): the static "
                                      f"engine would go over it; remove them or set docker_install: deb")
        owned = {b: o for b, o in facts.links.items() if o not in ("-", "unowned")}
        if owned:
            b, o = sorted(owned.items())[0]
            raise HostError(ctx.host, f"{engine.BIN_DIR}/{b} belongs to package {o}: the static engine "
                                      f"would replace it; remove that package first")
    else:
        missing = engine.requirements(facts, static=False)
        if missing:
            raise HostError(ctx.host, f"cannot run Docker ({facts.describe()}): missing " + "; ".join(missing))
        if facts.ferry_units:
            raise HostError(ctx.host, f"Ferry's static Docker engine is installed here ({engine.STATIC_DIR}): "
                                      f"docker_install: deb would install packages over it; use static or auto")
    ctx.state.host_facts = facts
    ctx.state.docker_layout = layout


def files_needed(ctx: RoleContext) -> list[str]:
    """Bundle paths of the Docker payload this host needs (after :func:`preflight`):
    empty when its engine and Compose are already the bundle's; otherwise the files of
    its layout (the .debs, or the static tarball) and the Compose plugin."""
    facts, layout = ctx.state.host_facts, ctx.state.docker_layout
    payload = ctx.bundle.manifest["docker"]
    need = [] if facts.compose_version == payload["compose"] else ["docker/docker-compose"]
    if layout == "static":
        static = payload["static"]
        eid = engine.engine_id(static["version"], static["sha256"])
        if eid not in facts.static_dirs:
            need.append(static["file"])
    else:
        wanted, core = payload["packages"], set(ctx.vars.get("docker_packages") or ["docker.io"])
        need += [path for name, path in sorted(deb_files(ctx.bundle.manifest).items())
                 if name not in facts.packages or (name in core and facts.packages[name] != wanted.get(name))]
    return need


def run(ctx: RoleContext) -> RoleResult:
    """Install or confirm Docker and Compose from the bundle; see the module docstring."""
    if ctx.state.host_facts is None:
        preflight(ctx)
    if ctx.state.docker_layout == "static":
        return run_static(ctx)
    return run_deb(ctx)


def _after(ctx: RoleContext) -> EngineFacts:
    facts = gather(ctx, write_cache=True)
    ctx.state.host_facts = facts
    ctx.state.engine_changed = True        # load-images asks the engine for its images again
    return facts


def run_deb(ctx: RoleContext) -> RoleResult:
    """The Debian-package layout (see the module docstring)."""
    payload = ctx.bundle.manifest["docker"]
    facts = ctx.state.host_facts
    daemon = render_daemon_json(ctx.vars)
    debs = deb_files(ctx.bundle.manifest)
    need = [Path(p).name.split("_")[0] for p in files_needed(ctx) if p.startswith("docker/debs/")]
    compose_ok = facts.compose_version == payload["compose"]
    daemon_ok = facts.sums.get(DAEMON_JSON) == _sha(daemon)
    docker_active = facts.running("docker")
    if not need and compose_ok and daemon_ok and docker_active:
        _keep_probes(ctx, facts)
        return RoleResult(False, f"Docker {facts.packages.get('docker.io', facts.docker_version)} and "
                                 f"Compose {facts.compose_version} already installed and running",
                          {"version_probes": int(facts.probed)})
    todo = ([f"install {len(need)} packages"] if need else []) + \
           ([f"Compose {payload['compose']}"] if not compose_ok else []) + \
           (["write daemon.json"] if not daemon_ok else []) + \
           (["start docker"] if not docker_active else [])
    if ctx.check:
        return RoleResult(True, "would " + ", ".join(todo))
    if not daemon_ok:
        ctx.t.run(files.write_file(DAEMON_JSON, 0o644), input=daemon)
    if need:
        res = ctx.t.run(system.apt_install_local([f"{ctx.paths.bundle_dir}/{debs[n]}" for n in need]),
                        check=False, timeout=900)
        if not res.ok:
            raise HostError(ctx.host, f"installing Docker packages failed: {res.last_error_line()}")
    if not compose_ok:
        ctx.t.run(system.install_file(f"{ctx.paths.bundle_dir}/docker/docker-compose", PLUGIN, 0o755))
    ctx.t.run(system.systemctl("enable", "docker.service"))
    if docker_active and not daemon_ok and not need:
        ctx.t.run(system.systemctl("restart", "docker.service"), timeout=120)
    else:
        ctx.t.run(system.systemctl("start", "docker.service"), timeout=120)
    after = _after(ctx)
    if not after.running("docker") or after.compose_version != payload["compose"]:
        raise HostError(ctx.host, f"after install: docker {after.active.get('docker') or 'not active'}, "
                                  f"compose {after.compose_version} (expected {payload['compose']})")
    return RoleResult(True, f"Docker {payload['docker']} + Compose {payload['compose']}: " + ", ".join(todo))


def _version_of(eid: str) -> str:
    return eid.rsplit("-", 1)[0] if eid else ""


def run_static(ctx: RoleContext) -> RoleResult:
    """Docker's static engine (see the module docstring)."""
    payload = ctx.bundle.manifest["docker"]
    static = payload["static"]
    facts: EngineFacts = ctx.state.host_facts
    eid = engine.engine_id(static["version"], static["sha256"])
    target = f"{engine.STATIC_DIR}/{eid}"
    names = sorted(static["binaries"])
    want = {DAEMON_JSON: render_daemon_json(ctx.vars), **render_units(ctx.vars, static)}
    stale = [p for p, data in want.items() if facts.sums.get(p) != _sha(data)]
    units_stale = [p for p in stale if p != DAEMON_JSON]
    compose_ok = facts.compose_version == payload["compose"]
    unpack = eid not in facts.static_dirs
    switch = facts.static_current != eid
    links = [n for n in names if n in facts.links]
    runs = {u: facts.running(u) and facts.exe.get(u) == f"{target}/{'dockerd' if u == 'docker' else u}"
            for u in ("docker", "containerd")}
    restart_containerd = not runs["containerd"] or switch or f"{engine.UNIT_DIR}/containerd.service" in stale
    restart_docker = not runs["docker"] or restart_containerd or switch or \
        bool({DAEMON_JSON, f"{engine.UNIT_DIR}/docker.service"} & set(stale))
    enabled = all(facts.enabled.get(u) == "enabled" for u in ("docker", "containerd"))
    label = f"Docker {static['version']} (static)"
    if not (stale or unpack or switch or links or not compose_ok or restart_docker or not enabled):
        _keep_probes(ctx, facts)
        return RoleResult(False, f"{label} and Compose {facts.compose_version} already installed and running",
                          {"version_probes": int(facts.probed)})

    before = _version_of(facts.static_current) or facts.docker_version
    engine_up = facts.running("docker") or facts.running("containerd")
    todo = []
    if switch and facts.static_current:
        todo.append(f"upgrade Docker {before} -> {static['version']} (static)")
    elif switch and facts.docker_version:
        todo.append(f"replace Docker {before} (not Ferry's) with {static['version']} (static)")
    elif switch:
        todo.append(f"install {label} from {Path(static['file']).name}")
    todo += [f"Compose {payload['compose']}"] if not compose_ok else []
    todo += ["write " + ", ".join(Path(p).name for p in stale)] if stale else []
    todo += [f"link {len(links)} executables into {engine.BIN_DIR}"] if links else []
    if engine_up and restart_containerd:
        todo.append("restart containerd and docker (running containers are stopped and started again)")
    elif engine_up and restart_docker:
        todo.append("restart docker (running containers are stopped and started again)")
    elif restart_docker:
        todo.append("start containerd and docker")
    if ctx.check:
        return RoleResult(True, "would " + ", ".join(todo))

    t = ctx.t
    if unpack:
        t.run(engine.extract_static(f"{ctx.paths.bundle_dir}/{static['file']}", eid, names), timeout=300)
    if not compose_ok:
        t.run(system.install_file(f"{ctx.paths.bundle_dir}/docker/docker-compose", PLUGIN, 0o755))
    running = files.parse_lines(t.run(engine.running_containers()).out) \
        if facts.running("docker") and restart_docker else []
    managed = list(want) + [f"{engine.BIN_DIR}/{n}" for n in links] if engine_up else []
    if managed:                     # something runs: keep what it runs on, to go back to
        t.run(engine.save_files(managed))
    try:
        if restart_docker and facts.running("docker"):
            t.run(system.systemctl("stop", "docker.service"), timeout=180)
        if restart_containerd and facts.running("containerd"):
            t.run(system.systemctl("stop", "containerd.service"), timeout=180)
        for path in stale:
            t.run(files.write_file(path, 0o644), input=want[path])
        if switch:
            t.run(engine.switch_static(eid))
        if links:
            t.run(engine.link_binaries(names))
        if units_stale:
            t.run(system.systemctl("daemon-reload"))
        if not enabled:
            t.run(system.systemctl("enable", "containerd.service", "docker.service"))
        if restart_containerd:
            _start(ctx, "containerd.service")
        _start(ctx, "docker.service")
    except HostError as exc:
        back = _revert(ctx, facts, managed, running)
        raise HostError(ctx.host, f"{label} did not start: {exc.args[0].split(': ', 1)[-1]}; {back}") from None
    if running:
        res = t.run(engine.start_containers(running), check=False, timeout=300)
        if not res.ok:
            ctx.ui.warn(f"{ctx.host}: some containers that ran before did not start again: {res.last_error_line()}")
    if managed:
        t.run(engine.drop_saved(managed))
    old = [d for d in facts.static_dirs if engine.is_engine_id(d) and d not in (eid, facts.static_current)]
    if old:                         # keep the new engine and the one before it
        t.run(engine.remove_static(old))
    after = _after(ctx)
    if after.exe.get("docker") != f"{target}/dockerd" or after.compose_version != payload["compose"]:
        raise HostError(ctx.host, f"after install: dockerd runs {after.exe.get('docker') or 'nothing'}, compose "
                                  f"{after.compose_version} (expected {target}/dockerd, {payload['compose']})")
    return RoleResult(True, f"{label} + Compose {payload['compose']}: " + ", ".join(todo))


def _start(ctx: RoleContext, unit: str) -> None:
    """``systemctl start unit``; HostError with the unit's last log line when it fails."""
    res = ctx.t.run(system.systemctl("start", unit), check=False, timeout=180)
    if not res.ok:
        log = ctx.t.run(system.unit_log(unit, 5), check=False).out.strip().splitlines()
        raise HostError(ctx.host, f"{unit}: {log[-1] if log else res.last_error_line()}")


def _revert(ctx: RoleContext, facts: EngineFacts, managed: list[str], containers: list[str]) -> str:
    """Put the engine, units and daemon.json of before back and start what ran; return
    what it did, for the error line."""
    t = ctx.t
    t.run(system.systemctl("stop", "docker.service", "containerd.service"), check=False, timeout=180)
    if managed:
        t.run(engine.restore_files(managed), check=False)
    if facts.static_current:
        t.run(engine.switch_static(facts.static_current), check=False)
    t.run(system.systemctl("daemon-reload"), check=False)
    if not (facts.running("docker") or facts.running("containerd")):
        return "nothing was running before; the engine is left stopped"
    ok = all(t.run(system.systemctl("start", u), check=False, timeout=180).ok
             for u in ("containerd.service", "docker.service"))
    if ok and containers:
        t.run(engine.start_containers(containers), check=False, timeout=300)
    prev = _version_of(facts.static_current) or facts.docker_version or "the previous engine"
    return f"back on Docker {prev}" if ok else f"the previous engine ({prev}) did not start either"
