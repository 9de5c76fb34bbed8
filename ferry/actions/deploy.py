"""``inv deploy`` and ``inv verify``: the order of work, and where each check happens.

Deploy runs in phases so that bad input changes nothing on any host:

1. controller only: inventory, host selection, bundle manifest, stack definition,
   variables, and a trial render of every template for every host (an undefined
   variable stops here, before any connection);
2. connect to every selected host (unreachable hosts and unknown or changed host keys
   stop here), run every role's read-only ``preflight`` (no systemd, wrong CPU
   architecture...) and list each host's store;
3. check the sha256 of every bundle file some host is missing against the manifest
   (a damaged bundle stops here);
4. per host (batches: ``--serial``), the roles in :data:`ferry.roles.DEPLOY_ROLES`
   with verification before ``prune-releases``; a failed health gate switches the
   host back to its previous release.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..controller.bundle import Bundle, find_bundle, load_bundle
from ..controller.inventory import Host, Inventory
from ..errors import FerryError, HostError
from ..host import containers, files
from ..host.session import Change, HostSession, guarded, open_hosts
from ..host.transport.ssh import connect_host
from ..host.verify import Check, verify_host
from ..model.paths import HostPaths
from ..model.render import check_template_variables, render, template_context
from ..model.stack import Stack
from ..roles import DEPLOY_ROLES, RoleContext, RoleResult, load_role
from ..ui import UI, human_bytes
from .common import declarations, host_variables, unknown_variable_warnings


@dataclass
class Plan:
    """What a deploy will do, resolved on the controller before any host is contacted."""

    inventory: Inventory
    hosts: list[Host]
    bundle: Bundle
    stack: Stack
    host_vars: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def paths(self, host: str) -> HostPaths:
        """Paths on ``host`` for this plan's stack and bundle (``ferry_root`` from its vars)."""
        return HostPaths(str(self.host_vars[host]["ferry_root"]), self.stack.name, self.bundle.name)


@dataclass
class HostReport:
    """Per-host outcome: role results in order, verification checks, wall times (s).

    Attributes:
        status: ``ok``, ``failed``, ``rolled-back`` (failed, previous release serving
            again), ``stopped`` (failed with nothing to return to) or ``skipped`` (not
            touched: an earlier batch failed).
    """

    host: str
    results: list[tuple[str, RoleResult, float]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    status: str = "ok"
    release: str | None = None

    def metric(self, key: str) -> int:
        """Sum of metric ``key`` over the host's role results (bytes, images_loaded...)."""
        return sum(int(r.metrics.get(key, 0)) for _, r, _ in self.results)

    @property
    def failed(self) -> bool:
        """True unless the host's status is ``ok``."""
        return self.status != "ok"


def prepare(inventory_path: Path, pattern: str, stack_name: str, bundle_path: Path | None,
            dist: Path, sets: dict[str, Any], known: Iterable[str] = ()) -> Plan:
    """Phase 1 (no host contact). See the module docstring.

    Args:
        known: variable names other stacks of the project declare: set in the
            inventory, they are not reported as unknown (:attr:`Plan.warnings`).

    Raises:
        FerryError: any bad input (inventory, host pattern, bundle, stack, variables,
            templates).
    """
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    bundle = load_bundle(bundle_path or find_bundle(dist, stack_name))
    if bundle.stack_name != stack_name:
        raise FerryError(f"{bundle.path}: bundle is for stack '{bundle.stack_name}', not '{stack_name}'")
    stack = bundle.stack()
    check_template_variables(stack, declarations(stack).names())
    host_vars = {h.name: host_variables(h, stack, sets) for h in hosts}
    plan = Plan(inventory, hosts, bundle, stack, host_vars,
                unknown_variable_warnings(hosts, stack, sets, set(known)))
    for h in hosts:
        placeholders = {k: "(generated on the host)" for k in stack.generated_secrets}
        context = template_context(host_vars[h.name], stack, plan.paths(h.name).for_templates(),
                                   placeholders, h.name)
        render(stack, context, h.name)
    return plan


def check_bundle_files(plan: Plan, sessions: list[HostSession], ui: UI) -> dict[str, set[str]]:
    """Phase 3: list each host's store; verify locally every file some host lacks.

    Returns:
        ``{host: {sha256 already in its store}}`` (handed to upload-bundle).
    """
    listings = {}
    for s in sessions:
        listings[s.name] = set(files.parse_lines(s.t.run(files.list_dir(s.paths.store)).out))
    needed = {f["path"] for f in plan.bundle.files()
              if any(f["sha256"] not in have for have in listings.values())}
    if needed:
        total = sum(f["size"] for f in plan.bundle.files() if f["path"] in needed)
        with ui.transfer("checking bundle sha256", total) as advance:
            plan.bundle.verify(needed, advance)
    return listings


def deploy(plan: Plan, ui: UI, check: bool = False, roles: list[str] | None = None,
           do_verify: bool = True, serial: int = 0, max_fail: float = 0.0,
           lock_wait: float = 0.0, message: str = "") -> list[HostReport]:
    """Run the deploy roles on the hosts of ``plan``, then verify each host.

    Hosts run in parallel (one batch) by default; ``serial=N`` rolls out in batches of N
    hosts, the first batch being the canary: a failure there stops the rest. After any
    batch, if more than ``max_fail`` percent of all hosts failed, the rest are not
    touched (Ansible's ``max_fail_percentage``). A host whose ``compose up`` or
    verification fails is switched back to its previous release (or its stack stopped
    when there is none).

    Args:
        plan: from :func:`prepare`.
        ui: console.
        check: check mode (report what would change, change nothing, take no lock).
        roles: role names (default :data:`DEPLOY_ROLES`).
        do_verify: run verification after the roles.
        serial: batch size (0: all hosts at once).
        max_fail: percent of hosts allowed to fail before the rollout stops.
        lock_wait: seconds to wait for a held deploy lock.
        message: recorded in the lock and the audit log.

    Returns:
        One report per selected host, in inventory order.

    Raises:
        FerryError: before any change (unreachable host, preflight, held lock, bundle).
    """
    roles = roles or DEPLOY_ROLES
    reports = {h.name: HostReport(h.name, status="skipped") for h in plan.hosts}
    with open_hosts(plan.hosts, lambda h: plan.host_vars[h.name], lambda name, v: plan.paths(name),
                    lambda h: connect_host(h, plan.inventory)) as sessions:
        contexts = {s.name: RoleContext(s.name, s.t, s.vars, plan.bundle, plan.stack, s.paths, ui, check)
                    for s in sessions}
        for ctx in contexts.values():
            for role in roles:
                preflight = getattr(load_role(role), "preflight", None)
                if preflight:
                    preflight(ctx)
        with guarded(sessions, plan.stack.name, "deploy", plan.bundle.version, message, lock_wait,
                     check) as change:
            listings = check_bundle_files(plan, sessions, ui)
            for ctx in contexts.values():
                ctx.state["store_listing"] = listings[ctx.host]
            names = [h.name for h in plan.hosts]
            size = serial if serial and serial > 0 else len(names)
            batches = [names[i:i + size] for i in range(0, len(names), size)]
            failed = 0
            for index, batch in enumerate(batches):
                if len(batch) == 1:
                    done = [deploy_host(contexts[batch[0]], roles, do_verify, change=change)]
                else:
                    with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                        done = list(pool.map(lambda n: deploy_host(contexts[n], roles, do_verify, parallel=True,
                                                                   change=change), batch))
                for report in done:
                    reports[report.host] = report
                failed += sum(r.failed for r in done)
                reason = stop_reason(index, len(batches), failed, len(names), max_fail)
                if reason:
                    untouched = sum(len(b) for b in batches[index + 1:])
                    ui.warn(f"{reason}: {untouched} hosts not touched")
                    break
            for name, report in reports.items():
                if report.status == "skipped":
                    change.done(name, "skipped", "not touched: an earlier batch failed")
    return [reports[h.name] for h in plan.hosts]


def stop_reason(index: int, batches: int, failed: int, total: int, max_fail: float) -> str | None:
    """Why the rollout stops after batch ``index`` (0-based), or None to go on.

    The first of several batches is the canary: any failure in it stops the rollout.
    After any batch, more than ``max_fail`` percent of ``total`` hosts failed stops it
    (Ansible's ``max_fail_percentage``). Nothing stops after the last batch.
    """
    if index >= batches - 1 or not failed:
        return None
    if index == 0:
        return f"canary batch failed ({failed} hosts)"
    if failed * 100.0 / total > max_fail:
        return f"{failed} of {total} hosts failed (more than {max_fail:g}%)"
    return None


def deploy_host(ctx: RoleContext, roles: list[str], do_verify: bool, parallel: bool = False,
                change: Change | None = None) -> HostReport:
    """Run ``roles`` on one host, verification after ``compose-up``, and
    ``prune-releases`` (if listed) only once verification passed. A failed ``compose up``
    or verification switches back to the previous release (see :func:`revert`). Records
    the outcome in the host's audit log. Reports :class:`HostError` instead of raising."""
    report = HostReport(ctx.host)
    if parallel:
        ctx.ui = ctx.ui.for_parallel(ctx.host)
    main = [r for r in roles if r != "prune-releases"]
    health_phase = False
    try:
        for role in main:
            health_phase = health_phase or role == "compose-up"
            _run_role(ctx, report, role)
        if do_verify and not ctx.check:
            started = time.monotonic()
            report.checks = verify_host(ctx.t, ctx.stack, ctx.state["rendered"]["compose.yml"], ctx.paths.current)
            line = checks_line(report.checks)
            report.results.append(("verify", RoleResult(False, line), time.monotonic() - started))
            ctx.ui.host_line(ctx.host, "verify", line, False)
            failing = sorted({c.target.split()[0] for c in report.checks if not c.ok})
            if failing:
                load_role("compose-up").show_logs(ctx, failing)
                raise HostError(ctx.host, line)
        report.release = ctx.state.get("release")
        if "prune-releases" in roles:
            _run_role(ctx, report, "prune-releases")
    except HostError as exc:
        report.error = str(exc)
        report.status = "failed"
        if health_phase and not ctx.check:
            revert(ctx, report)
    if change is not None:
        change.done(ctx.host, report.status, report.error or "", report.release, ctx.bundle.version)
    return report


def _run_role(ctx: RoleContext, report: HostReport, role: str) -> None:
    started = time.monotonic()
    result = load_role(role).run(ctx)
    report.results.append((role, result, time.monotonic() - started))
    ctx.ui.host_line(ctx.host, role, result.summary, result.changed)


def revert(ctx: RoleContext, report: HostReport) -> None:
    """After a failed health gate: switch ``current`` back to the release that was current
    before this deploy, bring it up and verify it; with no previous release, stop the
    stack (``docker compose down``). Sets ``report.status``."""
    previous = ctx.state.get("previous_release")
    project, current = ctx.stack.name, ctx.paths.current
    if not previous or previous == ctx.state.get("release"):
        ctx.ui.warn(f"{ctx.host}: no previous release to return to: stopping {project}")
        ctx.t.run(containers.compose(project, f"{current}/compose.yml", current, "down"), check=False, timeout=300)
        report.status = "stopped"
        report.error = f"{report.error}; no previous release: stack stopped"
        return
    ctx.ui.warn(f"{ctx.host}: rolling back to {previous}")
    try:
        switch_release(ctx, previous)
        result = load_role("compose-up").run(ctx)
        ctx.ui.host_line(ctx.host, "rollback", f"back on {previous}: {result.summary}", True)
        checks = verify_host(ctx.t, ctx.stack, ctx.state["rendered"]["compose.yml"], current)
        ok = all(c.ok for c in checks)
        ctx.ui.host_line(ctx.host, "verify", checks_line(checks), False)
        report.status = "rolled-back" if ok else "failed"
        report.release = previous
        report.error = f"{report.error}; rolled back to {previous}" + ("" if ok else " (which ALSO fails verification)")
    except HostError as exc:
        report.error = f"{report.error}; rollback to {previous} failed too: {exc}"


def switch_release(ctx: RoleContext, rid: str) -> None:
    """Point ``current`` at ``releases/<rid>`` (atomic rename) and load its compose file
    into ``ctx.state`` for compose-up and verification."""
    ctx.t.run(files.switch_symlink(ctx.paths.current, f"releases/{rid}"))
    found = files.parse_tar(ctx.t.run(files.read_tar(ctx.paths.stack_dir, ["current/compose.yml"])).stdout)
    ctx.state.update(rendered={"compose.yml": found["current/compose.yml"]}, release=rid,
                     release_changed=True)


def checks_line(checks: list[Check]) -> str:
    """``11 checks passed`` or which checks failed, one line."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return f"{len(checks)} checks passed"
    return f"{len(bad)} of {len(checks)} checks FAILED: " + "; ".join(f"{c.kind} {c.target}: {c.detail}" for c in bad)


def summary_lines(reports: list[HostReport]) -> list[str]:
    """One line per host: what changed (bytes uploaded, images loaded, containers recreated)."""
    out = []
    for r in reports:
        if r.status == "skipped":
            out.append(f"{r.host}: SKIPPED: not touched (an earlier batch failed)")
            continue
        if r.error:
            out.append(f"{r.host}: {r.status.upper()}: {r.error}")
            continue
        changed = [name for name, res, _ in r.results if res.changed]
        failed = [c for c in r.checks if not c.ok]
        out.append(f"{r.host}: uploaded {human_bytes(r.metric('bytes'))}, loaded {r.metric('images_loaded')} "
                   f"images, recreated {r.metric('recreated')} containers; "
                   + (f"changed: {', '.join(changed)}" if changed else "nothing changed")
                   + (f"; {len(failed)} checks FAILED" if failed else ""))
    return out
