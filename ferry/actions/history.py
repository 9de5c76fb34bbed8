"""``releases`` and ``audit``: what ran on each host, and who changed what (read only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..controller.inventory import Inventory
from ..host import audit
from ..host.releases import read_releases
from ..model.stack import load_stack
from .common import stack_hosts


def releases_table(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[list[str]]:
    """Rows ``host, release, version, created, by, current`` for ``releases``."""
    stack = load_stack(stack_dir)
    rows = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            history = read_releases(s.t, s.paths.stack_dir)
            for r in history.releases:
                rows.append([s.name, r.id, r.version, str(r.info.get("created", "")), str(r.info.get("by", "")),
                             "current" if r.id == history.current else ""])
    return rows


def audit_entries(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any],
                  lines: int) -> list[tuple[str, dict[str, Any]]]:
    """The last ``lines`` audit records of each host, as ``(host, record)``."""
    stack = load_stack(stack_dir)
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            for rec in audit.parse(s.t.run(audit.tail_command(s.paths.root, lines)).out):
                out.append((s.name, rec))
    return out
