"""The host's container engine: one batched fact script, its parser, the requirements
of Docker's static engine, and the commands of the static layout.

:func:`engine_facts` asks a host everything install-docker-offline needs to decide, in
ONE remote command (a POSIX ``sh`` script that answers ``key=value`` lines);
:func:`parse_engine_facts` reads the answer into :class:`EngineFacts`. Nothing here does
I/O.

The static layout on a host (``STATIC_DIR`` and ``BIN_DIR`` below)::

    /usr/local/lib/docker-static/<version>-<sha12>/   the tarball's executables, one
                                                      directory per engine (kept: current
                                                      and the one before)
    /usr/local/lib/docker-static/current -> <version>-<sha12>    switched by rename
    /usr/bin/<name> -> /usr/local/lib/docker-static/current/<name>   for every executable
    /etc/systemd/system/containerd.service, docker.service         Ferry's units
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from .files import switch_symlink
from .shell import q, sh

STATIC_DIR = "/usr/local/lib/docker-static"
"""Where the static engines live, one directory per engine, ``current`` the one in use."""
BIN_DIR = "/usr/bin"
"""Where the static engine's executables are linked (on every RHEL/Debian sudo
``secure_path``, unlike ``/usr/local/bin``)."""
DAEMON_JSON = "/etc/docker/daemon.json"
PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"
UNIT_DIR = "/etc/systemd/system"
UNITS = ("containerd.service", "docker.service")
UNIT_MARK = "# Managed by Ferry (install-docker-offline, static layout)"
"""First line of Ferry's units: tells Ferry's static engine from anything else."""
MIN_KERNEL = (3, 10)
PLUGIN_PATHS = ("$HOME/.docker/cli-plugins/docker-compose", PLUGIN,
                "/usr/local/libexec/docker/cli-plugins/docker-compose",
                "/usr/lib/docker/cli-plugins/docker-compose", "/usr/libexec/docker/cli-plugins/docker-compose")
"""Where the Docker CLI looks for the Compose plugin (the first found is used)."""


def _probes(cache: str | None, write: bool) -> str:
    """The script part that reports ``dockerd`` and ``compose`` (the version probes: two
    large Go programs started, about a second on a busy host), or, when ``cache`` holds
    the answer for the very same files, the cached lines (``probes=cached``). The
    fingerprint is ``stat`` (device, inode, size, mtime, ctime) of ``dockerd``,
    ``docker`` and every Compose plugin path: any upgrade, reinstall or replacement of
    one of them changes it. With ``write``, a probe's answer is kept in ``cache``."""
    plugins = " ".join(f'"{p}"' if p.startswith("$HOME") else q(p) for p in PLUGIN_PATHS)
    out = ("fp=$(for f in \"$(command -v dockerd)\" \"$(command -v docker)\" " + plugins + "; do "
           "stat -L -c '%n %d %i %s %Y %Z' \"$f\" 2>/dev/null || echo \"- $f\"; done | sha256sum | cut -c1-64); "
           "v engine_fingerprint \"$fp\"; ")
    probe = ("dv=$(dockerd --version 2>/dev/null); cv=$(docker compose version --short 2>/dev/null); "
             "v dockerd \"$dv\"; v compose \"$cv\"; v probes run; ")
    if write and cache:
        probe += (f"printf 'engine_fingerprint=%s\\ndockerd=%s\\ncompose=%s\\n' \"$fp\" \"$dv\" \"$cv\" "
                  f"> {q(cache + '.tmp')} 2>/dev/null && mv -f {q(cache + '.tmp')} {q(cache)}; ")
    if not cache:
        return out + probe
    return (out + f"if [ \"$(sed -n 's/^engine_fingerprint=//p' {q(cache)} 2>/dev/null)\" = \"$fp\" ]; then "
            f"grep -e '^dockerd=' -e '^compose=' {q(cache)}; v probes cached; else {probe}fi; ")


def cache_text(facts: "EngineFacts") -> bytes:
    """What :func:`engine_facts` keeps in its cache for ``facts`` (probed on the host)."""
    return (f"engine_fingerprint={facts.fingerprint}\ndockerd={facts.dockerd}\n"
            f"compose={facts.compose_version or ''}\n").encode()


def engine_facts(packages: Sequence[str] = (), binaries: Sequence[str] = (), cache: str | None = None,
                 write_cache: bool = False) -> list[str]:
    """One script that reports every fact the engine install decides on.

    Args:
        packages: Debian package names whose dpkg status to report (``pkg=`` lines).
        binaries: executables of the static engine whose ``BIN_DIR`` link to report when
            it is not Ferry's (``link=`` lines).
        cache: host file of the last version probes (``<ferry_root>/engine-facts``):
            when the engine's files are the very same as then, their answer is reused
            instead of starting ``dockerd`` and ``docker compose`` (see :func:`_probes`).
        write_cache: keep a new probe's answer in ``cache`` (never in a read-only phase).

    Output: ``key=value`` lines (see :func:`parse_engine_facts`); always exits 0.
    """
    files = [DAEMON_JSON] + [f"{UNIT_DIR}/{u}" for u in UNITS]
    pkgs = " ".join(q(p) for p in packages)
    bins = " ".join(q(b) for b in binaries)
    cur = f"{STATIC_DIR}/current"
    return sh(
        "v() { printf '%s=%s\\n' \"$1\" \"$2\"; }; "
        "v machine \"$(uname -m)\"; v kernel \"$(uname -r)\"; "
        "v os \"$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '\\\"')\"; "
        "v dpkg_arch \"$(dpkg --print-architecture 2>/dev/null)\"; "
        "v rpm \"$(command -v rpm)\"; "
        "[ -d /run/systemd/system ] && v systemd yes || v systemd no; "
        "v cgroup \"$(awk '$3==\"cgroup2\"{b=1} $3==\"cgroup\"{a=1} "
        "END{print (a&&b)?\"hybrid\":b?\"v2\":a?\"v1\":\"\"}' /proc/mounts 2>/dev/null)\"; "
        "v iptables \"$(iptables --version 2>/dev/null | head -n 1)\"; "
        "v nft \"$(command -v nft)\"; v tar \"$(command -v tar)\"; v gzip \"$(command -v gzip)\"; "
        + _probes(cache, write_cache) +
        "for u in docker containerd; do "
        "v ${u}_active \"$(systemctl is-active $u 2>/dev/null)\"; "
        "v ${u}_enabled \"$(systemctl is-enabled $u 2>/dev/null)\"; "
        "p=$(systemctl show -p MainPID $u 2>/dev/null | cut -d= -f2); "
        "[ -n \"$p\" ] && [ \"$p\" != 0 ] && v ${u}_exe \"$(readlink /proc/$p/exe)\"; done; "
        f"v static_current \"$(readlink {q(cur)})\"; "
        f"v static_dirs \"$(ls -1 {q(STATIC_DIR)} 2>/dev/null | grep -v -e '^current' -e '[.]partial$' | tr '\\n' ' ')\"; "
        f"for f in {' '.join(q(f) for f in files)}; do "
        "[ -f \"$f\" ] && v sum \"$(sha256sum \"$f\" | cut -c1-64) $f\"; done; "
        f"head -n 1 {q(UNIT_DIR + '/docker.service')} 2>/dev/null | grep -qxF {q(UNIT_MARK)} && v ferry_units yes; "
        f"for b in {bins}; do l={q(BIN_DIR)}/$b; "
        f"[ \"$(readlink \"$l\")\" = {q(cur)}/$b ] && continue; "
        "o=-; if [ -e \"$l\" ] || [ -L \"$l\" ]; then "
        "o=$(rpm -qf \"$l\" 2>/dev/null) || o=$(dpkg -S \"$l\" 2>/dev/null | cut -d: -f1) || o=; "
        "o=${o:-unowned}; fi; v link \"$b $o\"; done; "
        + (f"dpkg-query -W -f='pkg=${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {pkgs} 2>/dev/null; "
           if pkgs else "")
        + "exit 0")


@dataclass
class EngineFacts:
    """Parsed :func:`engine_facts` answer.

    Attributes:
        machine: ``uname -m`` (``x86_64``).
        kernel: ``uname -r`` (``6.1.0-18-amd64``, ``3.10.0-1160.el7.x86_64``).
        os: os-release ``PRETTY_NAME`` (``Rocky Linux 9.3 (Blue Onyx)``) or ``""``.
        dpkg_arch: Debian architecture (``amd64``) or None when the host has no dpkg.
        rpm: the host has rpm.
        systemd: systemd is PID 1 (``/run/systemd/system`` exists).
        cgroup: ``v1``, ``v2``, ``hybrid`` or ``""`` (none mounted), from /proc/mounts.
        iptables: ``iptables --version`` (``iptables v1.8.9 (nf_tables)``) or ``""``.
        nft: the ``nft`` command's path or ``""``.
        tar: ``tar`` and ``gzip`` are both there.
        docker_version: what ``dockerd --version`` says (``20.10.24+dfsg1``) or None.
        compose_version: ``docker compose version --short`` (``2.40.3``) or None.
        active / enabled: ``{"docker": "active", "containerd": "inactive"}`` (systemctl).
        exe: ``{"docker": "/usr/local/lib/docker-static/20.10.24-0a1b2c3d4e5f/dockerd"}``:
            the executable the running unit's main process runs (``(deleted)`` suffix
            when it was removed since).
        static_current: the static engine ``current`` points at (``20.10.24-0a1b...``)
            or ``""``.
        static_dirs: static engine directories present.
        sums: ``{path: sha256}`` of daemon.json and the two units.
        ferry_units: ``docker.service`` in /etc/systemd/system is Ferry's.
        links: ``{binary: owner}`` for static executables whose ``BIN_DIR`` link is not
            Ferry's: owner ``-`` (absent), ``unowned`` (a file no package owns), or the
            rpm/dpkg package that owns it.
        packages: ``{name: version}`` of installed Debian packages asked about.
        dockerd: ``dockerd --version`` as it answered (``Docker version 20.10.24+dfsg1, build 297e128``).
        fingerprint: identity of the engine's and Compose's files (see :func:`_probes`).
        probed: the versions were asked of the programs now (False: from the cache).
    """

    machine: str
    kernel: str
    os: str = ""
    dpkg_arch: str | None = None
    rpm: bool = False
    systemd: bool = False
    cgroup: str = ""
    iptables: str = ""
    nft: str = ""
    tar: bool = False
    docker_version: str | None = None
    compose_version: str | None = None
    active: dict[str, str] = field(default_factory=dict)
    enabled: dict[str, str] = field(default_factory=dict)
    exe: dict[str, str] = field(default_factory=dict)
    static_current: str = ""
    static_dirs: list[str] = field(default_factory=list)
    sums: dict[str, str] = field(default_factory=dict)
    ferry_units: bool = False
    links: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    dockerd: str = ""
    fingerprint: str = ""
    probed: bool = True

    @property
    def kernel_version(self) -> tuple[int, int] | None:
        """(major, minor) of :attr:`kernel`, or None when it does not start with them."""
        m = re.match(r"(\d+)\.(\d+)", self.kernel)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def running(self, unit: str) -> bool:
        """The unit (``docker``/``containerd``) is active."""
        return self.active.get(unit) == "active"

    def describe(self) -> str:
        """``Rocky Linux 9.3 (Blue Onyx), kernel 6.1.0-18-amd64``: for messages."""
        return f"{self.os or 'unknown OS'}, kernel {self.kernel}"


def parse_engine_facts(text: str) -> EngineFacts:
    """Parse :func:`engine_facts` output.

    Raises:
        ValueError: no ``machine=`` or ``kernel=`` line (not this script's answer).
    """
    one: dict[str, str] = {}
    sums: dict[str, str] = {}
    links: dict[str, str] = {}
    packages: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "sum":
            digest, _, path = value.partition(" ")
            sums[path] = digest
        elif key == "link":
            name, _, owner = value.partition(" ")
            links[name] = owner or "-"
        elif key == "pkg":
            parts = value.split()
            if len(parts) >= 3 and parts[2].startswith("ii"):
                packages[parts[0]] = parts[1]
        else:
            one[key] = value.strip()
    if "machine" not in one or "kernel" not in one:
        raise ValueError("engine facts: no machine= or kernel= line in the host's answer")
    m = re.search(r"version v?([^\s,]+)", one.get("dockerd", ""))
    return EngineFacts(
        machine=one["machine"], kernel=one["kernel"], os=one.get("os", ""),
        dpkg_arch=one.get("dpkg_arch") or None, rpm=bool(one.get("rpm")),
        systemd=one.get("systemd") == "yes", cgroup=one.get("cgroup", ""),
        iptables=one.get("iptables", ""), nft=one.get("nft", ""),
        tar=bool(one.get("tar")) and bool(one.get("gzip")),
        docker_version=m.group(1) if m else None,
        compose_version=one.get("compose", "").lstrip("v") or None,
        active={u: one.get(f"{u}_active", "") for u in ("docker", "containerd")},
        enabled={u: one.get(f"{u}_enabled", "") for u in ("docker", "containerd")},
        exe={u: one[f"{u}_exe"] for u in ("docker", "containerd") if one.get(f"{u}_exe")},
        static_current=one.get("static_current", ""),
        static_dirs=one.get("static_dirs", "").split(),
        sums=sums, ferry_units=one.get("ferry_units") == "yes", links=links, packages=packages,
        dockerd=one.get("dockerd", ""), fingerprint=one.get("engine_fingerprint", ""),
        probed=one.get("probes") != "cached",
    )


def requirements(f: EngineFacts, static: bool) -> list[str]:
    """What the host lacks to run Docker (empty: nothing), each as a short phrase.

    Every engine needs a kernel >= 3.10, cgroups mounted (v1 or v2) and systemd as PID 1.
    The static engine (``static``) also needs an ``iptables`` command (legacy or
    nf_tables backend: dockerd programs its NAT rules through it; ``nft`` alone is not
    enough; Debian's packages bring their own) and ``tar`` and ``gzip`` to unpack it.
    """
    missing = []
    kv = f.kernel_version
    if kv is None or kv < MIN_KERNEL:
        missing.append(f"kernel >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} (has {f.kernel or 'none'})")
    if not f.cgroup:
        missing.append("cgroups mounted (no cgroup or cgroup2 in /proc/mounts)")
    if static and not f.iptables:
        missing.append("an iptables command (legacy or nf_tables)"
                       + (f"; {f.nft} alone is not enough for dockerd" if f.nft else ""))
    if not f.systemd:
        missing.append("systemd as PID 1")
    if static and not f.tar:
        missing.append("tar and gzip")
    return missing


def engine_id(version: str, sha256: str) -> str:
    """Directory name of a static engine under :data:`STATIC_DIR`: ``<version>-<sha12>``."""
    return f"{version}-{sha256[:12]}"


def is_engine_id(name: str) -> bool:
    """``name`` is an :func:`engine_id` (a directory Ferry made), e.g. ``24.0.7-0a1b2c3d4e5f``."""
    return re.fullmatch(r"\d+\.\d+\.\d+[A-Za-z0-9.+~-]*-[0-9a-f]{12}", name) is not None


def extract_static(tarball: str, engine: str, names: Sequence[str]) -> list[str]:
    """Unpack ``docker/<name>`` for each of ``names`` from ``tarball`` into
    ``STATIC_DIR/<engine>`` (via ``<engine>.partial``, renamed when complete; nothing
    else of the tarball is written)."""
    dest = f"{STATIC_DIR}/{engine}"
    part = dest + ".partial"
    members = " ".join(q(f"docker/{n}") for n in names)
    return sh(f"set -e; rm -rf {q(part)}; mkdir -p -m 0755 {q(STATIC_DIR)} {q(part)}; "
              f"tar -xzf {q(tarball)} -C {q(part)} --strip-components=1 --no-same-owner "
              f"--no-same-permissions {members}; chmod 0755 {q(part)}/*; "
              f"rm -rf {q(dest)}; mv -T {q(part)} {q(dest)}")


def switch_static(engine: str) -> list[str]:
    """Point ``STATIC_DIR/current`` at ``engine`` (atomic rename)."""
    return switch_symlink(f"{STATIC_DIR}/current", engine)


def link_binaries(names: Sequence[str]) -> list[str]:
    """``BIN_DIR/<name> -> STATIC_DIR/current/<name>`` for each name, each link replaced
    by rename (a file that was there, e.g. copied by hand, is replaced)."""
    cur = f"{STATIC_DIR}/current"
    return sh("set -e; " + "; ".join(
        f"ln -sfn {q(cur + '/' + n)} {q(BIN_DIR + '/.' + n + '.ferry')}; "
        f"mv -T -f {q(BIN_DIR + '/.' + n + '.ferry')} {q(BIN_DIR + '/' + n)}" for n in names))


def remove_static(engines: Sequence[str]) -> list[str]:
    """Remove the engine directories ``engines`` under ``STATIC_DIR``.

    Raises:
        ValueError: a name that is not a plain directory name (they come from the host's
            answer).
    """
    bad = [e for e in engines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+~-]*", e)]
    if bad:
        raise ValueError(f"not an engine directory name: {bad[0]!r}")
    return ["rm", "-rf", "--", *(f"{STATIC_DIR}/{e}" for e in engines)]


def save_files(paths: Sequence[str]) -> list[str]:
    """Copy each existing file to ``<path>.ferry-prev`` (mode kept), removing stale
    copies of absent ones: what :func:`restore_files` puts back."""
    return sh("; ".join(f"if [ -f {q(p)} ]; then cp -p {q(p)} {q(p + '.ferry-prev')}; "
                        f"else rm -f {q(p + '.ferry-prev')}; fi" for p in paths))


def drop_saved(paths: Sequence[str]) -> list[str]:
    """Remove the ``<path>.ferry-prev`` copies :func:`save_files` made."""
    return ["rm", "-f", "--", *(p + ".ferry-prev" for p in paths)]


def restore_files(paths: Sequence[str]) -> list[str]:
    """Put back what :func:`save_files` saved (a file that did not exist is removed)."""
    return sh("; ".join(f"if [ -f {q(p + '.ferry-prev')} ]; then mv -f {q(p + '.ferry-prev')} {q(p)}; "
                        f"else rm -f {q(p)}; fi" for p in paths))


def running_containers() -> list[str]:
    """IDs of the running containers, one per line (nothing when docker does not answer)."""
    return sh("docker ps -q --no-trunc 2>/dev/null || true")


def start_containers(ids: Sequence[str]) -> list[str]:
    """``docker start`` the containers not running among ``ids`` (a container that is
    gone or fails to start is reported on stderr, the others are still started)."""
    return sh("rc=0; for c in " + " ".join(q(i) for i in ids) + "; do "
              "[ \"$(docker inspect -f '{{.State.Running}}' \"$c\" 2>/dev/null)\" = true ] && continue; "
              "docker start \"$c\" >/dev/null || rc=1; done; exit $rc")
