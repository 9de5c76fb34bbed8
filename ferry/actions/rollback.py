"""``rollback``: switch hosts back to an earlier release, bring it up, verify."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..controller.inventory import Inventory
from ..errors import FerryError, HostError
from ..host import containers
from ..host.releases import read_releases
from ..host.session import HostSession, guarded
from ..host.verify import settle_seconds, verify_host
from ..model.stack import Stack, load_stack
from ..roles import RoleContext, RoleResult, load_role
from ..ui import UI
from . import engines
from .common import stack_hosts
from .deploy import HostReport, checks_line, load_release


def rollback(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, to: str | None, sets: dict[str, Any],
             ui: UI, lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """``rollback``: switch each host back to ``to`` (default: the release before
    ``current``), ``compose up``, verify.

    Before touching anything it checks, on every selected host, that the target release
    exists and that all its images are present; then it locks every host.

    Raises:
        FerryError: no target on a host, the target's images are missing, a held lock.
    """
    stack = load_stack(stack_dir)
    engine = engines.for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        return engine.rollback(inventory_path, pattern, stack_dir, to, sets, ui, lock_wait, message)
    reports = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        plans = {}
        for s in sessions:
            history, target = rollback_target(s, to)
            have = containers.parse_images(s.t.run(containers.docker_images()).out)
            missing = sorted(target.image_ids - set(have))
            if missing:
                raise HostError(s.name, f"release {target.id} needs images that are gone: "
                                        f"{', '.join(m[:19] for m in missing)}")
            plans[s.name] = (history.current, target)
        version = ",".join(sorted({t.version for _, t in plans.values()}))
        with guarded(sessions, stack.name, "rollback", version, message, lock_wait) as change:
            for s in sessions:
                report = _rollback_host(s, stack, ui, *plans[s.name])
                change.done(s.name, report.status, f"from {plans[s.name][0]}"
                            + (f": {report.error}" if report.error else ""), report.release,
                            plans[s.name][1].version)
                reports.append(report)
    return reports


def rollback_target(s: HostSession, to: str | None):
    """``(history, target release)`` of a rollback on the host of ``s``: ``to``, or the
    release before ``current``.

    Raises:
        HostError: no such release, none before current, or it is current already.
    """
    history = read_releases(s.t, s.paths.stack_dir)
    target = history.get(to) if to else history.previous()
    if target is None:
        known = ", ".join(r.id for r in history.releases) or "none"
        raise HostError(s.name, f"no release {to!r} to roll back to" if to else
                        f"no release before the current one ({history.current}); releases: {known}")
    if target.id == history.current:
        raise HostError(s.name, f"{target.id} is already the current release")
    return history, target


def _rollback_host(s: HostSession, stack: Stack, ui: UI, current: str | None, target) -> HostReport:
    report = HostReport(s.name, release=target.id)
    ctx = RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui)
    started = time.monotonic()
    try:
        load_release(ctx, target.id, current)
        result = load_role("compose-up").run(ctx)
        report.results.append(("compose-up", result, time.monotonic() - started))
        report.checks = verify_host(s.t, stack, s.paths.current, settle_seconds(s.vars))
        line = checks_line(report.checks)
        seconds = time.monotonic() - started
        report.results.append(("rollback", RoleResult(True, f"{current} -> {target.id} in {seconds:.1f}s; {line}",
                                                      {"seconds": seconds}), seconds))
        ui.host_line(s.name, "rollback", f"{current} -> {target.id} (version {target.version}): "
                                         f"{result.summary}; {line}", True)
        if not all(c.ok for c in report.checks):
            raise HostError(s.name, line)
        try:        # scheduled backups follow the release that runs (a warning, not a failed rollback)
            backup = load_role("backup").install(ctx)
            if backup.changed:
                ui.host_line(s.name, "backup", backup.summary, True)
        except FerryError as exc:
            ui.warn(f"{s.name}: backup settings of {target.id} not written: {exc}")
    except HostError as exc:
        report.status, report.error = "failed", str(exc)
    return report
