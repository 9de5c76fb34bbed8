"""install-docker-offline: Docker Engine and the Compose v2 plugin from the bundle only.

The bundle's ``docker/`` holds Debian packages (``debs/``: docker.io and what it needs
beyond a minimal Debian), the ``docker-compose`` CLI plugin and ``versions.json``. The
role installs the packages the host lacks with apt from those local files (no source
list, so it never reaches for a network), the plugin into
``/usr/local/lib/docker/cli-plugins/``, writes ``/etc/docker/daemon.json`` (json-file
logs with rotation) from ``templates/daemon.json.j2``, then enables and starts the
``docker`` systemd unit shipped by the package. It skips everything when the same
Docker and Compose versions run with the same daemon.json.

Refuses, before changing anything, a host without systemd as PID 1, a host whose CPU
architecture differs from the bundle's, and a host without dpkg.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from ferry.errors import HostError
from ferry.host.system import parse_dpkg_status, parse_host_facts
from ferry.resources import data_dir
from ferry.roles import RoleContext, RoleResult
from ferry.host import files, system

DAEMON_JSON = "/etc/docker/daemon.json"
PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"
TEMPLATES = data_dir("templates")


def render_daemon_json(variables: dict) -> bytes:
    """daemon.json for ``variables`` (role defaults merged with inventory vars)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.get_template("daemon.json.j2").render(**variables)
    json.loads(text)  # a template bug must not reach the host
    return text.encode()


def deb_files(manifest: dict) -> dict[str, str]:
    """``{package: bundle path}`` of the .deb files in the bundle (name_version_arch.deb)."""
    return {Path(f["path"]).name.split("_")[0]: f["path"] for f in manifest["files"]
            if f["path"].startswith("docker/debs/") and f["path"].endswith(".deb")}


def preflight(ctx: RoleContext) -> None:
    """Refuse, before any change, a host without systemd, dpkg, or of another CPU
    architecture than the bundle's Docker. Leaves the facts in ``ctx.state``."""
    payload = ctx.bundle.manifest["docker"]
    facts = parse_host_facts(ctx.t.run(system.host_facts()).out)
    ctx.state.host_facts = facts
    if not facts.systemd:
        raise HostError(ctx.host, "systemd is not PID 1 on this host: install-docker-offline "
                                  "needs systemd to run the docker service")
    if facts.machine != payload["uname_arch"]:
        raise HostError(ctx.host, f"CPU architecture is {facts.machine}, the bundle's Docker is "
                                  f"for {payload['uname_arch']}: build the bundle for this architecture")
    if facts.dpkg_arch is None:
        raise HostError(ctx.host, "no dpkg on this host: the bundle carries Debian packages")


def engine_matches(facts, payload: dict) -> bool:
    """The host runs the bundle's exact Docker engine: ``dockerd --version`` equals the
    upstream part of the bundle's docker.io version (``20.10.24+dfsg1`` of
    ``20.10.24+dfsg1-1+deb12u1``) and the docker unit is active."""
    if not facts.docker_version or not payload.get("docker"):
        return False
    upstream = str(payload["docker"]).split(":", 1)[-1].rsplit("-", 1)[0]
    return facts.docker_active and facts.docker_version == upstream


def plan_install(ctx: RoleContext) -> tuple[list[str], bool, dict[str, str]]:
    """Decide from facts what this host needs, before anything is uploaded.

    Returns:
        ``(packages to install, compose plugin up to date, installed {package:
        version})``. No packages when the host already runs the bundle's exact engine
        (:func:`engine_matches`), whatever installed it; otherwise the bundle's packages
        the host lacks and the core ones (``docker_packages``) whose version differs.
        Cached in ``ctx.state.docker_plan``.
    """
    if ctx.state.docker_plan is not None:
        return ctx.state.docker_plan
    payload = ctx.bundle.manifest["docker"]
    if ctx.state.host_facts is None:
        preflight(ctx)
    facts = ctx.state.host_facts
    debs = deb_files(ctx.bundle.manifest)
    installed = parse_dpkg_status(ctx.t.run(system.dpkg_status(sorted(debs))).out) if debs else {}
    core = set(ctx.vars.get("docker_packages") or ["docker.io"])
    wanted = payload.get("packages", {})
    if engine_matches(facts, payload):
        need = []
    else:
        need = sorted(n for n in debs if n not in installed or (n in core and installed[n] != wanted.get(n)))
    ctx.state.docker_plan = (need, facts.compose_version == payload.get("compose"), installed)
    return ctx.state.docker_plan


def needed_files(ctx: RoleContext) -> set[str]:
    """Bundle paths under ``docker/`` this host needs (upload-bundle sends no others):
    the .deb files of :func:`plan_install`'s packages, and ``docker/docker-compose``
    when the host's Compose differs. Empty for a host already running the bundle's
    Docker and Compose."""
    need, compose_ok, _ = plan_install(ctx)
    debs = deb_files(ctx.bundle.manifest)
    return {debs[n] for n in need} | (set() if compose_ok else {"docker/docker-compose"})


def run(ctx: RoleContext) -> RoleResult:
    """Install or confirm Docker and Compose from the bundle; see the module docstring."""
    payload = ctx.bundle.manifest["docker"]
    need, compose_ok, installed = plan_install(ctx)
    facts = ctx.state.host_facts
    daemon = render_daemon_json(ctx.vars)
    current_daemon = ctx.t.run(["cat", DAEMON_JSON], check=False).stdout
    debs = deb_files(ctx.bundle.manifest)
    daemon_ok = current_daemon == daemon
    if not need and compose_ok and daemon_ok and facts.docker_active:
        return RoleResult(False, f"Docker {facts.docker_version} and Compose {facts.compose_version} "
                                 f"already installed and running")
    todo = ([f"install {len(need)} packages"] if need else []) + \
           ([f"Compose {payload['compose']}"] if not compose_ok else []) + \
           (["write daemon.json"] if not daemon_ok else []) + \
           (["start docker"] if not facts.docker_active else [])
    if ctx.check:
        return RoleResult(True, "would " + ", ".join(todo))
    ctx.t.run(files.write_file(DAEMON_JSON, 0o644), input=daemon)
    if need:
        res = ctx.t.run(system.apt_install_local([f"{ctx.paths.bundle_dir}/{debs[n]}" for n in need]),
                        check=False, timeout=900)
        if not res.ok:
            raise HostError(ctx.host, f"installing Docker packages failed: {res.last_error_line()}")
    if not compose_ok:
        ctx.t.run(system.install_file(f"{ctx.paths.bundle_dir}/docker/docker-compose", PLUGIN, 0o755))
    ctx.t.run(system.systemctl("enable", "docker.service"))
    if facts.docker_active and not daemon_ok and not need:
        ctx.t.run(system.systemctl("restart", "docker.service"), timeout=120)
    else:
        ctx.t.run(system.systemctl("start", "docker.service"), timeout=120)
    after = parse_host_facts(ctx.t.run(system.host_facts()).out)
    if not after.docker_active or after.compose_version != payload["compose"]:
        raise HostError(ctx.host, f"after install: docker {'active' if after.docker_active else 'not active'}, "
                                  f"compose {after.compose_version} (expected {payload['compose']})")
    ctx.state.engine_changed = True
    return RoleResult(True, f"Docker {payload['docker']} + Compose {payload['compose']}: " + ", ".join(todo))
