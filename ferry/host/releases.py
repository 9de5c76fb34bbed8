"""Reading a stack's release history from a host: one command and its parser."""

from __future__ import annotations

import json
import posixpath

from ..model.releases import History, Release
from .files import parse_tar
from .shell import q, sh


def read_releases_command(stack_dir: str) -> list[str]:
    """One command: ``readlink current`` on the first line, then a tar stream of every
    release's ``release.json`` and ``manifest.json``."""
    return sh(f"cd {q(stack_dir)} 2>/dev/null || exit 0; readlink current || echo; "
                  "set -- releases/*/release.json releases/*/manifest.json; "
                  "for f; do [ -e \"$f\" ] || shift; done; [ $# -eq 0 ] || tar -cf - -- \"$@\"")


def parse_releases(stdout: bytes) -> History:
    """Parse :func:`read_releases_command` output."""
    first, _, rest = stdout.partition(b"\n")
    current = posixpath.basename(first.decode().strip()) or None
    files = parse_tar(rest)
    by_id: dict[str, Release] = {}
    for path, data in files.items():
        parts = path.split("/")
        if len(parts) != 3 or parts[0] != "releases":
            continue
        rel = by_id.setdefault(parts[1], Release(parts[1]))
        doc = json.loads(data or b"{}")
        if parts[2] == "release.json":
            rel.info = doc
        elif parts[2] == "manifest.json":
            rel.image_ids = {i["id"] for i in doc.get("images", [])}
            rel.file_shas = {f["sha256"] for f in doc.get("files", [])}
    return History(sorted(by_id.values(), key=lambda r: r.id), current)


def read_releases(t, stack_dir: str) -> History:
    """The release history of the stack under ``stack_dir`` on the host behind ``t``."""
    return parse_releases(t.run(read_releases_command(stack_dir)).stdout)
