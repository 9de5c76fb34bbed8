"""upload-bundle: send the bundle files the host lacks, verified, into the store.

Files are content-addressed on the host (``store/<sha256>``), so a file already there
from any earlier bundle is not sent again. The missing files go in ONE stream over SSH
to one receiver on the host (``ferry.host.files.receive_files``), which hashes each file while
writing it and renames it into place only when size and sha256 match; a mismatch stops
the deploy. The bundle's own layout is then recreated under
``bundles/<stack>-<version>/`` as symlinks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from ferry.errors import FerryError, HostError
from ferry.roles import RoleContext, RoleResult
from ferry.ui import human_bytes
from ferry.host import files as hostfiles


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only commands :func:`plan` reads (gathered ahead by deploy): the store
    listing and the bundle's links."""
    return [hostfiles.list_dir(ctx.paths.store), hostfiles.list_links(ctx.paths.bundle_dir)]


def plan(ctx: RoleContext) -> tuple[list[dict], dict[str, str], int]:
    """Return (files to send, links to make, number of bundle files) for this host, from two facts (the store
    listing may already be in ``ctx.state.store_listing``, gathered by deploy)."""
    p = ctx.paths
    present = ctx.state.store_listing
    if present is None:
        present = set(hostfiles.parse_lines(ctx.t.run(hostfiles.list_dir(p.store)).out))
    files = ctx.bundle.all_files()
    missing, seen = [], set()
    for f in files:
        if f["sha256"] not in present and f["sha256"] not in seen:
            missing.append(f)
            seen.add(f["sha256"])
    want = {f["path"]: f"{p.store}/{f['sha256']}" for f in files}
    have = hostfiles.parse_links(ctx.t.run(hostfiles.list_links(p.bundle_dir)).out)
    links = {rel: target for rel, target in want.items() if have.get(rel) != target}
    return missing, links, len(files)


def upload_stream(root: Path, files: list[dict], progress: Callable[[int], None] | None = None,
                  block: int = 1 << 20) -> Iterator[bytes]:
    """The byte stream ``ferry.host.files.receive_files`` reads: per file ``"<sha256> <size>\\n"``
    and its bytes (read from ``root/<path>`` in ``block``-byte pieces), then ``END 0``.

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


def run(ctx: RoleContext) -> RoleResult:
    """Upload what the host lacks in one verified stream, then link the bundle; see the module docstring."""
    missing, links, count = plan(ctx)
    total = sum(f["size"] for f in missing)
    if not missing and not links:
        return RoleResult(False, f"uploaded 0 B (all {count} files already on the host)",
                          {"bytes": 0, "files": 0})
    if ctx.check:
        return RoleResult(True, f"would upload {human_bytes(total)} ({len(missing)} of {count} files)",
                          {"bytes": total, "files": len(missing)})
    started = time.monotonic()
    if missing:
        with ctx.ui.transfer(f"{ctx.host} upload", total) as advance:
            res = ctx.t.send(hostfiles.receive_files(ctx.paths.store),
                             upload_stream(ctx.bundle.path, missing, advance), check=False)
        if not res.ok:
            sha = res.last_error_line().rsplit(" ", 1)[-1]
            name = next((f["path"] for f in missing if f["sha256"] == sha), sha)
            raise HostError(ctx.host, f"upload of {name} failed: {res.last_error_line()}")
    seconds = time.monotonic() - started
    if links:
        ctx.t.run(hostfiles.make_links(ctx.paths.bundle_dir, links))
    rate = total / seconds / 1e6 if seconds > 0 and total else 0.0
    return RoleResult(True, f"uploaded {human_bytes(total)} ({len(missing)} of {count} files, "
                            f"sha256 verified on the host) in {seconds:.1f}s, {rate:.0f} MB/s",
                      {"bytes": total, "files": len(missing), "seconds": seconds})
