"""``rollback``: switch hosts back to an earlier release, bring it up, verify."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..controller.inventory import Inventory
from ..errors import FerryError, HostError
from ..host import containers
from ..host.releases import (composes_command, parse_composes, parse_target_config, read_releases,
                             read_releases_command, target_config_command)
from ..host.session import HostSession, each_host, guarded, raise_first_error
from ..host.verify import settle_seconds, verify_host
from ..model.compose import ComposeModel, parse_model
from ..model.releases import Release
from ..model.stack import Stack, load_stack
from ..roles import RoleContext, RoleResult, load_role
from ..ui import UI
from . import engines
from .common import stack_hosts
from .deploy import HostReport, after_up_facts, checks_line, next_release


def rollback(inventory_path: Inventory | Path, pattern: str, stack_dir: Path, to: str | None, sets: dict[str, Any],
             ui: UI, lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """``rollback``: switch each host back to ``to`` (default: the release before
    ``current``), ``compose up``, verify.

    Every host at once: one round trip takes its lock and reads its releases, images
    and containers; before anything changes, every host must have the target release
    (its compose file) and all its images, or the locks are given back and nothing was
    done. That round trip also reads Compose's model of the release a rollback would
    pick (``to``, else the one before ``current``). Then one round trip activates the
    target and, once it is up, reads everything verification and the backup role read;
    the last writes the audit line and ``up.json`` and releases the lock: 3 round trips
    per host (one more when the model could not be read ahead).

    Raises:
        FerryError: no target on a host, the target's images are missing, a held lock.
    """
    stack = load_stack(stack_dir)
    engine = engines.for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        return engine.rollback(inventory_path, pattern, stack_dir, to, sets, ui, lock_wait, message)
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        plans: dict[str, tuple[str | None, Release, ComposeModel | None]] = {}

        def facts(s: HostSession) -> list[list[str]]:
            # read under the lock, in the round trip that takes it; compose-up then
            # finds the project's containers among them, and verification the model
            return [read_releases_command(s.paths.stack_dir), composes_command(s.paths.stack_dir),
                    containers.docker_images(), containers.project_containers(stack.name),
                    target_config_command(s.paths.stack_dir, stack.name, to)]

        def refuse(s: HostSession) -> None:
            history, target = rollback_target(s, to)
            if target.id not in parse_composes(s.t.run(composes_command(s.paths.stack_dir)).stdout):
                raise HostError(s.name, f"release {target.id} has no compose.yml under {s.paths.stack_dir}")
            have = containers.parse_images(s.t.run(containers.docker_images()).out)
            missing = sorted(target.image_ids - set(have))
            if missing:
                raise HostError(s.name, f"release {target.id} needs images that are gone: "
                                        f"{', '.join(m[:19] for m in missing)}")
            rid, doc = parse_target_config(s.t.run(target_config_command(s.paths.stack_dir, stack.name, to),
                                                    check=False).stdout)
            plans[s.name] = (history.current, target, parse_model(doc) if rid == target.id and doc else None)

        with guarded(sessions, stack.name, "rollback", "", message, lock_wait,
                     facts=facts, refuse=refuse) as change:
            def one(s: HostSession) -> HostReport:
                current, target, model = plans[s.name]
                report = _rollback_host(s, stack, ui, current, target, model)
                change.done(s.name, report.status, f"from {current}" + (f": {report.error}" if report.error else ""),
                            report.release, target.version)
                return report
            done = each_host(sessions, one)          # every host at once
            raise_first_error(done)
        for s in sessions:                           # the lock's release included
            done[s.name].round_trips = s.round_trips
    return [done[s.name] for s in sessions]


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


def _rollback_host(s: HostSession, stack: Stack, ui: UI, current: str | None, target,
                   model: ComposeModel | None) -> HostReport:
    report = HostReport(s.name, release=target.id)
    ctx = RoleContext(s.name, s.t, s.vars, None, stack, s.paths, ui)
    started = time.monotonic()
    try:
        next_release(ctx, target.id, current)
        ctx.state.model = model     # None: compose-up reads it with the containers once the release is up
        ctx.state.after_up = after_up_facts(ctx, ["compose-up", "backup"], True, model)
        result = load_role("compose-up").run(ctx)
        report.results.append(("compose-up", result, time.monotonic() - started))
        report.checks = verify_host(s.t, stack, s.paths.current, settle_seconds(s.vars), model=model)
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
