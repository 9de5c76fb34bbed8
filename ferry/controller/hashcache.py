"""sha256 of controller files, cached by identity so that re-checking a bundle is fast.

Every deploy hashes every bundle file it uses. Hashing 400 MB takes about a second, so
the digest of a file is remembered under its device and inode together with its size,
modification time and status-change time (nanoseconds): any write to the file, a
``touch``, a rename over it or a new hard link changes one of them (``ctime`` cannot be
set back from user space), and the file is hashed again. The cache is one JSON file,
``<cache_dir>/sha256-cache.json`` (:func:`ferry.resources.cache_dir`), merged under a
``flock`` and replaced atomically, so concurrent runs keep each other's entries; a
damaged or foreign cache file is ignored, never trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

HASH_BLOCK = 4 << 20
"""Bytes read per block while hashing (4 MiB)."""

_MAX_ENTRIES = 20000


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in :data:`HASH_BLOCK` pieces; ``progress(nbytes)``
    after each (no cache)."""
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


def _identity(st: os.stat_result) -> tuple[str, list[int]]:
    return f"{st.st_dev}:{st.st_ino}", [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class HashCache:
    """Digests of files by (device, inode) and (size, mtime, ctime).

    Args:
        path: the cache file (default ``<cache_dir>/sha256-cache.json``).
    """

    def __init__(self, path: Path | None = None):
        if path is None:
            from ..resources import cache_dir
            path = cache_dir() / "sha256-cache.json"
        self.path = Path(path)
        self._lock = threading.Lock()
        self._dirty = False
        self._new: dict[str, list] = {}
        try:
            data = json.loads(self.path.read_text())
            self._entries: dict[str, list] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._entries = {}

    def sha256(self, path: Path, progress: Callable[[int], None] | None = None) -> str:
        """The hex sha256 of ``path``, from the cache when the file is unchanged since
        it was last hashed; ``progress(nbytes)`` is called for bytes actually read.

        Raises:
            OSError: the file cannot be read.
        """
        key, stamp = _identity(os.stat(path))
        with self._lock:
            hit = self._entries.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp and isinstance(hit[3], str):
            return hit[3]
        digest = sha256_file(path, progress)
        key2, stamp2 = _identity(os.stat(path))
        if (key2, stamp2) == (key, stamp):          # not changed while it was read
            with self._lock:
                self._entries[key] = self._new[key] = [*stamp, digest]
                self._dirty = True
        return digest

    def link(self, src: Path, dst: Path) -> str:
        """Hard-link ``src`` to ``dst`` (copy when the file system refuses a link) and
        return the digest, remembered for ``dst`` too: a new link changes the inode's
        ctime, and the content it was hashed for is the same.

        Raises:
            OSError: ``src`` cannot be read or ``dst`` written.
        """
        digest = self.sha256(src)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
            return self.sha256(dst)
        self.remember(dst, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Record ``digest`` for ``path`` as it is now: for a file just written, renamed
        or linked by the caller, who knows its content's digest."""
        key, stamp = _identity(os.stat(path))
        with self._lock:
            self._entries[key] = self._new[key] = [*stamp, digest]
            self._dirty = True

    def save(self) -> None:
        """Merge what this process learnt into the cache file (under an exclusive
        ``flock``, so concurrent Ferry runs keep each other's entries; atomic rename;
        errors ignored: the cache only saves time)."""
        with self._lock:
            if not self._dirty:
                return
            mine = dict(self._new)
            self._new.clear()
            self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    on_disk = json.loads(self.path.read_text())
                    on_disk = on_disk if isinstance(on_disk, dict) else {}
                except (OSError, ValueError):
                    on_disk = {}
                on_disk.update(mine)
                entries = dict(list(on_disk.items())[-_MAX_ENTRIES:])
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".sha256-cache.")
                with os.fdopen(fd, "w") as fh:
                    json.dump(entries, fh)
                os.replace(tmp, self.path)
        except OSError:
            pass
