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
match; a mismatch stops the deploy. The same receiver then lays the bundle out under
``bundles/<stack>-<version>/`` as symlinks to the store files the host holds (link
lines after the files, in the same stream).
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
class HostFiles:
    """The host's side of an upload (:func:`gather`).

    Attributes:
        store: sha256 names in its store (less any found damaged).
        links: the bundle directory's symlinks ``{relpath: target}``.
        checked: sha256 of the files re-hashed in the same round trip.
    """

    store: set[str]
    links: dict[str, str]
    checked: set[str]


@dataclass
class UploadPlan:
    """What upload-bundle does on one host.

    Attributes:
        send: manifest entries to stream (each sha256 once).
        links: ``{bundle path: store path}`` symlinks to create or fix.
        stale: symlinks under the bundle's directory that it no longer has (a rebuilt
            bundle of the same version), removed.
        recheck: image or installer files already in the store that this run uses
            (re-hashed on the host before they are used).
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


def _is_payload(path: str, image_paths: set[str]) -> bool:
    """Image blobs and installer files: used by some hosts only."""
    return path.startswith("docker/") or path in image_paths


def _image_paths(bundle) -> set[str]:
    images = bundle.manifest["images"]
    if bundle.format == 1:
        return {i["file"] for i in images}
    return {i["config"] for i in images} | {l["blob"] for i in images for l in i["layers"]}


def _always(ctx: RoleContext) -> list[dict]:
    """The bundle files every host uses (stack copy, manifest, checksums, signature)."""
    payload = _image_paths(ctx.bundle)
    return [f for f in ctx.bundle.all_files() if not _is_payload(f["path"], payload)]


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only commands :func:`gather` reads, gathered ahead by deploy with every
    other role's in ONE round trip (:mod:`ferry.host.facts`): the store listing, the
    bundle's links, the engine's images (with their layers) and the re-hash of the store
    files every host uses."""
    p = ctx.paths
    return [hostfiles.list_dir(p.store), hostfiles.list_links(p.bundle_dir), containers.engine_images(),
            hostfiles.check_store(p.store, [(f["sha256"], f["size"]) for f in _always(ctx)])]


def gather(ctx: RoleContext) -> HostFiles:
    """The host's side (:func:`facts`; answered from what deploy gathered, else asked one
    by one): the store listing, the bundle's links, the engine's images, and the
    re-check of the store files every host uses: damaged ones are removed there and
    count as absent."""
    listing, links, engine, check = (ctx.t.run(c).out for c in facts(ctx))
    checked = hostfiles.parse_check_store(check)
    damaged = {s for s, state in checked.items() if state == "damaged"}
    always = _always(ctx)
    for f in always:
        if f["sha256"] in damaged:
            ctx.ui.warn(f"{ctx.host}: store file for {f['path']} was damaged on the host: sending it again")
    ctx.state.engine = containers.parse_engine_images(engine)
    return HostFiles(set(hostfiles.parse_lines(listing)) - damaged, hostfiles.parse_links(links),
                     {f["sha256"] for f in always})


def used_files(ctx: RoleContext) -> tuple[list[dict], dict[str, int]]:
    """The bundle files this host will use (see the module docstring), and the bytes
    left out per reason (``installer``, ``layers``). Needs ``ctx.state.engine``."""
    installer = load_role("install-docker-offline")
    if ctx.state.host_facts is None:
        installer.preflight(ctx)
    docker_needed = set(installer.files_needed(ctx))
    images = ctx.bundle.manifest["images"]
    image_paths = _image_paths(ctx.bundle)
    if ctx.bundle.format == 1:
        wanted_images = {i["file"] for i in images if i["id"] not in ctx.state.engine.tags}
    else:
        wanted_images = set(plan_load(images, ctx.state.engine).blobs)
    used, skipped = [], {"installer": 0, "layers": 0}
    for f in ctx.bundle.all_files():
        path = f["path"]
        if path.startswith("docker/") and path not in docker_needed:
            skipped["installer"] += f["size"]
        elif path in image_paths and path not in wanted_images:
            skipped["layers"] += f["size"]
        else:
            used.append(f)
    return used, skipped


def plan(ctx: RoleContext) -> UploadPlan:
    """Decide what to send and link on this host, from facts (:func:`gather`, and the
    installer's facts from its preflight)."""
    p = ctx.paths
    host = gather(ctx)
    used, skipped = used_files(ctx)
    send, recheck, seen = [], [], set()
    for f in used:
        if f["sha256"] in seen:
            continue
        seen.add(f["sha256"])
        if f["sha256"] not in host.store:
            send.append(f)
        elif f["sha256"] not in host.checked:
            recheck.append(f)
    held = host.store | seen
    want = {f["path"]: f"{p.store}/{f['sha256']}" for f in ctx.bundle.all_files() if f["sha256"] in held}
    links = {rel: target for rel, target in want.items() if host.links.get(rel) != target}
    stale = sorted(set(host.links) - {f["path"] for f in ctx.bundle.all_files()})
    return UploadPlan(send, links, stale, recheck, len(used), len(ctx.bundle.all_files()), skipped)


def upload_stream(root: Path, files: list[dict], progress: Callable[[int], None] | None = None,
                  block: int = 1 << 20, links: dict[str, str] | None = None,
                  stale: list[str] | None = None) -> Iterator[bytes]:
    """The byte stream :func:`ferry.host.files.receive_files` reads: per file
    ``"<sha256> <size>\\n"`` and its bytes (read from ``root/<path>`` in ``block``-byte
    pieces), then ``END 0``, then one ``LINK <sha256> <relpath>`` line per symlink of
    ``links`` (``{relpath: sha256}``) and ``UNLINK <relpath>`` per path of ``stale``.

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
    tail = ["END 0"] + [f"UNLINK {rel}" for rel in stale or []] + \
        [f"LINK {sha} {rel}" for rel, sha in sorted((links or {}).items())]
    yield ("\n".join(tail) + "\n").encode()


def recheck(ctx: RoleContext, entries: list[dict]) -> list[dict]:
    """Re-hash on the host the store files this run will use; return the entries that
    are missing or damaged there (removed by the check, to be sent again)."""
    if not entries:
        return []
    bad = hostfiles.parse_check_store(
        ctx.t.run(hostfiles.check_store(ctx.paths.store, [(f["sha256"], f["size"]) for f in entries])).out)
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
    # one remote command: the receiver, then (only when every file checked out) the links
    receiver = hostfiles.receive_files(ctx.paths.store, ctx.paths.bundle_dir)
    links = {rel: target.rsplit("/", 1)[1] for rel, target in up.links.items()}
    if send:
        with ctx.ui.transfer(f"{ctx.host} upload", total) as advance:
            res = ctx.t.send(receiver, upload_stream(ctx.bundle.path, send, advance, links=links, stale=up.stale),
                             check=False)
    else:
        res = ctx.t.run(receiver, input=b"".join(upload_stream(ctx.bundle.path, [], links=links, stale=up.stale)),
                        check=False)
    if not res.ok:
        sha = res.last_error_line().rsplit(" ", 1)[-1]
        name = next((f["path"] for f in send if f["sha256"] == sha), sha)
        raise HostError(ctx.host, f"upload of {name} failed: {res.last_error_line()}")
    seconds = time.monotonic() - started
    rate = total / seconds / 1e6 if seconds > 0 and total else 0.0
    return RoleResult(True, f"uploaded {human_bytes(total)} ({len(send)} of {up.total} files, "
                            f"sha256 verified on the host) in {seconds:.1f}s, {rate:.0f} MB/s{note}",
                      {"bytes": total, "files": len(send), "seconds": seconds})
