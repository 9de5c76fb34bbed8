"""upload-bundle: send the bundle files this host will use and lacks, verified, into the store.

What a host needs is decided from facts before anything is sent:

- the stack copy (``stack/``), ``manifest.json``, ``checksums.sha256`` and the signature;
- of the Docker installer (``docker/``), only the files install-docker-offline will
  install (none for a host already running the bundle's exact Docker and Compose);
- of the images (format 2: config and layer blobs), only those of images whose ID the
  host's Docker lacks, and of their layers only those whose chain ID it lacks
  (``RootFS.Layers``; see :mod:`ferry.model.imagelayers`). A format-1 bundle sends the
  tarball of each image the host lacks.

Files are content-addressed on the host (``store/<sha256>``), so a file already there
from any earlier bundle is not sent again; those this run will use are re-hashed on the
host first (a damaged one is removed and sent again). The missing files go in ONE stream
over SSH to one receiver on the host (:func:`ferry.host.files.receive_files`), which
hashes each file while writing it and renames it into place only when size and sha256
match; a mismatch stops the deploy. The bundle's layout is then recreated under
``bundles/<stack>-<version>/`` as symlinks to the store files the host holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ferry.errors import FerryError, HostError
from ferry.host import containers, files as hostfiles
from ferry.model.imagelayers import plan_load
from ferry.roles import RoleContext, RoleResult, load_role
from ferry.ui import human_bytes


@dataclass
class UploadPlan:
    """What upload-bundle does on one host.

    Attributes:
        send: manifest entries to stream (each sha256 once).
        links: ``{bundle path: store path}`` symlinks to create or fix.
        stale: symlinks under the bundle's directory that it no longer has (a rebuilt
            bundle of the same version), removed.
        recheck: entries already in the store that this run uses (re-hashed first).
        used: number of bundle files this host uses.
        total: number of bundle files.
        skipped: ``{reason: bytes}`` left out because the host does not need them.
    """

    send: list[dict]
    links: dict[str, str]
    stale: list[str]
    recheck: list[dict]
    used: int
    total: int
    skipped: dict[str, int]


def used_files(ctx: RoleContext) -> tuple[list[dict], dict[str, int]]:
    """The bundle files this host will use (see the module docstring), and the bytes
    left out per reason (``installer``, ``layers``, ``images``)."""
    entries = ctx.bundle.all_files()
    if ctx.state.engine is None:
        ctx.state.engine = containers.parse_engine_images(ctx.t.run(containers.engine_images()).out)
    installer = load_role("install-docker-offline")
    if ctx.state.host_facts is None:
        installer.preflight(ctx)
    docker_needed = set(installer.files_needed(ctx))
    images = ctx.bundle.manifest["images"]
    if ctx.bundle.format == 1:
        image_paths = {i["file"] for i in images}
        wanted_images = {i["file"] for i in images if i["id"] not in ctx.state.engine.tags}
    else:
        image_paths = {i["config"] for i in images} | {l["blob"] for i in images for l in i["layers"]}
        wanted_images = set(plan_load(images, ctx.state.engine).blobs)
    used, skipped = [], {"installer": 0, "layers": 0}
    for f in entries:
        path = f["path"]
        if path.startswith("docker/") and path not in docker_needed:
            skipped["installer"] += f["size"]
        elif path in image_paths and path not in wanted_images:
            skipped["layers"] += f["size"]
        else:
            used.append(f)
    return used, skipped


def plan(ctx: RoleContext) -> UploadPlan:
    """Decide what to send and link on this host, from facts: the store listing (already
    in ``ctx.state.store_listing`` when deploy gathered it), the engine's images, the
    installer plan and the bundle's links on the host."""
    p = ctx.paths
    present = ctx.state.store_listing
    if present is None:
        present = set(hostfiles.parse_lines(ctx.t.run(hostfiles.list_dir(p.store)).out))
    used, skipped = used_files(ctx)
    send, recheck, seen = [], [], set()
    for f in used:
        if f["sha256"] in seen:
            continue
        seen.add(f["sha256"])
        (recheck if f["sha256"] in present else send).append(f)
    held = present | seen
    want = {f["path"]: f"{p.store}/{f['sha256']}" for f in ctx.bundle.all_files() if f["sha256"] in held}
    have = hostfiles.parse_links(ctx.t.run(hostfiles.list_links(p.bundle_dir)).out)
    links = {rel: target for rel, target in want.items() if have.get(rel) != target}
    stale = sorted(set(have) - {f["path"] for f in ctx.bundle.all_files()})
    return UploadPlan(send, links, stale, recheck, len(used), len(ctx.bundle.all_files()), skipped)


def upload_stream(root: Path, files: list[dict], progress: Callable[[int], None] | None = None,
                  block: int = 1 << 20) -> Iterator[bytes]:
    """The byte stream :func:`ferry.host.files.receive_files` reads: per file
    ``"<sha256> <size>\\n"`` and its bytes (read from ``root/<path>`` in ``block``-byte
    pieces), then ``END 0``.

    Raises:
        FerryError: a local file's size differs from its manifest entry (it changed
            after the pre-deploy check).
    """
    for f in files:
        path = root / f["path"]
        if path.stat().st_size != f["size"]:
            raise FerryError(f"{path}: size changed since it was checked against the manifest")
        yield f"{f['sha256']} {f['size']}\n".encode()
        with open(path, "rb") as fh:
            while piece := fh.read(block):
                yield piece
                if progress:
                    progress(len(piece))
    yield b"END 0\n"


def recheck(ctx: RoleContext, entries: list[dict]) -> list[dict]:
    """Re-hash on the host the store files this run will use; return the entries that
    are missing or damaged there (removed by the check, to be sent again)."""
    if not entries:
        return []
    text = "".join(f"{f['sha256']} {f['size']}\n" for f in entries)
    bad = hostfiles.parse_check_store(ctx.t.run(hostfiles.check_store(ctx.paths.store), input=text.encode()).out)
    for f in entries:
        if f["sha256"] in bad:
            ctx.ui.warn(f"{ctx.host}: store file for {f['path']} was {bad[f['sha256']]} on the host: sending it again")
    return [f for f in entries if f["sha256"] in bad]


def _skipped_note(skipped: dict[str, int]) -> str:
    parts = []
    if skipped.get("installer"):
        parts.append(f"installer not needed ({human_bytes(skipped['installer'])})")
    if skipped.get("layers"):
        parts.append(f"images/layers already in Docker ({human_bytes(skipped['layers'])})")
    return ("; not sent: " + ", ".join(parts)) if parts else ""


def run(ctx: RoleContext) -> RoleResult:
    """Upload what the host will use and lacks in one verified stream, then link the
    bundle; see the module docstring."""
    up = plan(ctx)
    note = _skipped_note(up.skipped)
    if ctx.check:
        total = sum(f["size"] for f in up.send)
        if not up.send and not up.links and not up.stale:
            return RoleResult(False, f"uploaded 0 B (all {up.used} files it uses already on the host){note}",
                              {"bytes": 0, "files": 0})
        return RoleResult(True, f"would upload {human_bytes(total)} ({len(up.send)} of {up.total} files){note}",
                          {"bytes": total, "files": len(up.send)})
    send = up.send + recheck(ctx, up.recheck)
    total = sum(f["size"] for f in send)
    if not send and not up.links and not up.stale:
        return RoleResult(False, f"uploaded 0 B (all {up.used} files it uses already on the host){note}",
                          {"bytes": 0, "files": 0})
    started = time.monotonic()
    if send:
        with ctx.ui.transfer(f"{ctx.host} upload", total) as advance:
            res = ctx.t.send(hostfiles.receive_files(ctx.paths.store),
                             upload_stream(ctx.bundle.path, send, advance), check=False)
        if not res.ok:
            sha = res.last_error_line().rsplit(" ", 1)[-1]
            name = next((f["path"] for f in send if f["sha256"] == sha), sha)
            raise HostError(ctx.host, f"upload of {name} failed: {res.last_error_line()}")
    seconds = time.monotonic() - started
    if up.links or up.stale:
        ctx.t.run(hostfiles.make_links(ctx.paths.bundle_dir, up.links, up.stale))
    rate = total / seconds / 1e6 if seconds > 0 and total else 0.0
    return RoleResult(True, f"uploaded {human_bytes(total)} ({len(send)} of {up.total} files, "
                            f"sha256 verified on the host) in {seconds:.1f}s, {rate:.0f} MB/s{note}",
                      {"bytes": total, "files": len(send), "seconds": seconds})
