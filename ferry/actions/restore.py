"""``restore``: put a stack back as a backup holds it, then verify it like a deploy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import FerryError
from ..host.session import guarded
from ..host.verify import Check, settle_seconds, verify_host
from ..model.backup import RestoreRequest, check_backup_id
from ..model.stack import load_stack
from ..roles import load_role
from ..ui import UI
from .backup import context
from . import engines
from .common import current_compose, stack_hosts


def restore(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
            backup: str = "latest", local: Path | None = None, safety: bool = True,
            lock_wait: float = 0.0, message: str = "") -> list[dict[str, Any]]:
    """Restore the stack on every selected host under its lock (the ``restore`` role),
    then run the same verification as ``inv verify``.

    Returns:
        Per host: the program's summary (``restored``, ``release``, ``safety``...),
        ``host``, ``wall_seconds`` and ``checks`` (:class:`ferry.host.verify.Check`).

    Raises:
        FerryError: bad input, unreachable host, held lock; HostError: the program's
            error line (a damaged member is named and nothing was changed).
    """
    engine = engines.for_selection(inventory_path, pattern, load_stack(stack_dir), sets)
    if engine is not None:
        return engine.restore(inventory_path, pattern, stack_dir, sets, ui, backup, local, safety, lock_wait, message)
    stack = load_stack(stack_dir)
    if local is None:
        check_backup_id(backup, stack.name)
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions, \
            guarded(sessions, stack.name, "restore", message=message, wait=lock_wait) as change:
        for s in sessions:
            ctx = context(s, stack, ui)
            ctx.state.restore_request = RestoreRequest(backup, local, safety, change.tokens.get(s.name))
            started = time.monotonic()
            with ui.console.status(f"{s.name}: restoring {local.name if local else backup}"):
                try:
                    result = load_role("restore").run(ctx)
                except FerryError as exc:
                    change.done(s.name, "failed", f"{local or backup}: {exc}")
                    raise
            summary = {"host": s.name, **result.metrics, "wall_seconds": time.monotonic() - started}
            ui.info(f"{s.name}: restored {summary.get('restored')} (release {summary.get('release')}) in "
                    f"{summary['wall_seconds']:.1f} s, every compose up with --pull never"
                    + (f"; the state before is backup {summary['safety']}" if summary.get("safety") else ""))
            checks = verify_current(s, stack)
            if any(not ch.ok for ch in checks):
                # services without a healthcheck count once they ran a settle time: give it
                time.sleep(settle_seconds(s.vars))
                checks = verify_current(s, stack)
            bad = [ch for ch in checks if not ch.ok]
            ui.info(f"{s.name}: verify: " + (f"{len(checks)} checks passed" if not bad else
                    "; ".join(f"{ch.kind} {ch.target}: {ch.detail}" for ch in bad)))
            change.done(s.name, "ok" if not bad else "failed", str(summary.get("restored")), summary.get("release"))
            summary["checks"] = checks
            out.append(summary)
    return out


def verify_current(s, stack) -> list[Check]:
    """:func:`ferry.host.verify.verify_host` on the host's current release, as ``inv verify``."""
    current_compose(s, stack.name)            # no current release: one clear error
    return verify_host(s.t, stack, s.paths.current, settle_seconds(s.vars))
