"""What Ferry leaves on a host, and the commands that take it away (``uninstall``).

Ferry's files on a host: ``ferry_root`` (``store/``, ``bundles/``, ``locks/``,
``audit.log``, ``engine-facts`` (the kept Docker version probes), and per stack ``stacks/<stack>/``: releases, ``current``, ``up.json``,
the backup script ``ferry-backup`` and ``backup-status/``), the cron entries
``/etc/cron.d/ferry-backup-<stack>`` and the backup logs
``<backup_log_dir>/backup-<stack>.log`` (names: :mod:`ferry.host.backup`). The stacks' *data* (``stacks/<stack>/data/``,
the generated secrets it depends on in ``secrets.json``, Compose named volumes, the
backup archives in ``<backup_dir>/<stack>/``) and Docker itself are not Ferry's files.

Builders return argument lists; :func:`parse_footprint` is the parser of
:func:`footprint`. Nothing here does I/O.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from ..errors import FerryError
from ..model.paths import own_directory
from .files import parse_lines
from .shell import q, sh

ROOT_ENTRIES = ("store", "bundles", "stacks", "locks", "audit.log", "engine-facts")
"""What Ferry creates directly under ``ferry_root``; nothing else there is removed."""

KEEP_IN_STACK = ("data", "secrets.json")
"""What stays in ``stacks/<stack>/`` unless the data is purged."""



def check_dir(path: str, what: str, host: str) -> str:
    """``path`` if it is a directory Ferry may remove things from: absolute, normalised,
    not ``/`` or a system directory such as ``/opt`` or ``/var``.

    Raises:
        FerryError: naming the host and the variable ``what``.
    """
    p = str(path)
    if not own_directory(p):
        raise FerryError(f"{host}: {what} {p!r} is not a directory Ferry may remove files from "
                         f"(absolute, normalised, not / or a system directory)")
    return p


def footprint(root: str, backup_dir: str) -> list[str]:
    """Facts, one per line: ``root`` (``ferry_root`` exists), ``entry NAME`` (each entry
    in it), ``stack NAME`` (each ``stacks/NAME/``), ``sentry NAME ENTRY`` (each entry in
    it), ``data BYTES NAME`` (its data dir),
    ``backups BYTES NAME`` (``<backup_dir>/NAME``), ``cron PATH``, ``docker`` (the CLI
    is installed), ``container PROJECT STATE`` (each Compose container)."""
    r, b = q(root), q(backup_dir)
    return sh(
        f"if [ -d {r} ]; then echo root; for e in {r}/* {r}/.[!.]*; do [ -e \"$e\" ] && echo \"entry ${{e##*/}}\"; done; "
        f"for s in {r}/stacks/*/; do [ -d \"$s\" ] || continue; s=${{s%/}}; n=${{s##*/}}; echo \"stack $n\"; "
        "for e in \"$s\"/* \"$s\"/.[!.]*; do [ -e \"$e\" ] && echo \"sentry $n ${e##*/}\"; done; "
        "[ -d \"$s/data\" ] && echo \"data $(du -sb \"$s/data\" | cut -f1) $n\"; "
        f"[ -d {b}/\"$n\" ] && echo \"backups $(du -sb {b}/\"$n\" | cut -f1) $n\"; done; fi; "
        "for f in /etc/cron.d/ferry-backup-*; do [ -e \"$f\" ] && echo \"cron $f\"; done; "
        "if command -v docker >/dev/null 2>&1; then echo docker; "
        "docker ps -a --filter label=com.docker.compose.project "
        "--format '{{.Label \"com.docker.compose.project\"}} {{.State}}' 2>/dev/null | sed 's/^/container /'; fi; true")


@dataclass
class Footprint:
    """Parsed :func:`footprint`.

    Attributes:
        root: ``ferry_root`` exists.
        entries: names directly under it.
        stacks: ``{stack: bytes of its data dir (0 without one)}``.
        stack_entries: ``{stack: names in stacks/<stack>/}``.
        backups: ``{stack: bytes of its backup dir}`` for stacks that have one.
        cron: cron files of Ferry's scheduled backups.
        docker: the docker CLI is installed.
        containers: ``{compose project: [container states]}``.
    """

    root: bool = False
    entries: list[str] = field(default_factory=list)
    stacks: dict[str, int] = field(default_factory=dict)
    stack_entries: dict[str, list[str]] = field(default_factory=dict)
    backups: dict[str, int] = field(default_factory=dict)
    cron: list[str] = field(default_factory=list)
    docker: bool = False
    containers: dict[str, list[str]] = field(default_factory=dict)

    def ferry_files(self, purge_data: bool = False) -> list[str]:
        """What :func:`remove_files` would remove under ``ferry_root``, relative to it
        (empty: nothing of Ferry's is left there)."""
        out = [e for e in self.entries if e in ROOT_ENTRIES and e != "stacks"]
        for stack, entries in sorted(self.stack_entries.items()):
            out += [f"stacks/{stack}/{e}" for e in sorted(entries) if purge_data or e not in KEEP_IN_STACK]
        return out

    def running(self) -> dict[str, int]:
        """``{stack: running containers}`` for Ferry's stacks with a running container."""
        out = {}
        for stack in self.stacks:
            n = sum(1 for st in self.containers.get(stack, []) if st == "running")
            if n:
                out[stack] = n
        return out


def parse_footprint(text: str) -> Footprint:
    """Parse :func:`footprint` output."""
    f = Footprint()
    for line in parse_lines(text):
        kind, _, rest = line.partition(" ")
        if kind == "root":
            f.root = True
        elif kind == "entry":
            f.entries.append(rest)
        elif kind == "stack":
            f.stacks.setdefault(rest, 0)
        elif kind == "sentry":
            stack, _, entry = rest.partition(" ")
            f.stack_entries.setdefault(stack, []).append(entry)
        elif kind in ("data", "backups"):
            size, _, name = rest.partition(" ")
            if size.isdigit():
                (f.stacks if kind == "data" else f.backups)[name] = int(size)
        elif kind == "cron":
            f.cron.append(rest)
        elif kind == "docker":
            f.docker = True
        elif kind == "container":
            project, _, state = rest.partition(" ")
            f.containers.setdefault(project, []).append(state)
    return f


def remove_stack_containers(project: str) -> list[str]:
    """Remove a Compose project's containers (and volumes anonymous to them) and
    networks by label, for a stack whose compose file is gone."""
    label = q(f"label=com.docker.compose.project={project}")
    return sh(f"docker ps -aq --filter {label} | xargs -r docker rm -f -v >/dev/null; "
              f"docker network ls -q --filter {label} | xargs -r docker network rm >/dev/null; true")


def remove_files(root: str, stacks: list[str], cron: list[str], logs: list[str], log_dir: str, backup_dir: str,
                 purge_data: bool) -> list[str]:
    """Remove Ferry's files (see the module docstring) but ``audit.log`` and ``locks/``
    (the caller still holds the locks and writes the last audit line): the ``cron``
    files, the backup ``logs`` (then ``log_dir`` if left empty), ``store/``,
    ``bundles/``, ``engine-facts`` and each stack's directory but its data; with ``purge_data``, the
    stacks' data dirs, secrets and backup archives (``<backup_dir>/<stack>``) too."""
    r = q(root)
    parts = ["set -e"]
    gone = [*cron, *logs, *(f"/run/lock/ferry-backup-{s}.lock" for s in stacks)]
    if gone:
        parts.append("rm -f -- " + " ".join(q(g) for g in gone))
    for s in stacks:
        sd = q(posixpath.join(root, "stacks", s))
        if purge_data:
            parts.append(f"rm -rf -- {sd} {q(posixpath.join(backup_dir, s))}")
        else:
            keep = " ".join(f"! -name {q(k)}" for k in KEEP_IN_STACK)
            parts.append(f"[ ! -d {sd} ] || find {sd} -mindepth 1 -maxdepth 1 {keep} -exec rm -rf -- {{}} +")
    parts.append(f"rm -rf -- {r}/store {r}/bundles {r}/engine-facts")
    parts.append(f"rmdir -- {q(log_dir)} 2>/dev/null || true")
    if purge_data:
        parts.append(f"rmdir -- {q(backup_dir)} 2>/dev/null || true")
    return sh("; ".join(parts))


def remove_last(root: str) -> list[str]:
    """After the last audit line: remove ``audit.log`` and the (released) lock
    directories, then every directory left empty up to ``ferry_root`` itself."""
    r = q(root)
    return sh(f"rm -f -- {r}/audit.log {r}/locks/*.activating; rmdir -- {r}/locks/* {r}/locks 2>/dev/null; "
              f"rmdir -- {r}/stacks/* {r}/stacks 2>/dev/null; rmdir -- {r} 2>/dev/null; true")


def purge_docker(packages: list[str], data_root: str, daemon_json: str, plugin: str) -> list[str]:
    """Stop Docker and remove it: ``apt-get purge`` of ``packages`` (those installed),
    the contents of ``data_root`` (images, containers, volumes), the directory of
    ``daemon_json`` (``/etc/docker``: Ferry's daemon.json, dockerd's key.json) and the
    Compose ``plugin``. Offline: apt reads no source list."""
    d = q(data_root)
    return sh("set -e; systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true; "
              "pkgs=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' "
              + " ".join(q(p) for p in packages) + " 2>/dev/null | awk '$2 ~ /^ii/ {print $1}'); "
              "[ -z \"$pkgs\" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "
              "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null $pkgs >/dev/null; "
              f"[ ! -d {d} ] || find {d} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +; "
              f"rm -rf -- /var/lib/containerd {q(posixpath.dirname(daemon_json))} {q(plugin)}")


def audit_to_syslog(line: str) -> list[str]:
    """``logger -t ferry LINE``: the host's system log keeps a last word after the
    audit log is gone."""
    return ["logger", "-t", "ferry", "--", line]
