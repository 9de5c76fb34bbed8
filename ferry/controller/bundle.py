"""The offline bundle: everything a host without internet needs to run a stack.

Layout (one directory per stack version, built on the controller by ``inv bundle``)::

    dist/<stack>-<version>/
      manifest.json        stack, version, creation time, every file (path, size in
                           bytes, sha256), every image (reference, ID, tags, size,
                           config blob, layer blobs with diff IDs); see
                           :mod:`ferry.model.manifest` for the schema
      checksums.sha256     "<sha256>  <path>" lines, as ``sha256sum -c`` reads them
      manifest.json.sig    with ``--sign``: SSH signature of the manifest
      blobs/sha256/<hex>   image configs and layers (gzip), as ``docker save`` has them,
                           named by digest (:mod:`ferry.controller.imageparts`)
      docker/              the offline Docker installer (ferry.controller.dockerdist): debs/,
                           docker-compose, versions.json; with ``--docker-static``
                           also static/docker-<ver>.tgz (ferry.controller.dockerstatic)
      stack/               the stack definition it was built from (stack.yml,
                           defaults.yml, templates/, files/)

The manifest's ``docker`` key describes the Docker payload, one entry per layout:

- the Compose v2 plugin, used by both layouts: ``compose`` (version), ``compose_sha256``
  (of ``docker/docker-compose``);
- ``arch`` / ``uname_arch``: the architecture of everything under ``docker/``;
- the Debian layout (hosts with dpkg): ``docker`` (docker.io version), ``packages``
  ({name: version} of every ``docker/debs/*.deb``);
- the static layout (any systemd Linux), present only when built with
  ``--docker-static``: ``static`` = {``file`` (bundle path of the tarball), ``version``,
  ``sha256``, ``size``, ``arch``, ``uname_arch``, ``binaries`` ({name: version or
  null}), ``source`` (the file name given)}.

The install-docker-offline role picks the layout per host (``docker_install``); a host
only ever needs the files of its own layout plus the Compose plugin.

The manifest is the bundle's contract: ``deploy`` checks every file against it before
any connection, renders from ``stack/`` of the bundle (not from the working tree),
uploads files by sha256 and loads images by ID. Format-1 bundles (one ``docker save``
tarball per image under ``images/``, built before layer transfer) still load.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import FerryError
from ..model.manifest import CHECKSUMS, FORMAT, MANIFEST, UNLISTED, checksums_text, validate_manifest
from ..model.stack import FILES_DIR, Stack, load_stack
from .hashcache import HashCache, sha256_file


@dataclass
class Bundle:
    """A bundle directory on the controller and its parsed, schema-checked manifest.

    Attributes:
        path: the bundle directory.
        manifest: parsed ``manifest.json`` (see :mod:`ferry.model.manifest`).
    """

    path: Path
    manifest: dict[str, Any]
    _unlisted: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def stack_name(self) -> str:
        """The stack this bundle deploys (manifest ``stack``)."""
        return self.manifest["stack"]

    @property
    def version(self) -> str:
        """The bundle's version (manifest ``version``)."""
        return self.manifest["version"]

    @property
    def name(self) -> str:
        """``<stack>-<version>``: the bundle's directory name, locally and on hosts."""
        return f"{self.stack_name}-{self.version}"

    @property
    def format(self) -> int:
        """Manifest format (1: one tarball per image; 2: images as blobs)."""
        return int(self.manifest["format"])

    def files(self) -> list[dict[str, Any]]:
        """Manifest entries ``{path, size, sha256}`` (the files of :data:`UNLISTED` excluded)."""
        return self.manifest["files"]

    def all_files(self) -> list[dict[str, Any]]:
        """Every file to ship: the listed ones, then ``manifest.json``,
        ``checksums.sha256`` and, when signed, ``manifest.json.sig`` (their digests
        computed once per Bundle object)."""
        if self._unlisted is None:
            cache = HashCache()
            self._unlisted = [{"path": name, "size": (self.path / name).stat().st_size,
                               "sha256": cache.sha256(self.path / name)}
                              for name in UNLISTED if (self.path / name).is_file()]
            cache.save()
        return self.files() + self._unlisted

    def stack(self) -> Stack:
        """The stack definition carried in the bundle (``stack/``)."""
        return load_stack(self.path / "stack")

    def check_listing(self) -> None:
        """The manifest lists every file of the bundle directory and nothing else.

        Raises:
            FerryError: a file not in the manifest (an entry removed, a file added),
                a listed file missing, or something that is not a regular file
                (a symlink, a device), named.
        """
        listed = {f["path"] for f in self.files()}
        present = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(self.path).as_posix()
                if full.is_symlink():
                    raise FerryError(f"{full}: a symlink inside the bundle (bundles hold regular files only)")
                if name in filenames:
                    if not full.is_file():
                        raise FerryError(f"{full}: not a regular file")
                    present.add(rel)
        for rel in sorted(present - listed - set(UNLISTED)):
            raise FerryError(f"{self.path / rel}: not listed in {self.path / MANIFEST}: refusing the bundle "
                             f"(rebuild it with `inv bundle`)")
        for rel in sorted(listed - present):
            raise FerryError(f"{self.path / rel}: listed in {self.path / MANIFEST} but missing")
        if MANIFEST not in present:
            raise FerryError(f"{self.path}: not a bundle (no {MANIFEST})")

    def verify(self, paths: set[str] | None = None, progress: Callable[[int], None] | None = None,
               cache: HashCache | None = None) -> None:
        """Check the bundle end to end: the listing (:meth:`check_listing`), then size
        and sha256 of every listed file (or only ``paths``), then ``checksums.sha256``.

        Digests come from ``cache`` (by device, inode, size, mtime and ctime; see
        :mod:`ferry.controller.hashcache`), so an unchanged bundle is re-checked in
        milliseconds while any edited file is hashed again.

        Args:
            paths: only these manifest paths (default: every file).
            progress: called with bytes actually hashed.
            cache: the digest cache (default: the controller's).

        Raises:
            FerryError: a file is missing, unlisted, or its size or sha256 differs (names the file).
        """
        cache = cache or HashCache()
        if paths is None:
            self.check_listing()
        try:
            for entry in self.files():
                if paths is not None and entry["path"] not in paths:
                    continue
                p = self.path / entry["path"]
                if not p.is_file():
                    raise FerryError(f"{p}: listed in {self.path / MANIFEST} but missing")
                if p.stat().st_size != entry["size"]:
                    raise FerryError(f"{p}: size {p.stat().st_size} bytes does not match manifest ({entry['size']})")
                digest = cache.sha256(p, progress)
                if digest != entry["sha256"]:
                    raise FerryError(f"{p}: sha256 {digest[:12]}... does not match manifest ({entry['sha256'][:12]}...)")
            sums = self.path / CHECKSUMS
            if paths is None and sums.is_file():
                expected = checksums_text(self.manifest, cache.sha256(self.path / MANIFEST))
                if sums.read_text(encoding="utf-8", errors="replace") != expected:
                    raise FerryError(f"{sums}: does not match {self.path / MANIFEST}: refusing the bundle")
        finally:
            cache.save()


def load_bundle(path: Path) -> Bundle:
    """Read a bundle's manifest and check it against the manifest schema
    (:func:`ferry.model.manifest.validate_manifest`); the files are checked by
    :meth:`Bundle.verify`.

    Raises:
        FerryError: no bundle there, malformed manifest (names the key).
    """
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise FerryError(f"{path}: not a bundle (no {MANIFEST}); build one with `inv bundle --stack NAME`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:   # RecursionError: [[[[...
        raise FerryError(f"{mpath}: malformed manifest: {str(exc) or type(exc).__name__}") from None
    return Bundle(path, validate_manifest(manifest, mpath))


def find_bundle(dist: Path, stack: str, version: str | None = None) -> Path:
    """The bundle directory for ``stack`` in ``dist``: ``version`` if given, else the
    most recently built one.

    Raises:
        FerryError: none found.
    """
    if version:
        p = dist / f"{stack}-{version}"
        if not (p / MANIFEST).is_file():
            raise FerryError(f"no bundle {p}; build it with `inv bundle --stack {stack} --version {version}`")
        return p
    found = []
    for p in dist.glob(f"{stack}-*"):
        try:
            if json.loads((p / MANIFEST).read_text()).get("stack") == stack:
                found.append(p)
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
    if not found:
        raise FerryError(f"no bundle for stack '{stack}' in {dist}; build one with `inv bundle --stack {stack}`")
    return max(found, key=lambda p: (p / MANIFEST).stat().st_mtime)


# -- building --------------------------------------------------------------------------

def _inspect_image(ref: str) -> dict[str, Any]:
    from ferry.controller.localdocker import docker
    out = docker("image", "inspect", "--format", "{{json .}}", ref, check=False)
    if out.returncode != 0:
        raise FerryError(f"image {ref} is not in the local Docker engine "
                         f"(pull it, or add a stand-in recipe under images/)")
    info = json.loads(out.stdout)
    return {"id": info["Id"], "tags": sorted(info.get("RepoTags") or []), "size": int(info.get("Size", 0)),
            "diff_ids": list((info.get("RootFS") or {}).get("Layers") or [])}


def _copy_stack(stack: Stack, dest: Path) -> None:
    """Copy the stack definition (stack.yml, defaults.yml, templates/, files/) into the
    bundle (Python byte-code caches left out)."""
    dest.mkdir(parents=True)
    for name in ("stack.yml", "defaults.yml"):
        if (stack.dir / name).is_file():
            shutil.copy2(stack.dir / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for name in ("templates", FILES_DIR):
        if (stack.dir / name).is_dir():
            shutil.copytree(stack.dir / name, dest / name, ignore=ignore)


def build_bundle(stack_dir: Path, dist: Path, version: str | None = None, ui=None,
                 docker_settings: dict[str, Any] | None = None, sign: Path | None = None,
                 compress: str = "gzip", level: int = 6, docker_static: Path | None = None,
                 reuse_from: Sequence[Path] = ()) -> Bundle:
    """Build ``dist/<stack>-<version>/`` from local images (``inv bundle``).

    Every image of ``stack.yml`` must be in the local Docker engine (pulled, or built:
    in the checkout, ``devkit.images.build_bundle`` builds stand-ins first). Each image
    is stored as its parts, config and layer blobs named by digest
    (:mod:`ferry.controller.imageparts`); blobs already in any bundle of ``dist`` are
    hard-linked, so an unchanged image costs no ``docker save`` and a changed one only
    its new layers' compression. Rebuilding a bundle whose inputs did not change gives
    the same bytes (the manifest keeps its creation time), so a redeploy uploads nothing.

    Args:
        stack_dir: ``stacks/<name>``.
        dist: output directory (``dist/``).
        version: overrides ``version`` of stack.yml (an identifier: no ``/``, no ``..``).
        ui: :class:`ferry.ui.UI` for progress (optional).
        docker_settings: install-docker-offline role defaults (packages, versions).
        sign: an SSH private key: sign the manifest with it (``manifest.json.sig``,
            see :mod:`ferry.controller.signing`).
        compress: layer compression, ``gzip`` (default) or ``none``.
        level: gzip level (1 fastest .. 9 smallest; default 6, as ``gzip``).
        docker_static: Docker's static tarball (``docker-<version>.tgz``) to carry for
            hosts without dpkg (see :mod:`ferry.controller.dockerstatic`), or None.
        reuse_from: other ``dist`` directories whose bundles' blobs may be linked too
            (after ``dist``'s own; copied where the file system refuses a hard link).

    Returns:
        The loaded bundle.

    Raises:
        FerryError: invalid stack or version, an image missing locally, a payload that
            can't be had, a key that cannot sign, a static tarball that is not Docker's
            layout for the bundle's architecture.
    """
    from . import dockerdist, dockerstatic
    from .imageparts import ReuseIndex, write_image
    from ferry.model.manifest import is_identifier
    stack = load_stack(stack_dir)
    version = version or stack.version
    if not is_identifier(version):
        raise FerryError(f"version {version!r}: must be an identifier (letters, digits, '.', '_', '+', '-'; "
                         f"no '/', no '..')")
    name = f"{stack.name}-{version}"
    dist.mkdir(parents=True, exist_ok=True)
    final = dist / name
    tmp = dist / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        previous = load_bundle(final) if (final / MANIFEST).is_file() else None
    except FerryError:
        previous = None
    cache = HashCache()
    index = ReuseIndex.scan(dist)
    for other in reuse_from:
        if Path(other).resolve() != Path(dist).resolve():
            index.add(ReuseIndex.scan(Path(other)))
    image_entries = []
    for service, ref in stack.images.items():
        info = _inspect_image(ref)
        parts = write_image(ref, info, tmp, index, cache, compress, level)
        if ui:
            n, raw, packed, seconds = parts.compressed
            note = (f"saved, {n} layers compressed ({raw / 1e6:.0f} MB -> {packed / 1e6:.0f} MB in {seconds:.1f}s)"
                    if parts.saved and compress == "gzip" else "saved" if parts.saved else "unchanged")
            ui.info(f"image {ref} ({info['size'] / 1e6:.0f} MB): {note}"
                    + (f", {parts.linked} blobs reused" if parts.linked else ""))
        image_entries.append({"service": service, **parts.entry})
    cache.save()
    payload = dockerdist.build_docker_payload(tmp / "docker", docker_settings or {},
                                              console=ui.console if ui else None)
    if docker_static is not None:
        payload["static"] = dockerstatic.add_static_engine(Path(docker_static), tmp / "docker", payload["arch"])
        if ui:
            ui.info(f"docker payload: static engine {payload['static']['source']} "
                    f"(dockerd {payload['static']['binaries'].get('dockerd') or payload['static']['version']})")
    _copy_stack(stack, tmp / "stack")
    if version != stack.version:
        text = (tmp / "stack" / "stack.yml").read_text()
        (tmp / "stack" / "stack.yml").write_text(
            re.sub(r"(?m)^version:.*$", f'version: "{version}"', text, count=1))
    manifest = {
        "format": FORMAT, "stack": stack.name, "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "docker": payload, "images": image_entries,
    }
    seal(tmp, manifest, keep_times=previous.manifest if previous else None)
    if sign is not None:
        from .signing import sign_manifest
        sign_manifest(tmp, sign)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return load_bundle(final)


def seal(root: Path, manifest: dict[str, Any], keep_times: dict[str, Any] | None = None,
         cache: HashCache | None = None) -> dict[str, Any]:
    """List and hash every file under ``root`` into ``manifest["files"]``, check the
    manifest against the schema (a stack file whose name a host could not take stops
    the build, named), and write ``manifest.json`` and ``checksums.sha256``.

    Args:
        root: the bundle directory being built.
        manifest: every key but ``files``.
        keep_times: an earlier build's manifest: when nothing but the creation time and
            user differ, those are kept, so an unchanged rebuild is byte-identical.

    Returns:
        The manifest as written.
    """
    cache = cache or HashCache()
    manifest["files"] = [{"path": p.relative_to(root).as_posix(), "size": p.stat().st_size,
                          "sha256": cache.sha256(p)}
                         for p in sorted(x for x in root.rglob("*") if x.is_file())
                         if p.relative_to(root).as_posix() not in UNLISTED]
    cache.save()
    if keep_times and _same_content(keep_times, manifest):
        manifest["created"] = keep_times.get("created", manifest.get("created"))
        manifest["created_by"] = keep_times.get("created_by", manifest.get("created_by"))
    validate_manifest(manifest, root / MANIFEST)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (root / CHECKSUMS).write_text(checksums_text(manifest, sha256_file(root / MANIFEST)))
    return manifest


def _same_content(a: dict, b: dict) -> bool:
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "created_by")}
    return strip(a) == strip(b)
