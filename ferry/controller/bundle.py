"""The offline bundle: everything a host without internet needs to run a stack.

Layout (one directory per stack version, built on the controller by ``inv bundle``)::

    dist/<stack>-<version>/
      manifest.json        stack, version, creation time, every file (path, size in
                           bytes, sha256), every image (reference, ID, tags, size)
      checksums.sha256     "<sha256>  <path>" lines, as ``sha256sum -c`` reads them
      images/<ref>.tar     one ``docker save`` tarball per image
      docker/              the offline Docker installer (ferry.controller.dockerdist): debs/,
                           docker-compose, versions.json
      stack/               the stack definition it was built from (stack.yml,
                           defaults.yml, templates/, files/)

The manifest is the bundle's contract: ``deploy`` renders from ``stack/`` of the
bundle (not from the working tree), uploads files by sha256 and loads images by ID.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import FerryError
from ferry.model.stack import FILES_DIR, Stack, load_stack

MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"
FORMAT = 1
HASH_BLOCK = 4 << 20


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks; ``progress(nbytes)`` per block."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(HASH_BLOCK)
            if not block:
                break
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def image_filename(ref: str) -> str:
    """``images/<ref>.tar`` with ``/`` and ``:`` made file-name safe."""
    return "images/" + re.sub(r"[^A-Za-z0-9._-]", "_", ref) + ".tar"


@dataclass
class Bundle:
    """A bundle directory on the controller and its parsed manifest.

    Attributes:
        path: the bundle directory.
        manifest: parsed ``manifest.json`` (see module docstring).
    """

    path: Path
    manifest: dict[str, Any]

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

    def files(self) -> list[dict[str, Any]]:
        """Manifest entries ``{path, size, sha256}`` (manifest.json itself excluded)."""
        return self.manifest["files"]

    def all_files(self) -> list[dict[str, Any]]:
        """Every file to ship, ``manifest.json`` and ``checksums.sha256`` included."""
        extra = []
        for name in (MANIFEST, CHECKSUMS):
            p = self.path / name
            extra.append({"path": name, "size": p.stat().st_size, "sha256": sha256_file(p)})
        return self.files() + extra

    def stack(self) -> Stack:
        """The stack definition carried in the bundle (``stack/``)."""
        return load_stack(self.path / "stack")

    def verify(self, paths: set[str] | None = None, progress: Callable[[int], None] | None = None) -> None:
        """Check size and sha256 of bundle files against the manifest.

        Args:
            paths: only these manifest paths (default: every file).
            progress: called with bytes hashed.

        Raises:
            FerryError: a file is missing, or its size or sha256 differs (names the file).
        """
        for entry in self.files():
            if paths is not None and entry["path"] not in paths:
                continue
            p = self.path / entry["path"]
            if not p.is_file():
                raise FerryError(f"{p}: listed in {self.path / MANIFEST} but missing")
            if p.stat().st_size != entry["size"]:
                raise FerryError(f"{p}: size {p.stat().st_size} bytes does not match manifest ({entry['size']})")
            digest = sha256_file(p, progress)
            if digest != entry["sha256"]:
                raise FerryError(f"{p}: sha256 {digest[:12]}... does not match manifest ({entry['sha256'][:12]}...)")


def load_bundle(path: Path) -> Bundle:
    """Read and validate a bundle's manifest (the files are checked by :meth:`Bundle.verify`).

    Raises:
        FerryError: no bundle there, malformed manifest (names the key).
    """
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise FerryError(f"{path}: not a bundle (no {MANIFEST}); build one with `inv bundle --stack NAME`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FerryError(f"{mpath}: malformed manifest: {exc}") from None
    for key in ("format", "stack", "version", "files", "images"):
        if key not in manifest:
            raise FerryError(f"{mpath}: key '{key}' missing")
    if manifest["format"] != FORMAT:
        raise FerryError(f"{mpath}: key 'format': {manifest['format']} (this Ferry reads format {FORMAT})")
    for i, f in enumerate(manifest["files"]):
        if not {"path", "size", "sha256"} <= set(f) or ".." in Path(f["path"]).parts or f["path"].startswith("/"):
            raise FerryError(f"{mpath}: key 'files[{i}]' needs a relative path, size and sha256")
        if not re.fullmatch(r"[0-9a-f]{64}", f["sha256"]):
            raise FerryError(f"{mpath}: key 'files[{i}].sha256' is not a sha256 hex digest")
    return Bundle(path, manifest)


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
    found = sorted((p for p in dist.glob(f"{stack}-*") if (p / MANIFEST).is_file()
                    and json.loads((p / MANIFEST).read_text()).get("stack") == stack),
                   key=lambda p: (p / MANIFEST).stat().st_mtime)
    if not found:
        raise FerryError(f"no bundle for stack '{stack}' in {dist}; build one with `inv bundle --stack {stack}`")
    return found[-1]


# -- building --------------------------------------------------------------------------

def _inspect_image(ref: str) -> dict[str, Any]:
    from ferry.controller.localdocker import docker
    out = docker("image", "inspect", "--format", "{{json .}}", ref, check=False)
    if out.returncode != 0:
        raise FerryError(f"image {ref} is not in the local Docker engine "
                         f"(pull it, or add a stand-in recipe under images/)")
    info = json.loads(out.stdout)
    return {"id": info["Id"], "tags": sorted(info.get("RepoTags") or []), "size": int(info.get("Size", 0))}


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
                 docker_settings: dict[str, Any] | None = None) -> Bundle:
    """Build ``dist/<stack>-<version>/`` from local images (``inv bundle``).

    Every image must be in the local Docker engine (pulled on a machine with internet,
    or, in the checkout, built from stand-in recipes by the devkit first:
    ``devkit.images.build_bundle``). An image tarball of an earlier build
    of the same version is reused when the image ID is unchanged, so rebuilding a
    bundle is idempotent: same images, same bytes, nothing new to upload.

    Args:
        stack_dir: ``stacks/<name>``.
        dist: output directory (``dist/``).
        version: overrides ``version`` of stack.yml.
        ui: :class:`ferry.ui.UI` for progress (optional).
        docker_settings: install-docker-offline role defaults (packages, versions).

    Returns:
        The loaded bundle.

    Raises:
        FerryError: invalid stack, an image missing locally, a payload that can't be had.
    """
    from . import dockerdist
    from ferry.controller.localdocker import docker
    stack = load_stack(stack_dir)
    version = version or stack.version
    name = f"{stack.name}-{version}"
    final = dist / name
    tmp = dist / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    previous = load_bundle(final) if (final / MANIFEST).is_file() else None
    prev_images = {i["id"]: i for i in previous.manifest["images"]} if previous else {}
    image_entries = []
    for service, ref in stack.images.items():
        info = _inspect_image(ref)
        rel = image_filename(ref)
        old = prev_images.get(info["id"])
        if old and old["ref"] == ref and (final / old["file"]).is_file():
            os.link(final / old["file"], tmp / rel)
            note = "unchanged, reused"
        else:
            started = time.monotonic()
            docker("save", "-o", str(tmp / rel), ref)
            note = f"saved in {time.monotonic() - started:.1f}s"
        if ui:
            ui.info(f"image {ref} ({info['size'] / 1e6:.0f} MB): {note}")
        image_entries.append({"service": service, "ref": ref, "file": rel, **info})
    payload = dockerdist.build_docker_payload(tmp / "docker", docker_settings or {},
                                              console=ui.console if ui else None)
    _copy_stack(stack, tmp / "stack")
    if version != stack.version:
        text = (tmp / "stack" / "stack.yml").read_text()
        (tmp / "stack" / "stack.yml").write_text(
            re.sub(r"(?m)^version:.*$", f'version: "{version}"', text, count=1))
    files = []
    for p in sorted(x for x in tmp.rglob("*") if x.is_file()):
        files.append({"path": p.relative_to(tmp).as_posix(), "size": p.stat().st_size,
                      "sha256": sha256_file(p)})
    manifest = {
        "format": FORMAT, "stack": stack.name, "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "docker": payload, "images": image_entries, "files": files,
    }
    if previous and _same_content(previous.manifest, manifest):
        manifest["created"] = previous.manifest["created"]
        manifest["created_by"] = previous.manifest["created_by"]
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    lines = [f"{f['sha256']}  {f['path']}" for f in files]
    lines.append(f"{sha256_file(tmp / MANIFEST)}  {MANIFEST}")
    (tmp / CHECKSUMS).write_text("\n".join(lines) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return load_bundle(final)


def _same_content(a: dict, b: dict) -> bool:
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "created_by")}
    return strip(a) == strip(b)
