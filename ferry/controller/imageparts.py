"""Images as their parts on the controller: config and layer blobs named by digest.

``docker save`` (engine 20.10) writes ``manifest.json`` (``Config``, ``RepoTags``,
``Layers``), the image config ``<id>.json`` and one uncompressed ``<v1-id>/layer.tar``
per layer. A bundle keeps the same parts, content-addressed as an OCI layout does::

    blobs/sha256/<hex>   the config (its sha256 is the image ID) and each layer,
                         gzip-compressed or not (its sha256 is the blob's, the
                         layer's diff ID is the sha256 of the uncompressed tar)

A layer or config already in another bundle of the same ``dist/`` (any stack, any
version) is hard-linked from there instead of being saved and compressed again: a new
version in which one image changed costs that image's ``docker save`` and the
compression of its new layers only, and an unchanged image costs no ``docker save`` at
all. Compression is gzip (``docker load`` on 20.10 refuses zstd), made deterministic
(:func:`_gzip_stream`): the same layer content is the same blob digest in every bundle,
version and build, so a host never receives again a layer it holds under another name.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import FerryError
from .hashcache import HashCache

BLOB_DIR = "blobs/sha256"
COMPRESSIONS = ("gzip", "none")
READ_BLOCK = 1 << 20


@dataclass
class ReuseIndex:
    """Blobs already in bundles of a ``dist/`` directory.

    Attributes:
        configs: ``{image ID: path of its config blob}``.
        layers: ``{(diff_id, media): (blob path, manifest layer entry)}``.
    """

    configs: dict[str, Path] = field(default_factory=dict)
    layers: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def scan(cls, dist: Path, skip: Path | None = None) -> "ReuseIndex":
        """Index every format-2 bundle under ``dist`` (except ``skip``); bundles whose
        manifest does not load are ignored."""
        from .bundle import load_bundle
        index = cls()
        for mpath in sorted(Path(dist).glob("*/manifest.json")):
            if skip is not None and mpath.parent == skip:
                continue
            try:
                b = load_bundle(mpath.parent)
            except FerryError:
                continue
            if b.format != 2:
                continue
            for image in b.manifest["images"]:
                index.configs.setdefault(image["id"], b.path / image["config"])
                for layer in image["layers"]:
                    index.layers.setdefault((layer["diff_id"], layer["media"]), (b.path / layer["blob"], layer))
        return index

    def add(self, other: "ReuseIndex") -> None:
        """Also offer ``other``'s blobs (this index's own win where both have one)."""
        for image_id, path in other.configs.items():
            self.configs.setdefault(image_id, path)
        for k, v in other.layers.items():
            self.layers.setdefault(k, v)


def _usable(path: Path, size: int | None, sha: str, cache: HashCache) -> bool:
    """A blob to link from: present, the expected size, and its content matches its name."""
    try:
        return path.is_file() and (size is None or path.stat().st_size == size) and cache.sha256(path) == sha
    except OSError:
        return False


#: Input bytes per independently compressed piece of a layer (see :func:`_gzip_stream`).
GZIP_PIECE = 1 << 20
#: The deflate window: each piece is compressed with the previous piece's last 32 KiB
#: as its dictionary, so pieces lose almost nothing against one long stream.
GZIP_WINDOW = 1 << 15
#: gzip header: magic, deflate, no flags, MTIME 0, no extra flags, OS 255 ("unknown"):
#: nothing in it depends on the time, the file or the machine (RFC 1952, 2.3).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: The deflate stream's last block: empty, final, fixed Huffman (RFC 1951, 3.2.6).
DEFLATE_END = b"\x03\x00"


def _deflate_piece(piece: bytes, window: bytes, level: int) -> bytes:
    """Raw deflate of ``piece`` primed with ``window``, ended with a sync flush (byte
    aligned, not final), so that pieces concatenate into one deflate stream."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY,
                            **({"zdict": window} if window else {}))
    return comp.compress(piece) + comp.flush(zlib.Z_SYNC_FLUSH)


def _gzip_stream(src, dest: Path, level: int, threads: int | None = None) -> str:
    """Compress the file object ``src`` into ``dest`` as gzip; return the hex sha256 of
    the UNcompressed bytes.

    The output depends only on the input bytes, ``level`` and zlib's deflate (1.2.x):
    the same layer gives the same blob, hence the same digest, in every bundle and build
    on any controller, whatever the number of ``threads`` or the time. It is one gzip
    member (:data:`GZIP_HEADER`, one deflate stream, CRC-32 and size, RFC 1952) made the
    way pigz makes its own: the input is cut into :data:`GZIP_PIECE`-byte pieces, each
    deflated on its own (in parallel: zlib releases the GIL) with the previous 32 KiB as
    its dictionary and ended with a sync flush; an empty final block closes the stream.
    ``gzip -d``, Go's ``compress/gzip`` (``docker load``) and Python's ``gzip`` read it.

    Args:
        src: a binary file object (read in :data:`GZIP_PIECE`-byte pieces).
        dest: the file to write (replaced).
        level: zlib level 1-9.
        threads: pieces compressed at once (default: the controller's CPUs).
    """
    from concurrent.futures import ThreadPoolExecutor
    import os
    h = hashlib.sha256()
    crc, size, window = 0, 0, b""
    threads = max(1, threads or os.cpu_count() or 1)
    with open(dest, "wb") as out, ThreadPoolExecutor(threads) as pool:
        out.write(GZIP_HEADER)
        pending = []
        while piece := src.read(GZIP_PIECE):
            h.update(piece)
            crc, size = zlib.crc32(piece, crc), size + len(piece)
            pending.append(pool.submit(_deflate_piece, piece, window, level))
            window = piece[-GZIP_WINDOW:] if len(piece) >= GZIP_WINDOW else (window + piece)[-GZIP_WINDOW:]
            while len(pending) > 2 * threads:
                out.write(pending.pop(0).result())
        for job in pending:
            out.write(job.result())
        out.write(DEFLATE_END + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return h.hexdigest()


def _copy_stream(src, dest: Path) -> str:
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        while block := src.read(READ_BLOCK):
            h.update(block)
            out.write(block)
    return h.hexdigest()


@dataclass
class ImageParts:
    """One image as written into a bundle.

    Attributes:
        entry: its manifest ``images`` entry (without ``service``).
        saved: a ``docker save`` was needed (the image was not in any earlier bundle).
        compressed: ``(layers compressed, uncompressed bytes, compressed bytes, seconds)``.
        linked: blobs hard-linked from earlier bundles.
    """

    entry: dict[str, Any]
    saved: bool = False
    compressed: tuple[int, int, int, float] = (0, 0, 0, 0.0)
    linked: int = 0


def write_image(ref: str, info: dict[str, Any], root: Path, index: ReuseIndex, cache: HashCache,
                compress: str = "gzip", level: int = 6,
                save: Callable[[str, Path], None] | None = None) -> ImageParts:
    """Put the image ``ref`` into the bundle being built at ``root`` as blobs.

    Args:
        ref: image reference.
        info: from ``docker image inspect``: ``id`` (``sha256:<hex>``), ``tags``,
            ``size`` (bytes), ``diff_ids`` (``RootFS.Layers``).
        root: the bundle directory (``blobs/sha256/`` is created in it).
        index: blobs of earlier bundles (:meth:`ReuseIndex.scan`).
        cache: digest cache (linked blobs are checked against their names through it).
        compress: ``gzip`` or ``none``.
        level: gzip level 1-9.
        save: ``save(ref, tar_path)`` writes ``docker save`` output (default: the local
            engine's ``docker save -o``).

    Returns:
        The image's parts (its manifest entry and what it cost).

    Raises:
        FerryError: ``docker save`` failed, or its output does not match the image's ID
            or diff IDs.
    """
    if compress not in COMPRESSIONS:
        raise FerryError(f"--compress: {compress!r} is not one of {', '.join(COMPRESSIONS)}")
    if not 1 <= int(level) <= 9:
        raise FerryError(f"--level: {level} is not a gzip level (1-9)")
    media = "gzip" if compress == "gzip" else "tar"
    blobs = root / BLOB_DIR
    blobs.mkdir(parents=True, exist_ok=True)
    image_hex = info["id"].split(":", 1)[1]
    parts = ImageParts(entry={})
    layers: list[dict[str, Any] | None] = []
    for diff_id in info["diff_ids"]:
        found = index.layers.get((diff_id, media))
        if found and _usable(found[0], found[1]["size"], found[1]["blob"].rsplit("/", 1)[1], cache):
            layers.append(dict(found[1]))
        else:
            layers.append(None)
    config_src = index.configs.get(info["id"])
    have_config = config_src is not None and _usable(config_src, None, image_hex, cache)
    if have_config and all(layers):
        parts.linked += _link(config_src, blobs / image_hex, cache)
        for layer, diff_id in zip(layers, info["diff_ids"]):
            src = index.layers[(diff_id, media)][0]
            parts.linked += _link(src, root / layer["blob"], cache)
    else:
        layers = _save_and_split(ref, info, root, index, cache, media, int(level), layers, parts, save)
    parts.entry = {"ref": ref, "id": info["id"], "tags": info["tags"], "size": info["size"],
                   "config": f"{BLOB_DIR}/{image_hex}", "layers": layers}
    return parts


def _link(src: Path, dst: Path, cache: HashCache) -> int:
    if dst.exists():
        return 0
    cache.link(src, dst)
    return 1


def _save_and_split(ref: str, info: dict[str, Any], root: Path, index: ReuseIndex, cache: HashCache,
                    media: str, level: int, layers: list, parts: ImageParts,
                    save: Callable[[str, Path], None] | None) -> list[dict[str, Any]]:
    """``docker save`` the image and write its config and the layers not reusable."""
    blobs = root / BLOB_DIR
    tmp = root.parent / f".{root.name}.save.tar"
    if save is None:
        from .localdocker import docker

        def save(r: str, path: Path) -> None:
            docker("save", "-o", str(path), r)
    save(ref, tmp)
    parts.saved = True
    try:
        with tarfile.open(tmp, "r:") as tar:
            saved = json.loads(_member(tar, "manifest.json", ref).read())
            if len(saved) != 1:
                raise FerryError(f"docker save {ref}: expected one image, found {len(saved)}")
            config = _member(tar, saved[0]["Config"], ref).read()
            image_hex = info["id"].split(":", 1)[1]
            if hashlib.sha256(config).hexdigest() != image_hex:
                raise FerryError(f"docker save {ref}: its config is not image {info['id'][:19]} (changed meanwhile?)")
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            if diff_ids != info["diff_ids"] or len(saved[0]["Layers"]) != len(diff_ids):
                raise FerryError(f"docker save {ref}: layers differ from docker image inspect")
            (blobs / image_hex).write_bytes(config)
            out = []
            count, raw, packed, started = 0, 0, 0, time.monotonic()
            for i, (member_name, diff_id) in enumerate(zip(saved[0]["Layers"], diff_ids)):
                if layers[i] is not None:
                    parts.linked += _link(index.layers[(diff_id, media)][0], root / layers[i]["blob"], cache)
                    out.append(layers[i])
                    continue
                member = tar.getmember(member_name)
                part = blobs / f".layer-{i}.part"
                src = tar.extractfile(member)
                assert src is not None
                digest = _gzip_stream(src, part, level) if media == "gzip" else _copy_stream(src, part)
                if "sha256:" + digest != diff_id:
                    raise FerryError(f"docker save {ref}: layer {i} does not hash to its diff ID {diff_id[:19]}")
                blob_sha = cache.sha256(part)
                size = part.stat().st_size
                final = blobs / blob_sha
                if final.exists():
                    part.unlink()
                else:
                    part.rename(final)
                    cache.remember(final, blob_sha)
                count, raw, packed = count + 1, raw + member.size, packed + size
                entry = {"blob": f"{BLOB_DIR}/{blob_sha}", "diff_id": diff_id, "media": media, "size": size}
                index.layers.setdefault((diff_id, media), (final, entry))
                out.append(entry)
            parts.compressed = (count, raw, packed, time.monotonic() - started)
            index.configs.setdefault(info["id"], blobs / image_hex)
            return out
    finally:
        tmp.unlink(missing_ok=True)


def _member(tar: tarfile.TarFile, name: str, ref: str):
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise FerryError(f"docker save {ref}: {name} missing from its output")
    return f
