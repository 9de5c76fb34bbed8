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

HASH_STDIN = ("if command -v openssl >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; "
              "elif command -v python3 >/dev/null 2>&1; then h() { python3 -c "
              + shlex.quote("import hashlib,sys\nh=hashlib.sha256()\n"
                            "for b in iter(lambda: sys.stdin.buffer.read(1<<20), b''): h.update(b)\n"
                            "print(h.hexdigest())")
              + "; }; else h() { sha256sum; }; fi")
"""Shell snippet defining ``h``: sha256 of stdin, hex first. OpenSSL's CLI and Python's
hashlib use the CPU's SHA instructions (780 MB/s measured on a sandbox host); coreutils'
``sha256sum`` is generic C (103 MB/s there), kept as the last resort."""


def receive_files(store: str) -> list[str]:
    """Receive a stream of files into ``store``, each kept only if size and sha256 match.

    Stream format (built by :func:`ferry.bundle.upload_stream`), per file: a header line
    ``<sha256> <size>\\n`` then exactly ``size`` bytes; then ``END 0\\n``. Each file goes
    through ``tee`` into ``<store>/<sha256>.part`` while being hashed (hashing overlaps
    the transfer) and is renamed to ``<store>/<sha256>`` only when it checks out. Exit
    status 3: a digest mismatch; 4: a short file (disk full, cut stream); 5: a malformed
    header. The failing file's name is on stderr; files before it are kept (verified).

    Args:
        store: absolute directory on the host.
    """
    st = q(store)
    return sh(
        f"{HASH_STDIN}; set -e; mkdir -p {st}; "
        "while read -r sha size; do "
        "[ \"$sha\" = END ] && exit 0; "
        "case \"$sha$size\" in *[!0-9a-f]*|'') echo 'malformed upload stream header' >&2; exit 5;; esac; "
        f"part={st}/\"$sha\".part; "
        "sum=$(head -c \"$size\" | tee \"$part\" | h | cut -c1-64); "
        "if [ \"$(stat -c %s \"$part\")\" != \"$size\" ]; then rm -f \"$part\"; "
        "echo \"short file (disk full or cut stream): $sha\" >&2; exit 4; fi; "
        "if [ \"$sum\" != \"$sha\" ]; then rm -f \"$part\"; "
        "echo \"sha256 mismatch after transfer: $sha\" >&2; exit 3; fi; "
        f"mv -f \"$part\" {st}/\"$sha\"; "
        "done; echo 'upload stream ended without END' >&2; exit 4")


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
    """``systemctl ARGS...`` (e.g. ``enable docker.service``)."""
    return ["systemctl", *args]


def docker_images() -> list[str]:
    """Every local image: ``ID<TAB>REPO:TAG`` per line (ID is ``sha256:<hex>``)."""
    return ["docker", "images", "--no-trunc", "--format", "{{.ID}}\t{{.Repository}}:{{.Tag}}"]


def docker_load(path: str) -> list[str]:
    """``docker load`` of one image tarball (``path`` on the host), quietly."""
    return ["docker", "load", "-q", "-i", path]


def docker_tag(image_id: str, ref: str) -> list[str]:
    """Tag an image (by ID) with ``ref``."""
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
    """``ID<TAB>SERVICE<TAB>STARTED_AT<TAB>STATUS<TAB>HEALTH`` of the project's containers,
    from Docker's labels (works without a compose file; HEALTH is empty without a
    healthcheck)."""
    return sh("ids=$(docker ps -aq --filter " + q(f"label=com.docker.compose.project={project}")
              + "); [ -z \"$ids\" ] || docker inspect --format "
              + q('{{.Id}}\t{{index .Config.Labels "com.docker.compose.service"}}\t{{.State.StartedAt}}'
                  '\t{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{end}}')
              + " $ids")


def http_status(url: str, timeout: int = 5) -> list[str]:
    """The HTTP status code of ``GET url`` requested on the host (``000`` if no answer)."""
    return ["curl", "-s", "-o", "/dev/null", "-m", str(timeout), "-w", "%{http_code}", url]
