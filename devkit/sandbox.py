"""Throw-away target hosts ("sandbox") on the controller's local Docker engine.

A sandbox host is a container that behaves like a small Debian 12 server: systemd is
PID 1, ``sshd`` accepts root logins with a key, it has its *own* SSH host keys and an
empty ``/var/lib/docker`` (a named volume, so a Docker engine installed later works on
overlay2), and it sits on an ``--internal`` Docker network: the controller reaches it
by IP, but it cannot reach anything outside (the air gap of a real site).

Docker is deliberately **not** installed in the host image; installing it offline is
Ferry's job.

Pieces, all named with the ``ferry-sandbox`` prefix:

- image ``ferry-sandbox-host:bookworm``, built with ``mmdebstrap`` + ``docker import``
  and labelled with the sha256 of its recipe (:func:`recipe_hash`); the root
  filesystem tarball is cached under ``<repo>/.cache/sandbox/``;
- network ``ferry-sandbox`` (internal, a free ``10.x.y.0/24``);
- containers ``ferry-sandbox-1..N`` (hostnames ``sandbox-1..N``), each with a volume
  ``ferry-sandbox-<i>-docker`` on ``/var/lib/docker``;
- in the state directory (default ``<repo>/.sandbox``): ``id_ed25519`` (+ ``.pub``),
  ``known_hosts`` (the hosts' real keys, read out of band) and ``inventory.yml``.

The air gap is Docker's: an internal network's bridge forwards nothing to other
interfaces. (Hosts do have a default route to the bridge gateway, and like any container
they can still reach ports on the controller itself.)

Container, volume and network names are global to the machine, so there is one sandbox
per Docker engine; ``up`` with another state directory takes the hosts over (it
installs its own key).

Every ``docker`` call goes through :func:`ferry.controller.localdocker.docker` and ``mmdebstrap``
through :func:`subprocess.run`, with argument lists; nothing here builds a
controller-side shell string.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import FerryError
from ferry.resources import cache_dir
from ferry.controller.localdocker import docker, ensure_engine

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = cache_dir() / "sandbox"

IMAGE_REPO = "ferry-sandbox-host"
SUITE = "bookworm"
IMAGE_TAG = f"{IMAGE_REPO}:{SUITE}"
#: Name of this sandbox: its network, container and volume prefix. Several sandboxes can
#: coexist on one machine (e.g. one per git worktree) with ``FERRY_SANDBOX_NAME``.
NAME = os.environ.get("FERRY_SANDBOX_NAME", "ferry-sandbox")
if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", NAME):
    raise ValueError(f"FERRY_SANDBOX_NAME={NAME!r}: lowercase letters, digits and '-' only")
NETWORK = NAME
#: Where ``up`` writes the key, known_hosts and inventory: ``.sandbox`` for the default
#: sandbox, ``.sandbox-<name>`` for another one.
DEFAULT_STATE_DIR = REPO_ROOT / (".sandbox" if NAME == "ferry-sandbox" else f".sandbox-{NAME}")
CONTAINER_PREFIX = f"{NAME}-"
HOST_PREFIX = "sandbox-"

LABEL = "ferry.sandbox"                   # on every container, volume and the network
LABEL_RECIPE = "ferry.sandbox.recipe"     # on the image: sha256 of RECIPE
LABEL_INDEX = "ferry.sandbox.index"       # on containers: 1..N

KEY_NAME = "id_ed25519"
KNOWN_HOSTS_NAME = "known_hosts"
INVENTORY_NAME = "inventory.yml"

#: Seconds ``up`` waits for all hosts to boot and accept an SSH login (a deadline: a
#: quiet machine boots 6 hosts in about 10 s; parallel test workers each booting theirs on
#: 2 loaded cores take minutes).
READY_TIMEOUT = 240.0

#: Candidate subnets for the sandbox network, tried in order. All are in 10/8 so they
#: stay clear of Docker's default address pools (172.17-31/16, 192.168/16), which a
#: Docker engine *inside* a host will use for its own networks.
SUBNET_CANDIDATES = [f"10.{a}.{b}.0/24" for a in (213, 214, 215, 231, 232) for b in (0, 7, 42, 77, 99, 128)]

#: First host gets ``<subnet base> + HOST_IP_OFFSET + 1`` (e.g. 10.213.0.11).
HOST_IP_OFFSET = 10

#: Hosts without dpkg (``up(nodpkg=N)``): ``nodpkg-1..N`` at ``<subnet base> +
#: NODPKG_IP_OFFSET + j`` (10.213.0.231...), containers ``<NAME>-nodpkg-<j>``, labelled
#: ``LABEL_NODPKG=<j>`` instead of an index (so ``count`` never removes them).
NODPKG_IP_OFFSET = 230
NODPKG_MAX = 9
NODPKG_PREFIX = "nodpkg-"
LABEL_NODPKG = "ferry.sandbox.nodpkg"

#: Hosts of a Docker Swarm (``up(swarm=N)``): ``swarm-1..N`` at ``<subnet base> +
#: SWARM_IP_OFFSET + j`` (10.213.0.221...), containers ``<NAME>-swarm-<j>``, labelled
#: ``LABEL_SWARM=<j>``; the inventory's group ``swarm`` has ``ferry_engine: swarm``.
#: The same image as the numbered hosts (Docker installed by Ferry, swarm formed by
#: ``inv swarm.setup``). Their kernel is this machine's: no IPVS, so the routing mesh and
#: service VIPs do not work there (``endpoint_mode: dnsrr``, ``mode: host`` ports do).
SWARM_IP_OFFSET = 220
SWARM_MAX = 9
SWARM_PREFIX = "swarm-"
LABEL_SWARM = "ferry.sandbox.swarm"

#: The hosts that look like the world (``up(world=True)``, see :data:`WORLD`): at
#: ``<subnet base> + WORLD_IP_OFFSET + n`` on their networks, containers
#: ``<NAME>-world-<role>``, labelled ``LABEL_WORLD=<role>`` instead of an index (so
#: ``count`` never removes them).
WORLD_IP_OFFSET = 240
LABEL_WORLD = "ferry.sandbox.world"
#: The second internal network, behind the bastion. The controller has no address on it
#: (``inhibit_ipv4``) and no route to it: its hosts are reachable ONLY through the bastion.
INNER_NETWORK = f"{NAME}-inner"
#: The world hosts' image: the host image plus Debian's sudo (``apt-get download`` on the
#: controller, installed with dpkg; cached under ``<cache>/sandbox/debs/``).
WORLD_TAG = f"{IMAGE_REPO}:{SUITE}-world"
LABEL_WORLD_BASE = "ferry.sandbox.world-base"   # on the world image: the host image ID it derives from
WORLD_PASSWORD_NAME = "become_password"

# ---------------------------------------------------------------------------- recipe

_HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this host's own SSH host keys (Ferry sandbox)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
RequiredBy=ssh.service
"""

_SSHD_CONFIG = """\
# Ferry sandbox: key-only root login (Debian's default is prohibit-password already).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

# Everything that determines the image. Its sha256 (recipe_hash) labels the image, the
# hash of all but "import_changes" names the cached rootfs tarball: change anything here
# and the image is rebuilt on the next build_host_image()/up().
RECIPE: dict = {
    "version": 1,
    "suite": SUITE,
    "variant": "minbase",
    "mirrors": [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ],
    "packages": [
        "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "iptables",
        "kmod", "procps", "netbase", "ca-certificates", "python3", "cron", "curl",
        "sqlite3",
    ],
    # Set up merged-/usr the debootstrap way; otherwise init-system-helpers' dependency
    # "usrmerge | usr-is-merged" installs usrmerge, which drags in all of perl (~50 MB).
    "hook_dirs": ["/usr/share/mmdebstrap/hooks/merged-usr"],
    # Keep the image small: no docs, man pages, info, translations. The options stay in
    # /etc/dpkg/dpkg.cfg.d/ so packages installed later on a host are trimmed too.
    "dpkgopts": [
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/lintian/*",
    ],
    # Files placed into the rootfs (path inside -> content), before the hooks run.
    "files": {
        "/etc/systemd/system/ferry-ssh-hostkeys.service": _HOSTKEYS_UNIT,
        "/etc/ssh/sshd_config.d/ferry-sandbox.conf": _SSHD_CONFIG,
        # No locales are installed; C.UTF-8 is built into libc (pam_env reads this).
        "/etc/default/locale": "LANG=C.UTF-8\n",
    },
    # mmdebstrap customize hooks (run by mmdebstrap's sh with $1 = the rootfs).
    "hooks": [
        # Every host must generate its own host keys at first boot.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        'chroot "$1" systemctl enable ferry-ssh-hostkeys.service',
        # No consoles in a container; nothing to remount; no network to update from.
        'chroot "$1" systemctl mask getty@tty1.service console-getty.service '
        'serial-getty@console.service systemd-remount-fs.service '
        'apt-daily.timer apt-daily-upgrade.timer',
        # Each container gets its own machine id at boot.
        ': > "$1"/etc/machine-id',
        'rm -f "$1"/var/lib/dbus/machine-id',
        'rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*',
    ],
    "import_changes": [
        'CMD ["/sbin/init"]',
        "ENV container=docker",
    ],
}


# ------------------------------------------------------------------ the host without dpkg

_OS_RELEASE_NODPKG = """\
NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
VARIANT="Ferry sandbox: a Debian 12 userland without dpkg or apt"
VARIANT_ID="ferry-nodpkg"
"""

#: Image of the host that is not Debian as far as Ferry can tell: its os-release says
#: Rocky Linux (RHEL-like), and dpkg, apt and their databases are gone, so the only way
#: to give it Docker is the static tarball. Still systemd, sshd, iptables, cron, python3,
#: and libdevmapper (a RHEL minimal install has device-mapper-libs; the Debian-built
#: dockerd of the test tarballs links it). Built from the same Debian packages.
RECIPE_NODPKG: dict = {
    **RECIPE,
    "kind": "nodpkg",
    "packages": RECIPE["packages"] + ["libdevmapper1.02.1"],
    "files": {
        **RECIPE["files"],
        "/etc/.ferry-os-release": _OS_RELEASE_NODPKG,
        "/etc/redhat-release": "Rocky Linux release 9.3 (Blue Onyx)\n",
        "/etc/rocky-release": "Rocky Linux release 9.3 (Blue Onyx)\n",
    },
    # mmdebstrap's own apt clean-up runs apt on the root: skipped, the hooks remove apt.
    "skip": ["cleanup/apt", "cleanup/mmdebstrap"],
    "hooks": RECIPE["hooks"] + [
        'rm -f "$1"/etc/os-release "$1"/usr/lib/os-release "$1"/etc/debian_version',
        'mv "$1"/etc/.ferry-os-release "$1"/usr/lib/os-release',
        'ln -s ../usr/lib/os-release "$1"/etc/os-release',
        # dpkg, apt and their databases and configuration
        'rm -rf "$1"/var/lib/dpkg "$1"/var/lib/apt "$1"/var/cache/apt "$1"/var/log/apt '
        '"$1"/etc/apt "$1"/etc/dpkg "$1"/usr/lib/apt "$1"/usr/lib/dpkg "$1"/usr/share/dpkg '
        '"$1"/usr/share/apt "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log',
        'rm -f "$1"/usr/bin/dpkg "$1"/usr/bin/dpkg-* "$1"/usr/bin/apt "$1"/usr/bin/apt-* '
        '"$1"/usr/bin/update-alternatives "$1"/usr/sbin/dpkg-* "$1"/usr/lib/*/libapt-*',
    ],
}
NODPKG_TAG = f"{IMAGE_REPO}:nodpkg"


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def recipe_hash(recipe: dict | None = None) -> str:
    """Return the sha256 (64 hex chars) of ``recipe`` (default :data:`RECIPE`), the host
    image's identity."""
    return _sha256_json(RECIPE if recipe is None else recipe)


def _rootfs_hash(recipe: dict | None = None) -> str:
    """sha256 of the part of ``recipe`` that shapes the rootfs tarball (not the import)."""
    return _sha256_json({k: v for k, v in (RECIPE if recipe is None else recipe).items()
                         if k != "import_changes"})


# ---------------------------------------------------------------------------- model

@dataclass
class SandboxHost:
    """One sandbox host.

    Attributes:
        name: inventory name, ``"sandbox-1"``, ... (also the container's hostname).
        ip: its address on the sandbox network, e.g. ``"10.213.0.11"``.
        container: Docker container name, ``"ferry-sandbox-1"``, ...
    """

    name: str
    ip: str
    container: str


@dataclass
class Sandbox:
    """A running sandbox and the files to reach it.

    Attributes:
        state_dir: directory holding the files below.
        hosts: the hosts, in index order (``hosts[0]`` is the ``prod`` host).
        key_file: OpenSSH-format ed25519 private key (mode 0600) that root on every host
            accepts; the public half is ``key_file`` + ``.pub``.
        known_hosts: OpenSSH known_hosts with every host's real host keys, by IP.
        inventory: Ansible YAML inventory (``prod`` = first host, ``staging`` = rest,
            ``nodpkg`` = the hosts without dpkg, ``swarm`` = the swarm hosts, ``world_*`` =
            the world hosts); paths in it are relative to its own directory.
        nodpkg: the hosts without dpkg (``nodpkg-1``...; see :data:`RECIPE_NODPKG`).
        swarm: the swarm hosts (``swarm-1``...; group ``swarm``, ``ferry_engine: swarm``).
        world: the hosts that look like the world (:data:`WORLD`), when started with
            ``up(world=True)``; ``ip`` is the address the inventory uses (the inner
            host's is on :data:`INNER_NETWORK`).
        become_password: file (0600) holding ``deploy``'s sudo password on
            ``world-sudopw`` (the inventory has it in ``host_vars/world-sudopw.yml``).
    """

    state_dir: Path
    hosts: list[SandboxHost]
    key_file: Path
    known_hosts: Path
    inventory: Path
    nodpkg: list[SandboxHost] = field(default_factory=list)
    swarm: list[SandboxHost] = field(default_factory=list)
    world: list[SandboxHost] = field(default_factory=list)
    become_password: Path | None = None


# ---------------------------------------------------------------------------- helpers

def _say(console, message: str) -> None:
    if console is not None:
        console.print(message)


def _container_name(i: int) -> str:
    return f"{CONTAINER_PREFIX}{i}"


def _host_name(i: int) -> str:
    return f"{HOST_PREFIX}{i}"


def _volume_name(i: int) -> str:
    return f"{CONTAINER_PREFIX}{i}-docker"


def _paths(state_dir: Path) -> tuple[Path, Path, Path, Path]:
    """(key_file, public key, known_hosts, inventory) inside ``state_dir``."""
    key = state_dir / KEY_NAME
    return key, state_dir / (KEY_NAME + ".pub"), state_dir / KNOWN_HOSTS_NAME, state_dir / INVENTORY_NAME


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock(name: str = NAME):
    """Serialise sandbox changes on this machine (names are global to the engine); with
    ``name``, another lock (``images``: building the shared host images)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _inspect(kind: str, *names: str) -> list[dict]:
    """``docker <kind> inspect NAMES`` as parsed JSON, leaving out names that do not exist."""
    if not names:
        return []
    proc = docker(kind, "inspect", *names, check=False)
    try:
        return json.loads(proc.stdout or b"[]")
    except json.JSONDecodeError:
        return []


def _image_recipe_label(tag: str) -> str | None:
    found = _inspect("image", tag)
    if not found:
        return None
    return ((found[0].get("Config") or {}).get("Labels") or {}).get(LABEL_RECIPE)


def _image_id(tag: str) -> str:
    found = _inspect("image", tag)
    if not found:
        raise FerryError(f"image {tag} not found after building it")
    return found[0]["Id"]


# ---------------------------------------------------------------------------- image

def _mmdebstrap(tarball: Path, console=None, recipe: dict | None = None) -> None:
    """Build the host root filesystem tarball for ``recipe`` (default :data:`RECIPE`)
    into ``tarball``."""
    recipe = RECIPE if recipe is None else recipe
    if shutil.which("mmdebstrap") is None:
        raise FerryError("mmdebstrap not found on the controller: apt-get install mmdebstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial")
    partial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferry-sandbox-") as tmp:
        args = ["mmdebstrap", "--variant=" + recipe["variant"], "--format=tar",
                "--include=" + ",".join(recipe["packages"]),
                "--aptopt=Acquire::Languages \"none\""]
        args += [f"--hook-dir={d}" for d in recipe["hook_dirs"]]
        args += [f"--dpkgopt={opt}" for opt in recipe["dpkgopts"]]
        args += [f"--skip={step}" for step in recipe.get("skip", [])]
        for n, (inside, content) in enumerate(sorted(recipe["files"].items())):
            outside = Path(tmp) / f"file{n}"
            outside.write_text(content)
            args.append(f"--customize-hook=upload {outside} {inside}")
        args += [f"--customize-hook={hook}" for hook in recipe["hooks"]]
        args += [recipe["suite"], str(partial), *recipe["mirrors"]]
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=1800)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise FerryError("mmdebstrap did not finish within 30 min") from None
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        tail = " | ".join(lines[-3:]) if lines else f"exit status {proc.returncode}"
        raise FerryError(f"mmdebstrap failed building the sandbox host rootfs: {tail}")
    os.replace(partial, tarball)


def build_host_image(console=None, recipe: dict | None = None, tag: str = IMAGE_TAG) -> str:
    """Build the sandbox host image unless it is already there; return its tag.

    The image is ``ferry-sandbox-host:bookworm``: a Debian 12 minbase root filesystem
    from ``mmdebstrap`` (systemd, openssh-server, python3, iptables, ... but no Docker)
    imported with ``docker import`` and labelled ``devkit.sandbox.recipe=<sha256>``.
    Nothing is done when an image with that tag and the current recipe hash exists. The
    rootfs tarball is cached as ``<repo>/.cache/sandbox/host-<tag>-<hash16>.tar``, so a
    rebuild after ``docker rmi`` only re-imports it (a few seconds instead of ~60 s).
    Needs network access to deb.debian.org only when the tarball is not cached.

    Args:
        console: optional ``rich.console.Console`` for progress lines.
        recipe: the image's recipe (default :data:`RECIPE`; :data:`RECIPE_NODPKG` for the
            host without dpkg).
        tag: the image tag (``ferry-sandbox-host:<name>``); its name part also names the
            cached rootfs tarball.

    Returns:
        The image tag, e.g. ``"ferry-sandbox-host:bookworm"``.

    Raises:
        FerryError: no Docker engine, no ``mmdebstrap``, the build or import failed.
    """
    ensure_engine()
    recipe = RECIPE if recipe is None else recipe
    digest = recipe_hash(recipe)
    if _image_recipe_label(tag) == digest:
        return tag
    with _lock("images"):           # parallel test workers: one builds, the others wait
        if _image_recipe_label(tag) == digest:
            return tag
        kind = tag.rsplit(":", 1)[-1]
        tarball = CACHE_DIR / f"host-{kind}-{_rootfs_hash(recipe)[:16]}.tar"
        if not tarball.exists():
            _say(console, f"building host image {tag} (mmdebstrap, ~60 s)...")
            started = time.monotonic()
            _mmdebstrap(tarball, console, recipe)
            _say(console, f"host rootfs built in {time.monotonic() - started:.0f} s")
            for old in CACHE_DIR.glob(f"host-{kind}-*.tar"):
                if old != tarball:
                    old.unlink(missing_ok=True)
        _say(console, f"importing {tarball.name} as {tag}...")
        changes: list[str] = []
        for change in [*recipe["import_changes"], f"LABEL {LABEL_RECIPE}={digest}"]:
            changes += ["--change", change]
        docker("image", "import", *changes, str(tarball), tag, timeout=600)
        if _image_recipe_label(tag) != digest:
            raise FerryError(f"docker import of {tarball} did not produce {tag} with the recipe label")
        return tag


def _prune_old_images() -> None:
    """Remove untagged, unused host images left behind by a rebuild (best effort)."""
    old = docker("images", "-q", "--filter", "dangling=true",
                 "--filter", f"label={LABEL_RECIPE}").stdout.decode().split()
    for image_id in dict.fromkeys(old):
        docker("image", "rm", image_id, check=False)


# ---------------------------------------------------------------------------- network

def _used_networks() -> list[ipaddress.IPv4Network]:
    """Subnets already in use: every Docker network's IPAM config and the host's routes."""
    used: list[ipaddress.IPv4Network] = []
    ids = docker("network", "ls", "-q").stdout.decode().split()
    for net in _inspect("network", *ids):
        for cfg in ((net.get("IPAM") or {}).get("Config") or []):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                n = ipaddress.ip_network(cfg["Subnet"], strict=False)
                if n.version == 4:
                    used.append(n)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            dest = socket.inet_ntoa(int(fields[1], 16).to_bytes(4, "little"))
            mask = socket.inet_ntoa(int(fields[7], 16).to_bytes(4, "little"))
            if dest == "0.0.0.0":
                continue  # the default route overlaps everything; ignore it
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    return used


def _ensure_network(console=None, name: str = NETWORK, hidden: bool = False) -> ipaddress.IPv4Network:
    """Create the internal network ``name`` (default ``ferry-sandbox``) if needed; return
    its subnet. ``hidden``: the controller gets no address on it either (Docker's
    ``inhibit_ipv4``), so it cannot reach its hosts at all."""
    found = _inspect("network", name)
    if found:
        net = found[0]
        configs = (net.get("IPAM") or {}).get("Config") or []
        if net.get("Internal") and configs:
            return ipaddress.ip_network(configs[0]["Subnet"], strict=False)
        if LABEL not in (net.get("Labels") or {}):
            raise FerryError(f"docker network {name} exists but is not Ferry's internal sandbox "
                             f"network; remove it (docker network rm {name})")
        docker("network", "rm", name)
    used = _used_networks()
    for candidate in SUBNET_CANDIDATES:
        subnet = ipaddress.ip_network(candidate)
        if any(subnet.overlaps(u) for u in used):
            continue
        _say(console, f"creating internal network {name} ({subnet})")
        made = docker("network", "create", "--driver", "bridge", "--internal",
                      "--subnet", str(subnet), "--gateway", str(subnet.network_address + 1),
                      *(["-o", "com.docker.network.bridge.inhibit_ipv4=true"] if hidden else []),
                      "--label", f"{LABEL}={NAME}", name, check=False)
        if made.returncode != 0 and b"overlaps" in made.stderr:
            continue        # another sandbox (a parallel test worker) took it meanwhile
        if made.returncode != 0:
            raise FerryError(f"docker network create {name} failed: {made.stderr.decode(errors='replace').strip()}")
        return subnet
    raise FerryError(f"no free subnet for the sandbox network among {', '.join(SUBNET_CANDIDATES)}")


# ---------------------------------------------------------------------------- containers

def _sandbox_containers() -> dict[int, dict]:
    """Existing sandbox containers (running or not) by index, as ``docker inspect`` dicts."""
    names = docker("ps", "-a", "--filter", f"label={LABEL}={NAME}", "--format", "{{.Names}}").stdout.decode().split()
    result: dict[int, dict] = {}
    for c in _inspect("container", *names):
        labels = (c.get("Config") or {}).get("Labels") or {}
        with contextlib.suppress(KeyError, ValueError):
            result[int(labels[LABEL_INDEX])] = c
    return result


def _container_ip(c: dict) -> str | None:
    nets = ((c.get("NetworkSettings") or {}).get("Networks") or {})
    ip = (nets.get(NETWORK) or {}).get("IPAddress")
    return ip or None


def _remove_host(i: int) -> None:
    """Remove container ``ferry-sandbox-<i>`` and its Docker volume, if they exist."""
    docker("rm", "-f", "-v", _container_name(i), check=False)
    docker("volume", "rm", "-f", _volume_name(i), check=False)


def _create_host(i: int, image: str, ip: str, host_keys: bytes | None = None) -> None:
    """Start a new container for host ``i`` (with a new, empty /var/lib/docker volume).

    ``host_keys``: a tar of ``/etc/ssh/ssh_host_*`` put in place before the first boot,
    so the host keeps the keys known_hosts has (else it generates its own)."""
    _remove_host(i)
    _start_container(_container_name(i), _host_name(i), _volume_name(i), ip, image,
                     {LABEL_INDEX: str(i)}, host_keys)


def _start_container(container: str, hostname: str, volume: str, ip: str, image: str,
                     labels: dict[str, str], host_keys: bytes | None = None, network: str = NETWORK) -> None:
    """Run a sandbox host container (systemd as PID 1) with a new, empty volume on
    /var/lib/docker, on ``network`` (default the sandbox network) at ``ip``, labelled
    ``LABEL=NAME`` + ``labels``; ``host_keys`` (a tar of ``ssh_host_*``) is put in
    ``/etc/ssh`` before it boots."""
    docker("volume", "create", "--label", f"{LABEL}={NAME}", volume)
    extra = [w for k, v in labels.items() for w in ("--label", f"{k}={v}")]
    docker(
        "create", "-t",
        "--name", container, "--hostname", hostname,
        "--network", network, "--ip", ip,
        "--label", f"{LABEL}={NAME}", *extra,
        "-e", "container=docker",
        "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--device-cgroup-rule", "a *:* rwm",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-v", f"{volume}:/var/lib/docker",
        "--stop-signal", "SIGRTMIN+3",
        image,
        timeout=120,
    )
    if host_keys:
        docker("cp", "-", f"{container}:/etc/ssh", input=host_keys, timeout=60)
    docker("start", container, timeout=120)


# ------------------------------------------------------- extra hosts: nodpkg, swarm

@dataclass(frozen=True)
class ExtraHosts:
    """A kind of sandbox host beside the numbered ones, counted apart (``up(nodpkg=N,
    swarm=M)``) and labelled ``label=<j>`` instead of an index, so ``count`` never
    removes them.

    Attributes:
        kind: ``nodpkg`` or ``swarm``: container ``<NAME>-<kind>-<j>``, host
            ``<prefix><j>``, inventory group ``<kind>``.
        label, offset, limit: container label, IP offset in the subnet, most hosts.
        note: said when a host is started.
    """

    kind: str
    prefix: str
    label: str
    offset: int
    limit: int
    note: str = ""

    def names(self, j: int) -> tuple[str, str, str]:
        """(container, hostname, volume) of the ``j``-th host."""
        return (f"{CONTAINER_PREFIX}{self.kind}-{j}", f"{self.prefix}{j}", f"{CONTAINER_PREFIX}{self.kind}-{j}-docker")

    def image(self, console=None) -> str:
        """The host image (built when missing or outdated)."""
        return build_host_image(console, RECIPE_NODPKG, NODPKG_TAG) if self.kind == "nodpkg" \
            else build_host_image(console)


NODPKG = ExtraHosts("nodpkg", NODPKG_PREFIX, LABEL_NODPKG, NODPKG_IP_OFFSET, NODPKG_MAX, "no dpkg")
SWARM = ExtraHosts("swarm", SWARM_PREFIX, LABEL_SWARM, SWARM_IP_OFFSET, SWARM_MAX, "swarm node")


def _extra_containers(kind: ExtraHosts) -> dict[int, dict]:
    """Existing hosts of ``kind`` (running or not) by number, as ``docker inspect`` dicts."""
    names = docker("ps", "-a", "--filter", f"label={LABEL}={NAME}", "--filter", f"label={kind.label}",
                   "--format", "{{.Names}}").stdout.decode().split()
    result: dict[int, dict] = {}
    for c in _inspect("container", *names):
        with contextlib.suppress(KeyError, ValueError):
            result[int(((c.get("Config") or {}).get("Labels") or {})[kind.label])] = c
    return result


def _ensure_extra(kind: ExtraHosts, n: int | None, base: int, console=None, fresh: bool = False) -> list[SandboxHost]:
    """Make hosts ``<prefix>1..n`` of ``kind`` exist and run; remove ones beyond ``n``
    (None: as many as there are; ``fresh``: all of them first, so they start with no
    Docker and an empty ``/var/lib/docker``). Reused when running from the current image
    at their address."""
    existing = _extra_containers(kind)
    if n is None:
        n = max(existing, default=0)
    if not 0 <= n <= kind.limit:
        raise FerryError(f"sandbox {kind.kind} hosts: between 0 and {kind.limit}, not {n}")
    for j, c in sorted(existing.items()):
        if j > n or fresh:
            container, _, volume = kind.names(j)
            _say(console, f"removing {container} ({kind.kind} is {n}{', fresh' if fresh else ''})")
            docker("rm", "-f", "-v", container, check=False)
            docker("volume", "rm", "-f", volume, check=False)
    if fresh:
        existing = {}
    if not n:
        return []
    image = kind.image(console)
    image_id = _image_id(image)
    hosts = []
    for j in range(1, n + 1):
        container, hostname, volume = kind.names(j)
        ip = str(ipaddress.ip_address(base + kind.offset + j))
        c = existing.get(j)
        if c is not None and c.get("Image") == image_id and _container_ip(c) == ip:
            if not (c.get("State") or {}).get("Running"):
                _say(console, f"starting {container}")
                docker("start", container)
            else:
                _say(console, f"reusing {container} ({ip})")
        else:
            _say(console, f"starting {container} ({ip}, {kind.note})")
            docker("rm", "-f", "-v", container, check=False)
            docker("volume", "rm", "-f", volume, check=False)
            _start_container(container, hostname, volume, ip, image, {kind.label: str(j)})
        hosts.append(SandboxHost(name=hostname, ip=ip, container=container))
    return hosts


def _running_extra(kind: ExtraHosts) -> list[SandboxHost]:
    """The hosts of ``kind`` that run now, by number."""
    out = []
    for j, c in sorted(_extra_containers(kind).items()):
        ip = _container_ip(c)
        if (c.get("State") or {}).get("Running") and ip:
            container, hostname, _ = kind.names(j)
            out.append(SandboxHost(name=hostname, ip=ip, container=container))
    return out


def _exec(container: str, *cmd: str, input: bytes | None = None, check: bool = True,
          timeout: float = 30) -> subprocess.CompletedProcess:
    args = ["exec"] + (["-i"] if input is not None else []) + [container, *cmd]
    return docker(*args, input=input, check=check, timeout=timeout)


# ---------------------------------------------------------------------------- keys

def _ensure_key(key_file: Path, pub_file: Path) -> str:
    """Load or create the controller's ed25519 key pair; return the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = None
    if key_file.exists():
        with contextlib.suppress(ValueError, TypeError):
            private = serialization.load_ssh_private_key(key_file.read_bytes(), password=None)
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            private = None
    if private is None:
        private = ed25519.Ed25519PrivateKey.generate()
        _write_file(key_file, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()), 0o600)
    else:
        os.chmod(key_file, 0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} ferry-sandbox\n"
    _write_file(pub_file, line.encode(), 0o644)
    return line


def _install_authorized_key(container: str, pub_line: str) -> None:
    # Constant remote script; the key itself travels on stdin.
    _exec(container, "sh", "-c",
          "umask 077 && mkdir -p /root/.ssh && chmod 0700 /root/.ssh && "
          "cat > /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys",
          input=pub_line.encode())


def _host_key_lines(host: SandboxHost) -> list[str]:
    """``<ip> <type> <base64>`` lines for the host's real host keys, read via docker exec."""
    lines = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        proc = _exec(host.container, "cat", f"/etc/ssh/ssh_host_{kind}_key.pub", check=False)
        if proc.returncode != 0:
            continue
        fields = proc.stdout.decode().split()
        if len(fields) >= 2:
            lines.append(f"{host.ip} {fields[0]} {fields[1]}")
    if not any(" ssh-ed25519 " in line for line in lines):
        raise FerryError(f"{host.name}: no SSH host key in /etc/ssh of {host.container}")
    return lines


# ---------------------------------------------------------------------------- readiness

def _wait_systemd(host: SandboxHost, deadline: float) -> str:
    """Wait until ``systemctl is-system-running`` says running/degraded; return it."""
    state = "unknown"
    while True:
        proc = _exec(host.container, "systemctl", "is-system-running", check=False, timeout=15)
        state = (proc.stdout or b"").decode().strip() or "no answer"
        if state in ("running", "degraded"):
            return state
        if proc.returncode != 0 and not proc.stdout:
            found = _inspect("container", host.container)
            if not found or not (found[0].get("State") or {}).get("Running"):
                logs = docker("logs", "--tail", "5", host.container, check=False)
                text = re.sub(r"\x1b\[[0-9;]*m", "", (logs.stdout + logs.stderr).decode(errors="replace"))
                tail = " | ".join(text.split("\n")[-6:])
                raise FerryError(f"{host.name}: container {host.container} is not running "
                                 f"(last output: {tail.strip(' |') or 'none'})")
        if time.monotonic() > deadline:
            failed = _exec(host.container, "systemctl", "--failed", "--plain", "--no-legend",
                           check=False).stdout.decode().split("\n")
            units = ", ".join(line.split()[0] for line in failed if line.strip()) or "none"
            raise FerryError(f"{host.name}: systemd not ready within {READY_TIMEOUT:.0f}s "
                             f"(is-system-running: {state}; failed units: {units})")
        time.sleep(0.5)


def _wait_ssh(host: SandboxHost, key_file: Path, known_hosts: Path, deadline: float, user: str = "root",
              port: int = 22) -> None:
    """Wait until a real SSH login as ``user`` works (key auth, host key checked strictly)."""
    import paramiko

    last = "no attempt"
    while True:
        client = paramiko.SSHClient()
        client.load_system_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host.ip, port=port, username=user, key_filename=str(key_file),
                           look_for_keys=False, allow_agent=False, timeout=5,
                           banner_timeout=5, auth_timeout=5)
            _, stdout, _ = client.exec_command("true", timeout=10)
            if stdout.channel.recv_exit_status() == 0:
                return
            last = "'true' failed"
        except paramiko.BadHostKeyException as exc:
            raise FerryError(f"{host.name}: host key at {host.ip} does not match {known_hosts}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        if time.monotonic() > deadline:
            raise FerryError(f"{host.name}: no SSH login as {user} at {host.ip}:{port} within "
                             f"{READY_TIMEOUT:.0f}s ({last})")
        time.sleep(0.5)


# ---------------------------------------------------------------------------- inventory

def _inventory_text(hosts: list[SandboxHost], key_file: Path, known_hosts: Path,
                    nodpkg: list[SandboxHost] | None = None, swarm: list[SandboxHost] | None = None) -> str:
    def block(group: list[SandboxHost]) -> str:
        if not group:
            return "      hosts: {}\n"
        rows = "".join(f"        {h.name}: {{ansible_host: {h.ip}, ansible_port: 22}}\n" for h in group)
        return "      hosts:\n" + rows

    return (
        "# Generated by devkit.sandbox.up(); rewritten on every `up`. Paths are relative\n"
        "# to this file's directory.\n"
        "all:\n"
        "  vars:\n"
        "    ansible_user: root\n"
        f"    ansible_ssh_private_key_file: {key_file.name}\n"
        f"    ferry_known_hosts: {known_hosts.name}\n"
        "  children:\n"
        "    prod:\n"
        + block(hosts[:1])
        + "    staging:\n"
        + block(hosts[1:])
        + (_nodpkg_group(nodpkg) if nodpkg else "")
        + (_swarm_group(swarm) if swarm else "")
    )


def _nodpkg_group(hosts: list[SandboxHost]) -> str:
    """The inventory group ``nodpkg``: hosts whose os-release is not Debian and that have
    no dpkg (their Docker can only be the static engine)."""
    rows = "".join(f"        {h.name}: {{ansible_host: {h.ip}, ansible_port: 22}}\n" for h in hosts)
    return "    nodpkg:\n      hosts:\n" + rows


def _swarm_group(hosts: list[SandboxHost]) -> str:
    """The inventory group ``swarm`` (``ferry_engine: swarm``): the first host carries the
    label the llm-chat-swarm stack pins its data service to."""
    rows = "".join(f"        {h.name}: {{ansible_host: {h.ip}, ansible_port: 22"
                   + (", swarm_labels: {llm-chat-data: \"true\"}" if i == 0 else "") + "}\n"
                   for i, h in enumerate(hosts))
    return "    swarm:\n      vars:\n        ferry_engine: swarm\n      hosts:\n" + rows


# ---------------------------------------------------------------------------- the world

@dataclass(frozen=True)
class WorldHost:
    """One host of the world topology (:data:`WORLD`).

    Attributes:
        role: ``sudo``, ``sudopw``, ``bastion`` or ``inner``; the inventory group is
            ``world_<role>``.
        name: inventory name and hostname (``world-sudo``...).
        n: its address is ``<subnet base> + WORLD_IP_OFFSET + n`` on each of its networks.
        networks: ``main`` (the sandbox network, reachable from the controller) and/or
            ``inner`` (:data:`INNER_NETWORK`); the first one's address is the inventory's.
        login: the only user that may log in with the sandbox key.
        sudo: ``NOPASSWD``, ``password`` (sudo asks for the login user's password) or
            ``""`` (no sudo rule).
        sshd: sshd settings that override the image's (``PermitRootLogin no``...).
        port: the port sshd listens on (the bastion's is not 22, as bastions often are).
    """

    role: str
    name: str
    n: int
    networks: tuple[str, ...]
    login: str
    sudo: str
    sshd: str
    port: int = 22


#: Servers as they are: personal logins with sudo, a bastion in front of a network the
#: controller cannot reach.
WORLD = (
    WorldHost("sudo", "world-sudo", 1, ("main",), "deploy", "NOPASSWD", "PermitRootLogin no\n"),
    WorldHost("sudopw", "world-sudopw", 2, ("main",), "deploy", "password",
              "PermitRootLogin no\nPasswordAuthentication yes\n"),
    WorldHost("bastion", "world-bastion", 3, ("main", "inner"), "jump", "",
              "Port 2222\nPermitRootLogin no\nAllowTcpForwarding yes\n", port=2222),
    WorldHost("inner", "world-inner", 4, ("inner",), "root", "", ""),
)

# Constant scripts; every value travels as an argument ($1, $2) or on stdin.
_WORLD_LOGIN = ('id -u "$1" >/dev/null 2>&1 || useradd -m -s /bin/bash "$1"; '
                'h=$(getent passwd "$1" | cut -d: -f6); install -d -m 700 -o "$1" -g "$1" "$h/.ssh"; '
                'cat > "$h/.ssh/authorized_keys"; chown "$1:" "$h/.ssh/authorized_keys"; '
                'chmod 600 "$h/.ssh/authorized_keys"')
_WORLD_SUDOERS = ('printf "%s ALL=(ALL:ALL) %sALL\\n" "$1" "$2" > /etc/sudoers.d/ferry-world && '
                  'chmod 0440 /etc/sudoers.d/ferry-world && visudo -cqf /etc/sudoers.d/ferry-world')
_WORLD_SSHD = ('cat > /etc/ssh/sshd_config.d/00-ferry-world.conf && sshd -t && '
               'systemctl reload-or-restart ssh.service')


def _world_container(w: WorldHost) -> str:
    return f"{CONTAINER_PREFIX}world-{w.role}"


def _controller_deb(package: str, console=None) -> Path:
    """Debian's ``package`` (.deb), downloaded once with ``apt-get download`` into
    ``<cache>/sandbox/debs/`` (the controller is Debian 12, like the hosts)."""
    folder = CACHE_DIR / "debs"
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        found = sorted(folder.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
        _say(console, f"apt-get download {package}")
        proc = subprocess.run(["apt-get", "download", package], cwd=folder, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=600)
        if proc.returncode != 0 and attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    raise FerryError(f"apt-get download {package} failed on the controller: "
                     f"{proc.stderr.decode(errors='replace').strip()[-200:]}")


def build_world_image(console=None) -> str:
    """The world hosts' image (:data:`WORLD_TAG`): the host image plus sudo, committed
    from a container that ran ``dpkg -i`` (no builder, no network). Rebuilt when the host
    image changes. Returns the tag.

    Raises:
        FerryError: the host image cannot be built, sudo cannot be downloaded or installed.
    """
    base = build_host_image(console)
    base_id = _image_id(base)
    with _lock("images"):           # parallel test workers: one builds, the others wait
        found = _inspect("image", WORLD_TAG)
        if found and ((found[0].get("Config") or {}).get("Labels") or {}).get(LABEL_WORLD_BASE) == base_id:
            return WORLD_TAG
        deb = _controller_deb("sudo", console)
        builder = f"{CONTAINER_PREFIX}world-build"
        _say(console, f"building {WORLD_TAG} (host image + {deb.name})")
        docker("rm", "-f", builder, check=False)
        try:
            docker("run", "--name", builder, "--network", "none", "-v", f"{deb.parent}:/debs:ro", base,
                   "dpkg", "-i", f"/debs/{deb.name}", timeout=300)
            docker("commit", "--change", 'CMD ["/sbin/init"]', "--change", f"LABEL {LABEL_WORLD_BASE}={base_id}",
                   builder, WORLD_TAG)
        finally:
            docker("rm", "-f", builder, check=False)
        return WORLD_TAG


def _world_containers() -> dict[str, dict]:
    """Existing world containers (running or not) by role, as ``docker inspect`` dicts."""
    names = docker("ps", "-a", "--filter", f"label={LABEL}={NAME}", "--filter", f"label={LABEL_WORLD}",
                   "--format", "{{.Names}}").stdout.decode().split()
    return {((c.get("Config") or {}).get("Labels") or {}).get(LABEL_WORLD, ""): c for c in _inspect("container", *names)}


def _world_ip(subnet: ipaddress.IPv4Network, w: WorldHost) -> str:
    return str(ipaddress.ip_address(int(subnet.network_address) + WORLD_IP_OFFSET + w.n))


def _ensure_world(subnet: ipaddress.IPv4Network, console=None) -> list[tuple[WorldHost, SandboxHost]]:
    """Start (or reuse) the world hosts; return each with its :class:`SandboxHost`."""
    image = build_world_image(console)
    image_id = _image_id(image)
    inner = _ensure_network(console, INNER_NETWORK, hidden=True)
    nets = {"main": (NETWORK, subnet), "inner": (INNER_NETWORK, inner)}
    existing = _world_containers()
    out = []
    for w in WORLD:
        ips = {net: _world_ip(nets[net][1], w) for net in w.networks}
        container = _world_container(w)
        c = existing.get(w.role)
        attached = ((c or {}).get("NetworkSettings") or {}).get("Networks") or {}
        if c is not None and c.get("Image") == image_id and \
                all((attached.get(nets[n][0]) or {}).get("IPAddress") == ip for n, ip in ips.items()):
            if not (c.get("State") or {}).get("Running"):
                _say(console, f"starting {container}")
                docker("start", container)
        else:
            _say(console, f"starting {container} ({', '.join(ips.values())})")
            docker("rm", "-f", "-v", container, check=False)
            docker("volume", "rm", "-f", f"{container}-docker", check=False)
            first, *more = w.networks
            _start_container(container, w.name, f"{container}-docker", ips[first], image, {LABEL_WORLD: w.role},
                             network=nets[first][0])
            for net in more:
                docker("network", "connect", "--ip", ips[net], nets[net][0], container)
        out.append((w, SandboxHost(name=w.name, ip=ips[w.networks[0]], container=container)))
    return out


def _configure_world(w: WorldHost, host: SandboxHost, pub_line: str, password: str) -> None:
    """Users, keys, sudo rule and sshd settings of one world host (idempotent)."""
    _exec(host.container, "sh", "-c", _WORLD_LOGIN, "sh", w.login, input=pub_line.encode())
    if w.login != "root":
        _exec(host.container, "sh", "-c", "umask 077; : > /root/.ssh/authorized_keys")   # root: no key login
    if w.sudo:
        _exec(host.container, "sh", "-c", _WORLD_SUDOERS, "sh", w.login,
              "NOPASSWD: " if w.sudo == "NOPASSWD" else "")
        _exec(host.container, "chpasswd", input=f"{w.login}:{password}\n".encode())
    if w.sshd:
        _exec(host.container, "sh", "-c", _WORLD_SSHD, input=w.sshd.encode())


def _world_password(state_dir: Path) -> tuple[Path, str]:
    """``deploy``'s password on the world hosts, made once and kept in the state dir (0600)."""
    import secrets
    path = state_dir / WORLD_PASSWORD_NAME
    if not path.exists():
        _write_file(path, (secrets.token_urlsafe(12) + "\n").encode(), 0o600)
    return path, path.read_text().strip()


def _wait_world(world: list[tuple[WorldHost, SandboxHost]], key_file: Path, known_hosts: Path,
                deadline: float) -> None:
    """Wait until each world host takes its login (the inner host: until its sshd runs;
    the controller cannot reach it)."""
    for w, host in world:
        if "main" in w.networks:
            _wait_ssh(host, key_file, known_hosts, deadline, user=w.login, port=w.port)
            continue
        while _exec(host.container, "systemctl", "is-active", "ssh.service", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise FerryError(f"{host.name}: sshd not active within {READY_TIMEOUT:.0f}s")
            time.sleep(0.5)


def remove_world(console=None) -> None:
    """Remove the world containers and the inner network (:func:`down` does; the e2e
    fixture does, to start from fresh world hosts)."""
    found = _world_containers()
    if found:
        _say(console, f"removing {', '.join(sorted(c['Name'].lstrip('/') for c in found.values()))}")
        docker("rm", "-f", "-v", *(c["Name"].lstrip("/") for c in found.values()), timeout=120)
    if _inspect("network", INNER_NETWORK):
        _say(console, f"removing network {INNER_NETWORK}")
        docker("network", "rm", INNER_NETWORK)


def _remove_world_files(state_dir: Path) -> None:
    (state_dir / WORLD_PASSWORD_NAME).unlink(missing_ok=True)
    for w in WORLD:
        (state_dir / "host_vars" / f"{w.name}.yml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (state_dir / "host_vars").rmdir()


def _world_inventory_text(world: list[tuple[WorldHost, SandboxHost]]) -> str:
    """The world groups of the sandbox inventory (values written as JSON: YAML flow
    mappings). The inner host is reached with ``-o ProxyJump=jump@<bastion>:2222``."""
    bastion = next(((w, h) for w, h in world if w.role == "bastion"), None)
    text = ""
    for w, host in world:
        hv: dict = {"ansible_host": host.ip}
        if w.login != "root":
            hv["ansible_user"] = w.login
        if w.sudo:
            hv["ansible_become"] = True
        if w.port != 22:
            hv["ansible_port"] = w.port
        if w.role == "inner" and bastion is not None:
            hv["ansible_ssh_common_args"] = f"-o ProxyJump={bastion[0].login}@{bastion[1].ip}:{bastion[0].port}"
        text += f"    world_{w.role}:\n      hosts:\n        {w.name}: {json.dumps(hv)}\n"
    return text


def _world_host_vars(state_dir: Path, password: str) -> None:
    """``host_vars/world-sudopw.yml`` (0600): the sudo password, as Ansible keeps secrets."""
    folder = state_dir / "host_vars"
    folder.mkdir(exist_ok=True)
    for w in WORLD:
        if w.sudo == "password":
            _write_file(folder / f"{w.name}.yml", f"ansible_become_password: {json.dumps(password)}\n".encode(), 0o600)


# ---------------------------------------------------------------------------- public API

def up(count: int = 3, state_dir: Path = DEFAULT_STATE_DIR, fresh: bool = False,
       console=None, nodpkg: int | None = None, world: bool = False, swarm: int | None = None,
       fresh_swarm: bool = False) -> Sandbox:
    """Bring up ``count`` sandbox hosts and write the files to reach them.

    Idempotent: containers ``ferry-sandbox-1..count`` that already run from the current
    host image are reused (host keys, IPs and anything installed on them are kept);
    stopped ones are started; missing ones, or ones from an outdated image, are created
    (again) with a fresh ``/var/lib/docker`` volume; sandbox containers with a higher
    index are removed. The
    key pair in ``state_dir`` is reused when present, installed as root's only
    ``authorized_keys`` entry on every host, and ``known_hosts`` / ``inventory.yml`` are
    rewritten from the live hosts. Returns only when every host's systemd is ``running``
    (or ``degraded``) and a real SSH login as root works with strict host key checking.

    Args:
        count: number of hosts, >= 1. Host 1 is group ``prod``, hosts 2..count ``staging``.
        state_dir: directory for ``id_ed25519`` (+ ``.pub``), ``known_hosts``,
            ``inventory.yml``; created if missing.
        fresh: first tear everything down (:func:`down`: containers, their Docker volumes,
            network, state files), so hosts start with no Docker and an empty
            ``/var/lib/docker``.
        console: optional ``rich.console.Console`` for progress lines.
        world: also start the hosts that look like the world (:data:`WORLD`: ``deploy``
            with sudo NOPASSWD, ``deploy`` whose sudo wants a password, a bastion, and a
            host behind it on :data:`INNER_NETWORK`), groups ``world_<role>`` in the
            inventory. Once started they are kept (and listed) by later calls too.
        nodpkg: number of hosts without dpkg (``nodpkg-1..N``, group ``nodpkg``, image
            :data:`RECIPE_NODPKG`: os-release says Rocky Linux, no dpkg/apt), 0 to 9;
            reused like the others, ones beyond N removed; None (the default): as many
            as there are already.
        swarm: number of swarm hosts (``swarm-1..N``, group ``swarm`` with
            ``ferry_engine: swarm``; the host image), 0 to 9; reused like the others, ones
            beyond N removed; None (the default): as many as there are already.
        fresh_swarm: recreate the swarm hosts (no Docker, empty ``/var/lib/docker``)
            without touching the others.

    Returns:
        The :class:`Sandbox`.

    Raises:
        FerryError: ``count`` < 1 or > 200, ``nodpkg`` out of 0..9, no Docker engine,
            image build failed, no free subnet, or a host not booted / not accepting SSH
            within ~60 s.
    """
    if not 1 <= count <= 200:
        raise FerryError(f"sandbox host count must be between 1 and 200, not {count}")
    ensure_engine()
    state_dir = Path(state_dir)
    if fresh:
        down(state_dir, console=console)
    with _lock():
        image = build_host_image(console)
        image_id = _image_id(image)
        subnet = _ensure_network(console)
        base = int(subnet.network_address)
        existing = _sandbox_containers()

        for i in sorted(existing):
            if i > count:
                _say(console, f"removing {_container_name(i)} (count is {count})")
                _remove_host(i)

        hosts: list[SandboxHost] = []
        for i in range(1, count + 1):
            ip = str(ipaddress.ip_address(base + HOST_IP_OFFSET + i))
            if ipaddress.ip_address(ip) not in subnet:
                raise FerryError(f"subnet {subnet} of network {NETWORK} has no room for {count} hosts")
            c = existing.get(i)
            if c is not None and c.get("Image") == image_id and _container_ip(c) == ip:
                if not (c.get("State") or {}).get("Running"):
                    _say(console, f"starting {_container_name(i)}")
                    docker("start", _container_name(i))
                else:
                    _say(console, f"reusing {_container_name(i)} ({ip})")
            else:
                _say(console, f"starting {_container_name(i)} ({ip})")
                _create_host(i, image, ip)
            hosts.append(SandboxHost(name=_host_name(i), ip=ip, container=_container_name(i)))
        extra = _ensure_extra(NODPKG, nodpkg, base, console)
        cluster = _ensure_extra(SWARM, swarm, base, console, fresh=fresh_swarm)
        world_hosts = _ensure_world(subnet, console) if world or _world_containers() else []
        _prune_old_images()

        state_dir.mkdir(parents=True, exist_ok=True)
        key_file, pub_file, known_hosts, inventory = _paths(state_dir)
        pub_line = _ensure_key(key_file, pub_file)

        deadline = time.monotonic() + READY_TIMEOUT
        lines: list[str] = []
        for host in hosts + extra + cluster:
            state = _wait_systemd(host, deadline)
            if state != "running":
                _say(console, f"{host.name}: systemd is {state}")
            _install_authorized_key(host.container, pub_line)
            lines += _host_key_lines(host)
        password_file, password = _world_password(state_dir) if world_hosts else (None, "")
        for w, host in world_hosts:
            _wait_systemd(host, deadline)
            _configure_world(w, host, pub_line, password)
            lines += [line if w.port == 22 else f"[{host.ip}]:{w.port} {line.split(' ', 1)[1]}"
                      for line in _host_key_lines(host)]
        _write_file(known_hosts, ("\n".join(lines) + "\n").encode())
        for host in hosts + extra + cluster:
            _wait_ssh(host, key_file, known_hosts, deadline)
        _wait_world(world_hosts, key_file, known_hosts, deadline)
        text = _inventory_text(hosts, key_file, known_hosts, extra, cluster)
        if world_hosts:
            _world_host_vars(state_dir, password)
            text += _world_inventory_text(world_hosts)
        _write_file(inventory, text.encode())
        every = hosts + extra + cluster + [h for _, h in world_hosts]
        _say(console, f"sandbox up: {', '.join(f'{h.name}={h.ip}' for h in every)}; inventory {inventory}")
        return Sandbox(state_dir=state_dir, hosts=hosts, key_file=key_file, known_hosts=known_hosts,
                       inventory=inventory, nodpkg=extra, swarm=cluster, world=[h for _, h in world_hosts],
                       become_password=password_file)


def down(state_dir: Path = DEFAULT_STATE_DIR, console=None) -> None:
    """Remove the sandbox: containers, their Docker volumes, the network, state files.

    Removes every container and volume labelled ``devkit.sandbox`` (any index, and the
    hosts without dpkg, and the world hosts), the ``ferry-sandbox`` networks, and
    ``id_ed25519``, ``id_ed25519.pub``, ``known_hosts``, ``inventory.yml`` (and the world's
    password and host_vars) in ``state_dir`` (the directory too, when left empty). The host
    image and the cached rootfs are kept. A no-op when nothing exists.

    Args:
        state_dir: the state directory used with :func:`up`.
        console: optional ``rich.console.Console`` for progress lines.

    Raises:
        FerryError: no Docker engine, or docker refused to remove something.
    """
    ensure_engine()
    with _lock():
        existing = [*_sandbox_containers().values(), *_extra_containers(NODPKG).values(),
                    *_extra_containers(SWARM).values()]
        if existing:
            names = [c["Name"].lstrip("/") for c in existing]
            _say(console, f"removing {', '.join(names)}")
            docker("rm", "-f", "-v", *names, timeout=120)
        remove_world(console)
        volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL}={NAME}").stdout.decode().split()
        if volumes:
            docker("volume", "rm", "-f", *volumes)
        net = _inspect("network", NETWORK)
        if net:
            # containers still attached (e.g. made by an older Ferry with other labels)
            attached = [c.get("Name") for c in (net[0].get("Containers") or {}).values()
                        if str(c.get("Name", "")).startswith(CONTAINER_PREFIX)]
            if attached:
                docker("rm", "-f", "-v", *attached, timeout=120)
            _say(console, f"removing network {NETWORK}")
            docker("network", "rm", NETWORK)
    state_dir = Path(state_dir)
    for path in _paths(state_dir):
        path.unlink(missing_ok=True)
    _remove_world_files(state_dir)
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def status(state_dir: Path = DEFAULT_STATE_DIR) -> Sandbox | None:
    """Describe the sandbox as it is now, without changing anything.

    Args:
        state_dir: the state directory used with :func:`up`.

    Returns:
        A :class:`Sandbox` for the running sandbox containers (index order) when at least
        one runs on the sandbox network and ``state_dir`` holds the key, known_hosts and
        inventory files; ``None`` otherwise (nothing up, hosts stopped, or state files
        missing - run :func:`up`). Hosts are not probed over SSH.

    Raises:
        FerryError: the docker CLI is missing.
    """
    from ferry.controller.localdocker import engine_running

    if not engine_running():
        return None
    state_dir = Path(state_dir)
    key_file, _pub, known_hosts, inventory = _paths(state_dir)
    if not (key_file.exists() and known_hosts.exists() and inventory.exists()):
        return None
    hosts = []
    for i, c in sorted(_sandbox_containers().items()):
        ip = _container_ip(c)
        if (c.get("State") or {}).get("Running") and ip:
            hosts.append(SandboxHost(name=_host_name(i), ip=ip, container=_container_name(i)))
        _prune_old_images()
    if not hosts:
        return None
    world = []
    found = _world_containers()
    for w in WORLD:
        c = found.get(w.role)
        nets = ((c or {}).get("NetworkSettings") or {}).get("Networks") or {}
        ip = (nets.get(NETWORK if w.networks[0] == "main" else INNER_NETWORK) or {}).get("IPAddress")
        if c is not None and (c.get("State") or {}).get("Running") and ip:
            world.append(SandboxHost(name=w.name, ip=ip, container=_world_container(w)))
    password = state_dir / WORLD_PASSWORD_NAME
    return Sandbox(state_dir=state_dir, hosts=hosts, key_file=key_file, known_hosts=known_hosts,
                   inventory=inventory, nodpkg=_running_extra(NODPKG), swarm=_running_extra(SWARM), world=world,
                   become_password=password if password.exists() else None)


# ---------------------------------------------------------------------------- known states

#: What :func:`reset_host` runs on a host (as root, through ``docker exec``): every
#: container, network and volume goes (Docker itself and its images stay), and every file
#: Ferry or a test put on it: ``/opt/ferry``, backups, Ferry's cron entries and logs.
RESET_SCRIPT = r"""
set -u
rm -f /etc/cron.d/ferry-* /run/lock/ferry-*
if command -v docker >/dev/null 2>&1; then
  systemctl start docker >/dev/null 2>&1 || true
  ids=$(docker ps -aq) && [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
  docker network prune -f >/dev/null
  docker volume prune -f >/dev/null
fi
rm -rf /opt/ferry /var/backups/ferry /var/log/ferry
test ! -e /opt/ferry
"""


def _host_index(name: str) -> int:
    if not name.startswith(HOST_PREFIX) or not name[len(HOST_PREFIX):].isdigit():
        raise FerryError(f"{name!r} is not a sandbox host name (sandbox-N)")
    return int(name[len(HOST_PREFIX):])


def reset_host(name: str) -> None:
    """Put a running sandbox host in the *clean* state, in seconds: no container,
    network or volume, no Ferry file (``/opt/ferry``, backups, cron entries, logs). Docker
    stays installed if it was, with its images (a test must not assume which images a
    clean host has; one that needs no Docker asks for :func:`recreate_host`).

    Raises:
        FerryError: no such host, or the reset failed (its output).
    """
    container = _container_name(_host_index(name))
    proc = _exec(container, "sh", "-c", RESET_SCRIPT, check=False, timeout=300)
    if proc.returncode != 0:
        raise FerryError(f"{name}: reset failed: {(proc.stdout + proc.stderr).decode(errors='replace').strip()[-300:]}")


QUIESCE_SCRIPT = r"""
set -u
rm -f /etc/cron.d/ferry-*
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker swarm leave --force >/dev/null 2>&1 || true
  ids=$(docker ps -q) && [ -z "$ids" ] || docker rm -f $ids >/dev/null
fi
true
"""


def quiesce_extra_hosts() -> list[str]:
    """Stop what runs on the sandbox's extra hosts (world, no-dpkg and swarm hosts): their
    containers are removed, a swarm node leaves its swarm, Ferry's cron entries go; Docker,
    images and files stay. For test suites: a stack left running on a host nobody uses
    any more costs the machine CPU (its healthchecks) until the run ends. Returns the
    hosts' container names.

    Raises:
        FerryError: a host's engine did not answer (its output).
    """
    extra = [h.container for kind in (NODPKG, SWARM) for h in _running_extra(kind)] + \
        [c["Name"].lstrip("/") for c in _world_containers().values() if (c.get("State") or {}).get("Running")]

    def one(container: str) -> None:
        proc = _exec(container, "sh", "-c", QUIESCE_SCRIPT, check=False, timeout=120)
        if proc.returncode != 0:
            raise FerryError(f"{container}: quiesce failed: "
                             f"{(proc.stdout + proc.stderr).decode(errors='replace').strip()[-300:]}")
    with ThreadPoolExecutor(max_workers=max(1, len(extra))) as pool:
        list(pool.map(one, extra))
    return extra


def recreate_host(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Put a sandbox host in the *fresh* state: a new container from the host image
    with a new, empty ``/var/lib/docker`` (no Docker installed, nothing of Ferry's), at
    the same address and with the same SSH host keys, so ``known_hosts`` and the
    inventory stay valid. Returns when root can log in over SSH (about 10 s).

    Raises:
        FerryError: no such host, or it did not come back.
    """
    i = _host_index(name)
    container = _container_name(i)
    key_file, _pub, known_hosts, _inv = _paths(Path(state_dir))
    with _lock():
        found = _inspect("container", container)
        if not found:
            raise FerryError(f"{name}: no sandbox container {container} (run up first)")
        ip = _container_ip(found[0])
        keys = _exec(container, "sh", "-c", "cd /etc/ssh && tar -cf - ssh_host_*").stdout
        _create_host(i, found[0]["Config"]["Image"], ip, keys)
        host = SandboxHost(name=name, ip=ip, container=container)
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_systemd(host, deadline)
        _install_authorized_key(container, key_file.with_name(KEY_NAME + ".pub").read_text())
        _wait_ssh(host, key_file, known_hosts, deadline)


def wire_bytes(container: str) -> tuple[int, int]:
    """``(received, sent)`` bytes of a sandbox host's network interface (``eth0``, the
    sandbox network: everything the controller sends it, SSH framing included), read
    with ``docker exec`` so that reading them adds no traffic."""
    out = docker("exec", container, "cat", "/sys/class/net/eth0/statistics/rx_bytes",
                 "/sys/class/net/eth0/statistics/tx_bytes").stdout.decode().split()
    return int(out[0]), int(out[1])


def install_debs(container: str, packages: list[str], console=None) -> list[str]:
    """Install Debian ``packages`` on a sandbox host that has no network: the controller
    downloads them and their direct dependencies (``apt-get download``, cached under
    ``<cache>/sandbox/debs``), ``docker cp`` carries the ones the host lacks, and
    ``dpkg -i`` installs them (what a benchmark comparator such as rsync needs).

    Returns:
        The packages installed (empty when all were there).

    Raises:
        FerryError: a package cannot be downloaded, or dpkg refused.
    """
    import subprocess
    wanted: list[str] = []
    for pkg in packages:
        deps = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                               "--no-breaks", "--no-replaces", "--no-enhances", pkg],
                              capture_output=True, text=True).stdout
        names = [l.split(":", 1)[1].strip() for l in deps.splitlines()
                 if l.strip().startswith(("Depends:", "PreDepends:")) and "<" not in l]
        wanted += [n for n in [pkg, *names] if n not in wanted]
    status = docker("exec", container, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *wanted,
                    check=False).stdout.decode()
    have = {l.split()[0] for l in status.splitlines() if len(l.split()) > 1 and l.split()[1].startswith("ii")}
    missing = [n for n in wanted if n not in have]
    if not missing:
        return []
    debs = CACHE_DIR / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True)
    if got.returncode != 0:
        raise FerryError(f"apt-get download {' '.join(missing)}: {got.stderr.strip().splitlines()[-1:]}")
    files = [sorted(debs.glob(f"{n}_*.deb"))[-1] for n in missing]
    docker("exec", container, "mkdir", "-p", "/tmp/ferry-debs")
    for f in files:
        docker("cp", str(f), f"{container}:/tmp/ferry-debs/{f.name}")
    docker("exec", container, "sh", "-c", "dpkg -i /tmp/ferry-debs/*.deb >/dev/null && rm -rf /tmp/ferry-debs")
    _say(console, f"{container}: installed {', '.join(missing)}")
    return missing


def cpu_seconds(container: str) -> float | None:
    """CPU time (user + system, seconds) every process of a sandbox host has used so far,
    from its cgroup on this machine (cgroup v1 ``cpuacct.usage`` or v2 ``cpu.stat``);
    None where neither is found. For benchmarks: CPU is what a busy 2-core machine
    shares, and it is far steadier than wall time there."""
    cid = docker("inspect", "--format", "{{.Id}}", container).stdout.decode().strip()
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
    if v1.is_file():
        return int(v1.read_text()) / 1e9
    for v2 in (Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"),
               Path(f"/sys/fs/cgroup/docker/{cid}/cpu.stat")):
        if v2.is_file():
            for line in v2.read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
    return None
