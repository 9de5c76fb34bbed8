"""Files on a host: command builders and, next to each, the parser of its output.

Builders are pure functions returning argument lists (see :mod:`ferry.host.shell`);
parsers are pure functions from the command's output to data. Nothing here does I/O.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from typing import Iterable, Sequence

from .shell import q, sh

HASH_STDIN = ("if command -v openssl >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; "
              "elif command -v python3 >/dev/null 2>&1; then h() { python3 -c "
              + shlex.quote("import hashlib,sys\nh=hashlib.sha256()\n"
                            "for b in iter(lambda: sys.stdin.buffer.read(1<<20), b''): h.update(b)\n"
                            "print(h.hexdigest())")
              + "; }; else h() { sha256sum; }; fi")
"""Shell snippet defining ``h``: sha256 of stdin, hex first. OpenSSL's CLI and Python's
hashlib use the CPU's SHA instructions (780 MB/s measured on a sandbox host); coreutils'
``sha256sum`` is generic C (103 MB/s there), kept as the last resort."""


def receive_files(store: str) -> list[str]:
    """Receive a stream of files into ``store``, each kept only if size and sha256 match.

    Stream format (built by :func:`upload-bundle's upload_stream`), per file: a header line
    ``<sha256> <size>\\n`` then exactly ``size`` bytes; then ``END 0\\n``. Each file goes
    through ``tee`` into ``<store>/<sha256>.part`` while being hashed (hashing overlaps
    the transfer) and is renamed to ``<store>/<sha256>`` only when it checks out. Exit
    status 3: a digest mismatch; 4: a short file (disk full, cut stream); 5: a malformed
    header. The failing file's name is on stderr; files before it are kept (verified).

    Args:
        store: absolute directory on the host.
    """
    st = q(store)
    return sh(
        f"{HASH_STDIN}; set -e; mkdir -p {st}; "
        "while read -r sha size; do "
        "[ \"$sha\" = END ] && exit 0; "
        "case \"$sha$size\" in *[!0-9a-f]*|'') echo 'malformed upload stream header' >&2; exit 5;; esac; "
        f"part={st}/\"$sha\".part; "
        "sum=$(head -c \"$size\" | tee \"$part\" | h | cut -c1-64); "
        "if [ \"$(stat -c %s \"$part\")\" != \"$size\" ]; then rm -f \"$part\"; "
        "echo \"short file (disk full or cut stream): $sha\" >&2; exit 4; fi; "
        "if [ \"$sum\" != \"$sha\" ]; then rm -f \"$part\"; "
        "echo \"sha256 mismatch after transfer: $sha\" >&2; exit 3; fi; "
        f"mv -f \"$part\" {st}/\"$sha\"; "
        "done; echo 'upload stream ended without END' >&2; exit 4")


def check_store(store: str) -> list[str]:
    """Re-hash store files before they are used: stdin names them, ``<sha256> <size>``
    per line; stdout gets ``<sha256> missing`` or ``<sha256> damaged`` for each that is
    absent or whose size or sha256 differs (a damaged file is removed, so it is sent
    again). Hashing is OpenSSL's where available (see :data:`HASH_STDIN`).

    Args:
        store: absolute directory on the host.
    """
    return sh(f"{HASH_STDIN}; cd {q(store)} 2>/dev/null || exit 0; "
              "while read -r sha size; do "
              "case \"$sha$size\" in *[!0-9a-f]*|'') continue;; esac; "
              "if [ ! -f \"$sha\" ]; then echo \"$sha missing\"; "
              "elif [ \"$(stat -c %s \"$sha\")\" != \"$size\" ] || [ \"$(h < \"$sha\" | cut -c1-64)\" != \"$sha\" ]; "
              "then rm -f \"$sha\"; echo \"$sha damaged\"; fi; done")


def parse_check_store(text: str) -> dict[str, str]:
    """``{sha256: "missing"|"damaged"}`` from :func:`check_store`."""
    out = {}
    for line in parse_lines(text):
        sha, _, state = line.partition(" ")
        out[sha] = state
    return out


def write_file(path: str, mode: int = 0o644) -> list[str]:
    """Write stdin to ``path`` atomically with ``mode`` (octal int, e.g. ``0o600``).

    The temporary file is created under ``umask 077`` so a secret is never readable by
    others, even for a moment; then chmod and rename.
    """
    tmp = path + ".tmp"
    d = path.rsplit("/", 1)[0] or "/"
    return sh(f"set -e; umask 077; mkdir -p {q(d)}; cat > {q(tmp)}; "
              f"chmod {mode:04o} {q(tmp)}; mv -f {q(tmp)} {q(path)}")


def list_dir(path: str) -> list[str]:
    """Names of the regular files directly in ``path``, one per line (nothing if absent)."""
    return sh(f"[ -d {q(path)} ] && find {q(path)} -maxdepth 1 -type f -printf '%f\\n' || true")


def parse_lines(text: str) -> list[str]:
    """Non-empty stripped lines (for :func:`ferry.host.files.list_dir`)."""
    return [l.strip() for l in text.splitlines() if l.strip()]


def list_dir_sizes(path: str) -> list[str]:
    """``NAME<TAB>SIZE`` (bytes) of the regular files directly in ``path`` (nothing if absent)."""
    return sh(f"[ -d {q(path)} ] && find {q(path)} -maxdepth 1 -type f -printf '%f\\t%s\\n' || true")


def parse_sizes(text: str) -> dict[str, int]:
    """``{name: size in bytes}`` from :func:`ferry.host.files.list_dir_sizes`."""
    out = {}
    for line in parse_lines(text):
        name, _, size = line.rpartition("\t")
        if name and size.isdigit():
            out[name] = int(size)
    return out


def list_links(path: str) -> list[str]:
    """``RELPATH TARGET`` for every symlink under ``path``, one per line (nothing if absent)."""
    return sh(f"[ -d {q(path)} ] && find {q(path)} -type l -printf '%P %l\\n' || true")


def parse_links(text: str) -> dict[str, str]:
    """``{relpath: target}`` from :func:`ferry.host.files.list_links`."""
    out = {}
    for line in parse_lines(text):
        rel, _, target = line.partition(" ")
        out[rel] = target
    return out


def make_links(base: str, links: dict[str, str], remove: Sequence[str] = ()) -> list[str]:
    """Create (or replace) symlinks ``base/RELPATH -> TARGET`` for every item of
    ``links``; remove the symlinks ``base/RELPATH`` of ``remove`` (``rm -f``: only
    links, never followed)."""
    parts = ["set -e"]
    if remove:
        parts.append("rm -f -- " + " ".join(q(base + "/" + rel) for rel in sorted(remove)))
    dirs = sorted({(base + "/" + rel).rsplit("/", 1)[0] for rel in links})
    if dirs:
        parts.append("mkdir -p " + " ".join(q(d) for d in dirs))
    for rel, target in sorted(links.items()):
        parts.append(f"ln -sfn {q(target)} {q(base + '/' + rel)}")
    return sh("; ".join(parts))


def read_tar(base: str, paths: Sequence[str]) -> list[str]:
    """A tar stream on stdout of the files ``paths`` (relative to ``base``) that exist.

    Missing files are skipped silently; a missing ``base`` gives an empty stream. Paths
    through symlinks (``current/compose.yml``) are read as the files they point to.
    """
    quoted = " ".join(q(p) for p in paths)
    return sh(f"cd {q(base)} 2>/dev/null || exit 0; "
              f"set --; for f in {quoted}; do [ -e \"$f\" ] && set -- \"$@\" \"$f\"; done; "
              f"[ $# -eq 0 ] || tar -chf - -- \"$@\"")


def parse_tar(data: bytes) -> dict[str, bytes]:
    """``{path: content}`` of the regular files in a tar stream (:func:`ferry.host.files.read_tar`)."""
    if not data:
        return {}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                out[member.name] = f.read()
    return out


def switch_symlink(link: str, target: str) -> list[str]:
    """Point ``link`` at ``target`` atomically: a new symlink renamed over the old one
    (``mv -T``), as Capistrano switches ``current``."""
    tmp = link + ".new"
    return sh(f"set -e; ln -sfn {q(target)} {q(tmp)}; mv -T -f {q(tmp)} {q(link)}")


def mkdirs(paths: Iterable[str], mode: int | None = None) -> list[str]:
    """``mkdir -p`` (with ``-m MODE`` when given) for every path."""
    argv = ["mkdir", "-p"]
    if mode is not None:
        argv += ["-m", f"{mode:04o}"]
    return argv + ["--", *paths]
