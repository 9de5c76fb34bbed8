"""``lock.status`` and ``lock.release``: who holds a stack's lock; clearing a dead run's lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..controller.inventory import Inventory
from ..host import audit, lock
from ..model.stack import load_stack
from ..ui import UI
from .common import stack_hosts


def lock_status(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any]) -> list[tuple[str, dict | None]]:
    """``(host, lock info or None)`` per host."""
    stack = load_stack(stack_dir)
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        return [(s.name, lock.read(s.t, s.paths.root, stack.name)) for s in sessions]


def lock_release(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI) -> int:
    """Remove the stack's lock on each host whoever holds it (audited). Returns how many
    locks were removed."""
    stack = load_stack(stack_dir)
    removed = 0
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            info = lock.read(s.t, s.paths.root, stack.name)
            if info is None:
                ui.info(f"{s.name}: {stack.name} is not locked")
                continue
            ui.warn(f"{s.name}: removing the lock {lock.describe(info)}; if that run is still alive, "
                    f"it and the next deploy may now interleave")
            s.t.run(lock.release_command(lock.lock_dir(s.paths.root, stack.name), None))
            audit.record(s.t, s.paths.root, audit.entry("lock.release", stack.name, str(info.get("version", "")),
                                                        None, "ok", f"removed lock {lock.describe(info)}"))
            removed += 1
    return removed
