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
4. per host, the roles in :data:`ferry.roles.DEPLOY_ROLES`, then verification.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import commands as cmd
from .bundle import Bundle, find_bundle, load_bundle
from .errors import FerryError, HostError
from .facts import parse_lines, parse_tar
from .inventory import Host, Inventory, merge_vars
from .paths import HostPaths
from .roles import DEPLOY_ROLES, RoleContext, RoleResult, all_role_defaults, load_role
from .stack import Stack, load_stack, render, template_context
from .transport.ssh import connect_host
from .ui import UI, human_bytes
from .verify import Check, verify_host


@dataclass
class Plan:
    """What a deploy will do, resolved on the controller before any host is contacted."""

    inventory: Inventory
    hosts: list[Host]
    bundle: Bundle
    stack: Stack
    host_vars: dict[str, dict[str, Any]]

    def paths(self, host: str) -> HostPaths:
        return HostPaths(str(self.host_vars[host]["ferry_root"]), self.stack.name, self.bundle.name)


@dataclass
class HostReport:
    """Per-host outcome: role results in order, verification checks, wall times (s)."""

    host: str
    results: list[tuple[str, RoleResult, float]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    def metric(self, key: str) -> int:
        return sum(int(r.metrics.get(key, 0)) for _, r, _ in self.results)


def host_variables(inventory: Host, stack: Stack, sets: dict[str, Any]) -> dict[str, Any]:
    """Merged variables for one host: role defaults < stack defaults < group/host vars < --set."""
    return merge_vars(all_role_defaults(), stack.defaults, inventory.vars, sets)


def prepare(inventory_path: Path, pattern: str, stack_name: str, bundle_path: Path | None,
            dist: Path, sets: dict[str, Any]) -> Plan:
    """Phase 1 (no host contact). See the module docstring.

    Raises:
        FerryError: any bad input (inventory, host pattern, bundle, stack, templates).
    """
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    bundle = load_bundle(bundle_path or find_bundle(dist, stack_name))
    if bundle.stack_name != stack_name:
        raise FerryError(f"{bundle.path}: bundle is for stack '{bundle.stack_name}', not '{stack_name}'")
    stack = bundle.stack()
    host_vars = {h.name: host_variables(h, stack, sets) for h in hosts}
    plan = Plan(inventory, hosts, bundle, stack, host_vars)
    for h in hosts:
        placeholders = {k: "(generated on the host)" for k in stack.generated_secrets}
        context = template_context(host_vars[h.name], stack, plan.paths(h.name).for_templates(),
                                   placeholders, h.name)
        render(stack, context, h.name)
    return plan


def connect_all(plan: Plan, ui: UI) -> dict[str, Any]:
    """Phase 2: an SSH transport per host; on any failure close the others and raise."""
    transports: dict[str, Any] = {}
    try:
        for h in plan.hosts:
            transports[h.name] = connect_host(h, plan.inventory)
    except FerryError:
        for t in transports.values():
            t.close()
        raise
    return transports


def check_bundle_files(plan: Plan, transports: dict[str, Any], ui: UI) -> dict[str, set[str]]:
    """Phase 3: list each host's store; verify locally every file some host lacks.

    Returns:
        ``{host: {sha256 already in its store}}`` (handed to upload-bundle).
    """
    listings = {}
    for name, t in transports.items():
        listings[name] = set(parse_lines(t.run(cmd.list_dir(plan.paths(name).store)).out))
    needed = {f["path"] for f in plan.bundle.files()
              if any(f["sha256"] not in have for have in listings.values())}
    if needed:
        total = sum(f["size"] for f in plan.bundle.files() if f["path"] in needed)
        with ui.transfer("checking bundle sha256", total) as advance:
            plan.bundle.verify(needed, advance)
    return listings


def deploy(plan: Plan, ui: UI, check: bool = False, roles: list[str] | None = None,
           do_verify: bool = True) -> list[HostReport]:
    """Run the deploy roles on every host of ``plan`` (sequentially), then verify.

    Args:
        plan: from :func:`prepare`.
        ui: console.
        check: check mode (report what would change, change nothing).
        roles: role names (default :data:`DEPLOY_ROLES`).
        do_verify: run verification after the roles.

    Returns:
        One report per host. A host whose role raised has ``error`` set; the hosts
        after it are not touched.
    """
    transports = connect_all(plan, ui)
    reports = []
    roles = roles or DEPLOY_ROLES
    try:
        contexts = {h.name: RoleContext(h.name, transports[h.name], plan.host_vars[h.name], plan.bundle,
                                        plan.stack, plan.paths(h.name), ui, check) for h in plan.hosts}
        for ctx in contexts.values():
            for role in roles:
                preflight = getattr(load_role(role), "preflight", None)
                if preflight:
                    preflight(ctx)
        listings = check_bundle_files(plan, transports, ui)
        for h in plan.hosts:
            report = HostReport(h.name)
            reports.append(report)
            ctx = contexts[h.name]
            ctx.state["store_listing"] = listings[h.name]
            try:
                for role in roles:
                    started = time.monotonic()
                    result = load_role(role).run(ctx)
                    seconds = time.monotonic() - started
                    report.results.append((role, result, seconds))
                    ui.host_line(h.name, role, result.summary, result.changed)
                if do_verify and not check:
                    started = time.monotonic()
                    report.checks = verify_host(ctx.t, plan.stack, ctx.state["rendered"]["compose.yml"],
                                                ctx.paths.current)
                    report.results.append(("verify", RoleResult(False, _checks_line(report.checks)),
                                           time.monotonic() - started))
                    ui.host_line(h.name, "verify", _checks_line(report.checks), False)
            except HostError as exc:
                report.error = str(exc)
                break
    finally:
        for t in transports.values():
            t.close()
    return reports


def _checks_line(checks: list[Check]) -> str:
    bad = [c for c in checks if not c.ok]
    if not bad:
        return f"{len(checks)} checks passed"
    return f"{len(bad)} of {len(checks)} checks FAILED: " + "; ".join(f"{c.kind} {c.target}: {c.detail}" for c in bad)


def summary_lines(reports: list[HostReport]) -> list[str]:
    """One line per host: what changed (bytes uploaded, images loaded, containers recreated)."""
    out = []
    for r in reports:
        if r.error:
            out.append(f"{r.host}: FAILED: {r.error}")
            continue
        changed = [name for name, res, _ in r.results if res.changed]
        failed = [c for c in r.checks if not c.ok]
        out.append(f"{r.host}: uploaded {human_bytes(r.metric('bytes'))}, loaded {r.metric('images_loaded')} "
                   f"images, recreated {r.metric('recreated')} containers; "
                   + (f"changed: {', '.join(changed)}" if changed else "nothing changed")
                   + (f"; {len(failed)} checks FAILED" if failed else ""))
    return out


def verify_hosts(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any],
                 ui: UI) -> list[Check]:
    """``inv verify``: the checks of :func:`ferry.verify.verify_host` on each host's
    current release (its compose file read from the host).

    Raises:
        FerryError: bad input, unreachable host, or no current release on a host.
    """
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    stack = load_stack(stack_dir)
    plan = Plan(inventory, hosts, None, stack, {h.name: host_variables(h, stack, sets) for h in hosts})  # type: ignore[arg-type]
    checks: list[Check] = []
    for h in hosts:
        t = connect_host(h, inventory)
        try:
            paths = HostPaths(str(plan.host_vars[h.name]["ferry_root"]), stack.name, "")
            found = parse_tar(t.run(cmd.read_tar(paths.stack_dir, ["current/compose.yml"])).stdout)
            if "current/compose.yml" not in found:
                raise HostError(h.name, f"no current release of '{stack.name}' under {paths.stack_dir}")
            checks += verify_host(t, stack, found["current/compose.yml"], paths.current)
        finally:
            t.close()
    return checks
