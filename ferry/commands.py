"""Command builders: pure functions returning argument lists to run on a host.

Nothing here does I/O; the tests check the exact argument lists. Where a command needs
shell features (``&&``, redirection), the builder returns ``["sh", "-c", SCRIPT]`` and
every word interpolated into SCRIPT is quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import shlex
from typing import Iterable, Sequence

q = shlex.quote


def sh(script: str) -> list[str]:
    """``["sh", "-c", script]``: the caller has quoted every interpolated word."""
    return ["sh", "-c", script]


# -- files -----------------------------------------------------------------------------

def receive_file(final: str, sha256: str) -> list[str]:
    """Read stdin into ``final`` only if its sha256 matches; otherwise leave nothing.

    The data lands in ``final.part`` first; ``sha256sum -c`` checks it on the host; only
    then is it renamed (atomic on one filesystem). Exit status 3 means a mismatch.

    Args:
        final: absolute path on the host (e.g. ``/opt/ferry/store/<sha256>``).
        sha256: expected lowercase hex digest (64 chars).
    """
    part = final + ".part"
    d = final.rsplit("/", 1)[0] or "/"
    return sh(
        f"set -e; mkdir -p {q(d)}; cat > {q(part)}; "
        f"if printf '%s  %s\\n' {q(sha256)} {q(part)} | sha256sum -c --status; "
        f"then mv -f {q(part)} {q(final)}; "
        f"else rm -f {q(part)}; echo {q('sha256 mismatch after transfer: ' + final)} >&2; exit 3; fi")


def write_file(path: str, mode: int = 0o644) -> list[str]:
    """Write stdin to ``path`` atomically with ``mode`` (octal int, e.g. ``0o600``).

    The temporary file is created under ``umask 077`` so a secret is never readable by
    others, even for a moment; then chmod and rename.
    """
    tmp = path + ".tmp"
    d = path.rsplit("/", 1)[0] or "/"
    return sh(f"set -e; umask 077; mkdir -p {q(d)}; cat > {q(tmp)}; "
              f"chmod {mode:04o} {q(tmp)}; mv -f {q(tmp)} {q(path)}")


def list_dir(path: str) -> list[str]:
    """Names of the regular files directly in ``path``, one per line (nothing if absent)."""
    return sh(f"[ -d {q(path)} ] && find {q(path)} -maxdepth 1 -type f -printf '%f\\n' || true")


def list_links(path: str) -> list[str]:
    """``RELPATH TARGET`` for every symlink under ``path``, one per line (nothing if absent)."""
    return sh(f"[ -d {q(path)} ] && find {q(path)} -type l -printf '%P %l\\n' || true")


def make_links(base: str, links: dict[str, str]) -> list[str]:
    """Create (or replace) symlinks ``base/RELPATH -> TARGET`` for every item of ``links``."""
    parts = ["set -e"]
    dirs = sorted({(base + "/" + rel).rsplit("/", 1)[0] for rel in links})
    if dirs:
        parts.append("mkdir -p " + " ".join(q(d) for d in dirs))
    for rel, target in sorted(links.items()):
        parts.append(f"ln -sfn {q(target)} {q(base + '/' + rel)}")
    return sh("; ".join(parts))


def read_tar(base: str, paths: Sequence[str]) -> list[str]:
    """A tar stream on stdout of the files ``paths`` (relative to ``base``) that exist.

    Missing files are skipped silently; a missing ``base`` gives an empty stream. Paths
    through symlinks (``current/compose.yml``) are read as the files they point to.
    """
    quoted = " ".join(q(p) for p in paths)
    return sh(f"cd {q(base)} 2>/dev/null || exit 0; "
              f"set --; for f in {quoted}; do [ -e \"$f\" ] && set -- \"$@\" \"$f\"; done; "
              f"[ $# -eq 0 ] || tar -chf - -- \"$@\"")


def switch_symlink(link: str, target: str) -> list[str]:
    """Point ``link`` at ``target`` atomically: a new symlink renamed over the old one
    (``mv -T``), as Capistrano switches ``current``."""
    tmp = link + ".new"
    return sh(f"set -e; ln -sfn {q(target)} {q(tmp)}; mv -T -f {q(tmp)} {q(link)}")


def mkdirs(paths: Iterable[str], mode: int | None = None) -> list[str]:
    """``mkdir -p`` (with ``-m MODE`` when given) for every path."""
    argv = ["mkdir", "-p"]
    if mode is not None:
        argv += ["-m", f"{mode:04o}"]
    return argv + ["--", *paths]


# -- host and docker facts -------------------------------------------------------------

def host_facts() -> list[str]:
    """One line each: ``uname -m``; dpkg architecture or ``-``; ``systemd``/``no-systemd``;
    dockerd version line or ``no-docker``; compose version or ``no-compose``; docker
    service state (``active``/``inactive``/...)."""
    return sh("uname -m; dpkg --print-architecture 2>/dev/null || echo -; "
              "[ -d /run/systemd/system ] && echo systemd || echo no-systemd; "
              "dockerd --version 2>/dev/null || echo no-docker; "
              "docker compose version --short 2>/dev/null || echo no-compose; "
              "systemctl is-active docker 2>/dev/null || true")


def dpkg_status(packages: Sequence[str]) -> list[str]:
    """``NAME VERSION STATUS`` per installed package among ``packages`` (others omitted)."""
    return sh("dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' "
              + " ".join(q(p) for p in packages) + " 2>/dev/null || true")


def apt_install_local(debs: Sequence[str]) -> list[str]:
    """Install local ``.deb`` files with apt (dependencies resolved among them), never
    reaching for a network source: the source lists are pointed at /dev/null."""
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
            "--no-install-recommends",
            "-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dpkg::Options::=--force-confold", *debs]


def install_file(src: str, dest: str, mode: int) -> list[str]:
    """Copy ``src`` to ``dest`` on the host with ``mode`` (``install -D``)."""
    return ["install", "-D", "-m", f"{mode:04o}", src, dest]


def systemctl(*args: str) -> list[str]:
    return ["systemctl", *args]


def docker_images() -> list[str]:
    """Every local image: ``ID<TAB>REPO:TAG`` per line (ID is ``sha256:<hex>``)."""
    return ["docker", "images", "--no-trunc", "--format", "{{.ID}}\t{{.Repository}}:{{.Tag}}"]


def docker_load(path: str) -> list[str]:
    return ["docker", "load", "-q", "-i", path]


def docker_tag(image_id: str, ref: str) -> list[str]:
    return ["docker", "tag", image_id, ref]


def compose(project: str, compose_file: str, project_dir: str, *args: str) -> list[str]:
    """``docker compose`` bound to one project, file and directory (Compose v2 CLI)."""
    return ["docker", "compose", "-p", project, "-f", compose_file,
            "--project-directory", project_dir, *args]


def compose_up(project: str, compose_file: str, project_dir: str, wait_timeout: int) -> list[str]:
    """``up -d --wait --pull never --remove-orphans``: never reaches for a registry, waits
    until every service with a healthcheck is healthy (``wait_timeout`` seconds)."""
    return compose(project, compose_file, project_dir, "up", "-d", "--wait",
                   "--wait-timeout", str(int(wait_timeout)), "--pull", "never", "--remove-orphans")


def compose_ps(project: str, compose_file: str, project_dir: str) -> list[str]:
    """All containers of the project as JSON (one object per line, Compose >= 2.21)."""
    return compose(project, compose_file, project_dir, "ps", "-a", "--format", "json")


def project_containers(project: str) -> list[str]:
    """``ID<TAB>SERVICE<TAB>STARTED_AT`` of the project's containers, from Docker's labels
    (works without a compose file)."""
    return sh("ids=$(docker ps -aq --filter " + q(f"label=com.docker.compose.project={project}")
              + "); [ -z \"$ids\" ] || docker inspect --format "
              + q('{{.Id}}\t{{index .Config.Labels "com.docker.compose.service"}}\t{{.State.StartedAt}}')
              + " $ids")


def http_status(url: str, timeout: int = 5) -> list[str]:
    """The HTTP status code of ``GET url`` requested on the host (``000`` if no answer)."""
    return ["curl", "-s", "-o", "/dev/null", "-m", str(timeout), "-w", "%{http_code}", url]
