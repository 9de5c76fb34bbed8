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

#: Seconds ``up`` waits for all hosts to boot and accept an SSH login.
READY_TIMEOUT = 60.0

#: Candidate subnets for the sandbox network, tried in order. All are in 10/8 so they
#: stay clear of Docker's default address pools (172.17-31/16, 192.168/16), which a
#: Docker engine *inside* a host will use for its own networks.
SUBNET_CANDIDATES = [f"10.{a}.{b}.0/24" for a in (213, 214, 215, 231, 232) for b in (0, 7, 42)]

#: First host gets ``<subnet base> + HOST_IP_OFFSET + 1`` (e.g. 10.213.0.11).
HOST_IP_OFFSET = 10

#: Hosts without dpkg (``up(nodpkg=N)``): ``nodpkg-1..N`` at ``<subnet base> +
#: NODPKG_IP_OFFSET + j`` (10.213.0.231...), containers ``<NAME>-nodpkg-<j>``, labelled
#: ``LABEL_NODPKG=<j>`` instead of an index (so ``count`` never removes them).
NODPKG_IP_OFFSET = 230
NODPKG_MAX = 9
NODPKG_PREFIX = "nodpkg-"
LABEL_NODPKG = "ferry.sandbox.nodpkg"

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
            ``nodpkg`` = the hosts without dpkg); paths in it are relative to its own
            directory.
        nodpkg: the hosts without dpkg (``nodpkg-1``...; see :data:`RECIPE_NODPKG`).
    """

    state_dir: Path
    hosts: list[SandboxHost]
    key_file: Path
    known_hosts: Path
    inventory: Path
    nodpkg: list[SandboxHost] = field(default_factory=list)


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
def _lock():
    """Serialise sandbox changes on this machine (names are global to the engine)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{NAME}.lock", "w") as fh:
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


def _ensure_network(console=None) -> ipaddress.IPv4Network:
    """Create the internal ``ferry-sandbox`` network if needed; return its subnet."""
    found = _inspect("network", NETWORK)
    if found:
        net = found[0]
        configs = (net.get("IPAM") or {}).get("Config") or []
        if net.get("Internal") and configs:
            return ipaddress.ip_network(configs[0]["Subnet"], strict=False)
        if LABEL not in (net.get("Labels") or {}):
            raise FerryError(f"docker network {NETWORK} exists but is not Ferry's internal sandbox "
                             f"network; remove it (docker network rm {NETWORK})")
        docker("network", "rm", NETWORK)
    used = _used_networks()
    for candidate in SUBNET_CANDIDATES:
        subnet = ipaddress.ip_network(candidate)
        if any(subnet.overlaps(u) for u in used):
            continue
        _say(console, f"creating internal network {NETWORK} ({subnet})")
        docker("network", "create", "--driver", "bridge", "--internal",
               "--subnet", str(subnet), "--gateway", str(subnet.network_address + 1),
               "--label", f"{LABEL}={NAME}", NETWORK)
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
                     labels: dict[str, str], host_keys: bytes | None = None) -> None:
    """Run a sandbox host container (systemd as PID 1) with a new, empty volume on
    /var/lib/docker, on the sandbox network at ``ip``, labelled ``LABEL=NAME`` + ``labels``;
    ``host_keys`` (a tar of ``ssh_host_*``) is put in ``/etc/ssh`` before it boots."""
    docker("volume", "create", "--label", f"{LABEL}={NAME}", volume)
    extra = [w for k, v in labels.items() for w in ("--label", f"{k}={v}")]
    docker(
        "create", "-t",
        "--name", container, "--hostname", hostname,
        "--network", NETWORK, "--ip", ip,
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


# ---------------------------------------------------------------------------- nodpkg hosts

def _nodpkg_names(j: int) -> tuple[str, str, str]:
    """(container, hostname, volume) of the ``j``-th host without dpkg."""
    return f"{CONTAINER_PREFIX}nodpkg-{j}", f"{NODPKG_PREFIX}{j}", f"{CONTAINER_PREFIX}nodpkg-{j}-docker"


def _nodpkg_containers() -> dict[int, dict]:
    """Existing hosts without dpkg (running or not) by number, as ``docker inspect`` dicts."""
    names = docker("ps", "-a", "--filter", f"label={LABEL}={NAME}", "--filter", f"label={LABEL_NODPKG}",
                   "--format", "{{.Names}}").stdout.decode().split()
    result: dict[int, dict] = {}
    for c in _inspect("container", *names):
        with contextlib.suppress(KeyError, ValueError):
            result[int(((c.get("Config") or {}).get("Labels") or {})[LABEL_NODPKG])] = c
    return result


def _ensure_nodpkg(n: int, base: int, console=None) -> list[SandboxHost]:
    """Make hosts ``nodpkg-1..n`` exist and run (image :data:`RECIPE_NODPKG`); remove
    ones beyond ``n``. Reused when running from the current image at their address."""
    if not 0 <= n <= NODPKG_MAX:
        raise FerryError(f"sandbox hosts without dpkg: between 0 and {NODPKG_MAX}, not {n}")
    existing = _nodpkg_containers()
    for j, c in sorted(existing.items()):
        if j > n:
            container, _, volume = _nodpkg_names(j)
            _say(console, f"removing {container} (nodpkg is {n})")
            docker("rm", "-f", "-v", container, check=False)
            docker("volume", "rm", "-f", volume, check=False)
    if not n:
        return []
    image = build_host_image(console, RECIPE_NODPKG, NODPKG_TAG)
    image_id = _image_id(image)
    hosts = []
    for j in range(1, n + 1):
        container, hostname, volume = _nodpkg_names(j)
        ip = str(ipaddress.ip_address(base + NODPKG_IP_OFFSET + j))
        c = existing.get(j)
        if c is not None and c.get("Image") == image_id and _container_ip(c) == ip:
            if not (c.get("State") or {}).get("Running"):
                _say(console, f"starting {container}")
                docker("start", container)
            else:
                _say(console, f"reusing {container} ({ip})")
        else:
            _say(console, f"starting {container} ({ip}, no dpkg)")
            docker("rm", "-f", "-v", container, check=False)
            docker("volume", "rm", "-f", volume, check=False)
            _start_container(container, hostname, volume, ip, image, {LABEL_NODPKG: str(j)})
        hosts.append(SandboxHost(name=hostname, ip=ip, container=container))
    return hosts


def _running_nodpkg() -> list[SandboxHost]:
    """The hosts without dpkg that run now, by number."""
    out = []
    for j, c in sorted(_nodpkg_containers().items()):
        ip = _container_ip(c)
        if (c.get("State") or {}).get("Running") and ip:
            container, hostname, _ = _nodpkg_names(j)
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


def _wait_ssh(host: SandboxHost, key_file: Path, known_hosts: Path, deadline: float) -> None:
    """Wait until a real SSH login as root works (key auth, host key checked strictly)."""
    import paramiko

    last = "no attempt"
    while True:
        client = paramiko.SSHClient()
        client.load_system_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host.ip, port=22, username="root", key_filename=str(key_file),
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
            raise FerryError(f"{host.name}: no SSH login as root at {host.ip}:22 within "
                             f"{READY_TIMEOUT:.0f}s ({last})")
        time.sleep(0.5)


# ---------------------------------------------------------------------------- inventory

def _inventory_text(hosts: list[SandboxHost], key_file: Path, known_hosts: Path,
                    nodpkg: list[SandboxHost] | None = None) -> str:
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
    )


def _nodpkg_group(hosts: list[SandboxHost]) -> str:
    """The inventory group ``nodpkg``: hosts whose os-release is not Debian and that have
    no dpkg (their Docker can only be the static engine)."""
    rows = "".join(f"        {h.name}: {{ansible_host: {h.ip}, ansible_port: 22}}\n" for h in hosts)
    return "    nodpkg:\n      hosts:\n" + rows


# ---------------------------------------------------------------------------- public API

def up(count: int = 3, state_dir: Path = DEFAULT_STATE_DIR, fresh: bool = False,
       console=None, nodpkg: int = 0) -> Sandbox:
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
        nodpkg: number of hosts without dpkg (``nodpkg-1..N``, group ``nodpkg``, image
            :data:`RECIPE_NODPKG`: os-release says Rocky Linux, no dpkg/apt), 0 to 9;
            reused like the others, ones beyond N removed.

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
        extra = _ensure_nodpkg(nodpkg, base, console)
        _prune_old_images()

        state_dir.mkdir(parents=True, exist_ok=True)
        key_file, pub_file, known_hosts, inventory = _paths(state_dir)
        pub_line = _ensure_key(key_file, pub_file)

        deadline = time.monotonic() + READY_TIMEOUT
        lines: list[str] = []
        for host in hosts + extra:
            state = _wait_systemd(host, deadline)
            if state != "running":
                _say(console, f"{host.name}: systemd is {state}")
            _install_authorized_key(host.container, pub_line)
            lines += _host_key_lines(host)
        _write_file(known_hosts, ("\n".join(lines) + "\n").encode())
        for host in hosts + extra:
            _wait_ssh(host, key_file, known_hosts, deadline)
        _write_file(inventory, _inventory_text(hosts, key_file, known_hosts, extra).encode())
        _say(console, f"sandbox up: {', '.join(f'{h.name}={h.ip}' for h in hosts + extra)}; inventory {inventory}")
        return Sandbox(state_dir=state_dir, hosts=hosts, key_file=key_file,
                       known_hosts=known_hosts, inventory=inventory, nodpkg=extra)


def down(state_dir: Path = DEFAULT_STATE_DIR, console=None) -> None:
    """Remove the sandbox: containers, their Docker volumes, the network, state files.

    Removes every container and volume labelled ``devkit.sandbox`` (any index), the
    ``ferry-sandbox`` network, and ``id_ed25519``, ``id_ed25519.pub``, ``known_hosts``,
    ``inventory.yml`` in ``state_dir`` (the directory too, when left empty). The host
    image and the cached rootfs are kept. A no-op when nothing exists.

    Args:
        state_dir: the state directory used with :func:`up`.
        console: optional ``rich.console.Console`` for progress lines.

    Raises:
        FerryError: no Docker engine, or docker refused to remove something.
    """
    ensure_engine()
    with _lock():
        existing = _sandbox_containers()
        if existing:
            _say(console, f"removing {', '.join(_container_name(i) for i in sorted(existing))}")
            docker("rm", "-f", "-v", *(c["Name"].lstrip("/") for c in existing.values()), timeout=120)
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
    return Sandbox(state_dir=state_dir, hosts=hosts, key_file=key_file,
                   known_hosts=known_hosts, inventory=inventory, nodpkg=_running_nodpkg())


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
