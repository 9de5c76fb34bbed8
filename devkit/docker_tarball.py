"""Assemble a stand-in for Docker's static tarball from Debian's binaries (dev/test only).

Docker publishes its engine for any Linux as ``docker-<version>.tgz``
(https://download.docker.com/linux/static/stable/<arch>/): one top-level ``docker/``
directory holding ``containerd``, ``containerd-shim-runc-v2``, ``ctr``, ``docker``,
``docker-init``, ``docker-proxy``, ``dockerd`` and ``runc``. This machine cannot reach
download.docker.com, so the tests build a tarball of the same layout from the binaries
of a Debian release's packages:

=========================  =========================================
member                     taken from (Debian package: path)
=========================  =========================================
``docker/dockerd``         docker.io: ``/usr/sbin/dockerd``
``docker/docker-proxy``    docker.io: ``/usr/sbin/docker-proxy``
``docker/docker``          docker.io: ``/usr/bin/docker``
``docker/containerd``      containerd: ``/usr/bin/containerd``
``docker/containerd-shim-runc-v2``  containerd: ``/usr/bin/containerd-shim-runc-v2``
``docker/ctr``             containerd: ``/usr/bin/ctr``
``docker/runc``            runc: ``/usr/sbin/runc``
``docker/docker-init``     tini: ``/usr/bin/tini-static`` (Docker's docker-init is tini)
=========================  =========================================

One difference from Docker's own tarball: Debian links ``dockerd`` dynamically (glibc,
libdevmapper, libsystemd...) and ``runc`` against libseccomp, so the host needs those
libraries (a RHEL-like minimal install has them); Docker's binaries are static.

``bookworm`` gives Docker 20.10.24 (containerd 1.6.20, runc 1.1.5); ``bullseye`` gives
20.10.5 (containerd 1.4.13, runc 1.0.0~rc93): two real engine versions for upgrade tests.

The output is reproducible (sorted members, owner root, mode 0755, mtime 0, gzip without
a timestamp) and cached as ``$FERRY_CACHE_DIR/docker-static/<suite>/docker-<ver>.tgz``
with ``packages.json`` (the Debian package versions it came from) next to it. Package
downloads use apt with a private source list and state directory under the cache, so
the controller's own apt configuration is left alone.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ferry.errors import FerryError
from ferry.resources import cache_dir

#: suite -> apt source lines (signed by Debian's archive keyring)
SUITES = {
    "bookworm": ["deb {key} http://deb.debian.org/debian bookworm main",
                 "deb {key} http://deb.debian.org/debian bookworm-updates main",
                 "deb {key} http://deb.debian.org/debian-security bookworm-security main"],
    "bullseye": ["deb {key} http://deb.debian.org/debian bullseye main",
                 "deb {key} http://deb.debian.org/debian bullseye-updates main",
                 "deb {key} http://deb.debian.org/debian-security bullseye-security main"],
}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

#: tarball member -> (Debian package, path inside the package)
MEMBERS = {
    "containerd": ("containerd", "usr/bin/containerd"),
    "containerd-shim-runc-v2": ("containerd", "usr/bin/containerd-shim-runc-v2"),
    "ctr": ("containerd", "usr/bin/ctr"),
    "docker": ("docker.io", "usr/bin/docker"),
    "docker-init": ("tini", "usr/bin/tini-static"),
    "docker-proxy": ("docker.io", "usr/sbin/docker-proxy"),
    "dockerd": ("docker.io", "usr/sbin/dockerd"),
    "runc": ("runc", "usr/sbin/runc"),
}


def _run(args: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.startswith("E:")] or \
            proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise FerryError(f"{what}: {lines[-1]}")
    return proc.stdout


def _apt_options(root: Path) -> list[str]:
    """apt options that use only ``root`` (its own source list, lists and caches)."""
    return ["-o", f"Dir::Etc::SourceList={root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", "APT::Architecture=amd64",
            "-o", "Acquire::Languages=none"]


def _download(suite: str, into: Path) -> dict[str, Path]:
    """Download docker.io, containerd, runc and tini of ``suite`` into ``into``."""
    root = into / "apt"
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text("\n".join(l.format(key=f"[signed-by={KEYRING}]")
                                                 for l in SUITES[suite]) + "\n")
    opts = _apt_options(root)
    _run(["apt-get", *opts, "update"], f"apt-get update ({suite})")
    debs = into / "debs"
    debs.mkdir()
    packages = sorted({p for p, _ in MEMBERS.values()})
    _run(["apt-get", *opts, "download", *packages], f"apt-get download ({suite})", cwd=debs)
    found = {d.name.split("_")[0]: d for d in debs.glob("*.deb")}
    missing = sorted(set(packages) - set(found))
    if missing:
        raise FerryError(f"apt-get download ({suite}): {', '.join(missing)} not downloaded")
    return found


def _deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], f"dpkg-deb -f {deb.name}").strip()


def _write_tgz(path: Path, files: dict[str, bytes]) -> None:
    """A reproducible ``docker/<name>`` tar.gz of ``files`` (name -> bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        top = tarfile.TarInfo("docker")
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(top)
        for name in sorted(files):
            info = tarfile.TarInfo(f"docker/{name}")
            info.size, info.mode, info.mtime = len(files[name]), 0o755, 0
            tar.addfile(info, io.BytesIO(files[name]))
    part = path.with_name(path.name + ".partial")
    with open(part, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    os.replace(part, path)


def assemble(suite: str = "bookworm", console=None) -> Path:
    """Return a Docker-static-layout tarball built from ``suite``'s Debian binaries.

    Args:
        suite: a key of :data:`SUITES` (``bookworm``: Docker 20.10.24, ``bullseye``:
            20.10.5).
        console: anything with ``.print(str)`` for progress, or None.

    Returns:
        ``$FERRY_CACHE_DIR/docker-static/<suite>/docker-<version>.tgz`` (built on the
        first call, about 90 MB of downloads; later calls return the cached file).

    Raises:
        FerryError: unknown suite, apt or dpkg-deb failed, a binary missing from a package.
    """
    if suite not in SUITES:
        raise FerryError(f"suite {suite!r}: one of {', '.join(SUITES)}")
    out_dir = cache_dir() / "docker-static" / suite
    record = out_dir / "packages.json"
    if record.is_file():
        info = json.loads(record.read_text())
        tgz = out_dir / info["file"]
        if tgz.is_file():
            return tgz
    if console is not None:
        console.print(f"assembling a Docker static tarball from Debian {suite}'s packages...")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"ferry-docker-{suite}-") as tmp:
        debs = _download(suite, Path(tmp))
        versions = {name: _deb_version(deb) for name, deb in sorted(debs.items())}
        trees = {}
        for name, deb in debs.items():
            trees[name] = Path(tmp) / "x" / name
            trees[name].mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(trees[name])], f"dpkg-deb -x {deb.name}")
        files = {}
        for member, (package, inside) in MEMBERS.items():
            src = trees[package] / inside
            if not src.is_file():
                raise FerryError(f"{package} {versions[package]} of {suite} has no /{inside}")
            files[member] = src.read_bytes()
        upstream = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", versions["docker.io"])
        if not upstream:
            raise FerryError(f"docker.io version {versions['docker.io']!r}: no upstream version in it")
        tgz = out_dir / f"docker-{upstream.group(1)}.tgz"
        _write_tgz(tgz, files)
    record.write_text(json.dumps({"file": tgz.name, "suite": suite, "packages": versions}, indent=2) + "\n")
    for old in out_dir.glob("docker-*.tgz"):
        if old != tgz:
            old.unlink()
    return tgz


if __name__ == "__main__":     # python -m devkit.docker_tarball [suite...]
    import sys
    for s in sys.argv[1:] or ["bookworm"]:
        print(assemble(s))
