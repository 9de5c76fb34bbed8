"""``inv deploy`` and ``inv verify``: the order of work, and where each check happens.

Deploy runs in phases so that bad input changes nothing on any host:

1. controller only: inventory, host selection, the bundle end to end (manifest
   schema, every file listed and nothing else, every file's sha256, the signature when
   ``ferry_bundle_signers`` is set), stack definition, variables, and a trial render of
   every template for every host (an undefined variable stops here, before any
   connection);
2. connect to every selected host at once (unreachable hosts and unknown or changed
   host keys stop here);
3. on every host at once, in ONE round trip: take the stack's lock and, under it,
   gather every fact the run will read (each role's ``facts``, the store listing,
   verification's first batch; :mod:`ferry.host.facts`), then run every role's
   read-only ``preflight`` (no systemd, wrong CPU architecture, a port another stack
   holds...) on those facts: a refusal releases the locks and changes nothing;
4. per host (batches: ``--serial``), the roles in :data:`ferry.roles.DEPLOY_ROLES`
   with verification before ``prune-releases``; a failed health gate switches the
   host back to its previous release. A role reads its facts from what was gathered
   until anything on the host changes (then it asks the host).
5. on every host at once, in one round trip: its audit line and the lock's release.

A no-op redeploy so costs 3 SSH round trips per host: the facts, verification's
health URLs and bind sources, the audit line (:attr:`HostReport.round_trips`).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..controller import composecli
from ..controller.bundle import Bundle, find_bundle, load_bundle
from ..controller.inventory import MAGIC_VARS, Host, Inventory, load_inventory
from ..errors import FerryError, HostError
from ..host import containers, files
from ..host.activate import ActivationFailed
from ..host.answers import AnswerError, on_host
from ..host.facts import prefetched
from ..host.session import Change, HostSession, guarded, open_hosts
from ..host.transport.ssh import ConnectionSpec, connect, connection_specs
from ..host.verify import Check, settle_seconds, verify_host
from ..host.verify import facts as verify_facts
from ..model.paths import HostPaths
from ..model.compose import ComposeModel
from ..model.render import check_template_variables, render_release, template_context
from ..model.stack import Stack
from ..roles import DEPLOY_ROLES, RoleContext, RoleResult, load_role
from ..ui import UI, human_bytes
from . import engines
from .common import declarations, host_variables, unknown_variable_warnings


@dataclass
class Plan:
    """What a deploy will do, resolved on the controller before any host is contacted
    (``models``: each host's Compose model from the trial render, for preflight)."""

    inventory: Inventory
    hosts: list[Host]
    bundle: Bundle
    stack: Stack
    host_vars: dict[str, dict[str, Any]]
    models: dict[str, ComposeModel] = field(default_factory=dict)
    specs: dict[str, ConnectionSpec] = field(default_factory=dict)
    """Each host's validated SSH connection (:func:`ferry.host.transport.ssh.connection_specs`)."""
    opener: Callable[[Host], Any] | None = None
    """Opens a host's transport instead of SSH (tests: a fake host)."""
    warnings: list[str] = field(default_factory=list)
    """Variables set that nothing declares (:func:`ferry.actions.common.unknown_variable_warnings`)."""

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
    round_trips: int = 0
    """Remote commands the run sent to the host, connection to audit line (each a round
    trip over SSH; the ``round_trips`` counter of its transport)."""

    def metric(self, key: str) -> int:
        """Sum of metric ``key`` over the host's role results (bytes, images_loaded...)."""
        return sum(int(r.metrics.get(key, 0)) for _, r, _ in self.results)

    @property
    def failed(self) -> bool:
        """True unless the host's status is ``ok``."""
        return self.status != "ok"


def prepare(inventory_path: Inventory | Path, pattern: str, stack_name: str, bundle_path: Path | None,
            dist: Path, sets: dict[str, Any], ui: UI | None = None, known: Iterable[str] = ()) -> Plan:
    """Phase 1 (no host contact). See the module docstring.

    The bundle is checked end to end here: manifest schema, the listing (every file
    listed, nothing else), the sha256 of every file (cached by file identity, see
    :mod:`ferry.controller.hashcache`) and, when any selected host's inventory sets
    ``ferry_bundle_signers``, the manifest's signature. Only then is the stack read
    from the bundle's ``stack/`` copy, and every host's variables are checked against
    their declarations (:func:`ferry.actions.common.host_variables`).

    Args:
        ui: console for the hashing progress (None: silent).
        known: variable names other stacks of the project declare: set in the
            inventory, they are not reported as unknown (:attr:`Plan.warnings`).

    Raises:
        FerryError: any bad input (inventory, host pattern, bundle, signature, stack,
            variables, templates).
    """
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(pattern)
    specs = connection_specs(hosts, inventory)
    bundle = load_bundle(bundle_path or find_bundle(dist, stack_name))
    if bundle.stack_name != stack_name:
        raise FerryError(f"{bundle.path}: bundle is for stack '{bundle.stack_name}', not '{stack_name}'")
    check_signature(bundle, inventory, hosts)
    total = sum(f["size"] for f in bundle.files())
    with (ui.transfer("checking bundle sha256", total) if ui else contextlib.nullcontext(None)) as advance:
        bundle.verify(progress=advance)
    stack = bundle.stack()
    check_template_variables(stack, declarations(stack).names() | set(MAGIC_VARS))
    host_vars = {h.name: host_variables(h, stack, sets) for h in hosts}
    plan = Plan(inventory, hosts, bundle, stack, host_vars, specs=specs,
                warnings=unknown_variable_warnings(hosts, stack, sets, set(known)))
    for h in hosts:
        placeholders = {k: "(generated on the host)" for k in stack.generated_secrets}
        context = template_context(host_vars[h.name], stack, plan.paths(h.name).for_templates(),
                                   placeholders, h.name)
        plan.models[h.name] = render_release(stack, context, h.name, composecli.resolver(bundle.path)).model
    return plan


def check_signature(bundle: Bundle, inventory: Inventory, hosts: list[Host]) -> list[str]:
    """Verify the bundle's signature against every ``ferry_bundle_signers`` file the
    selected hosts' inventory variables name (relative to the inventory file).

    Only the inventory is read for this (never the bundle's own stack defaults, nor
    ``--set``): the bundle must not choose who may sign it.

    Returns:
        The verified principals (empty when no host sets ``ferry_bundle_signers``).

    Raises:
        FerryError: unsigned, or signed by no allowed signer (names the host's file).
    """
    from ..controller.signing import verify_manifest
    files = {}
    for h in hosts:
        value = h.vars.get("ferry_bundle_signers")
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise FerryError(f"{h.name}: ferry_bundle_signers must be a file path, not {type(value).__name__}")
        files.setdefault(inventory.resolve_path(value), h.name)
    return [verify_manifest(bundle.path, signers) for signers in files]


def role_facts(ctx: RoleContext, roles: list[str]) -> list[list[str]]:
    """The read-only commands ``roles`` declare they read first on the host of ``ctx``
    (each role's ``facts(ctx)``, see :mod:`ferry.roles`), in role order."""
    out: list[list[str]] = []
    for role in roles:
        declared = getattr(load_role(role), "facts", None)
        if declared:
            out += declared(ctx)
    return out


def preflight_roles(ctx: RoleContext, roles: list[str], s: HostSession) -> None:
    """Every role's read-only ``preflight`` on the host of ``ctx`` (on the facts gathered
    under the lock).

    Raises:
        HostError: a role refuses the host (an unusable answer of the host, too).
    """
    for role in roles:
        preflight = getattr(load_role(role), "preflight", None)
        if preflight:
            with on_host(ctx.host):
                preflight(ctx)


def host_facts(ctx: RoleContext, roles: list[str], do_verify: bool) -> list[list[str] | str]:
    """Every read-only command a deploy of ``roles`` will read on the host of ``ctx``
    before it changes anything there (gathered in one round trip, see
    :mod:`ferry.host.facts`): where the project runs, each role's ``facts`` (upload-bundle's
    store listing, links, engine images and store re-check among them) and verification's
    first batch."""
    out: list[list[str] | str] = [containers.project_dirs(ctx.stack.name)]
    out += role_facts(ctx, roles)
    if do_verify and not ctx.check:
        out += verify_facts(ctx.stack, ctx.paths.current)
    return out


def foreign_project(s: HostSession, stack: str) -> str | None:
    """Where the Compose project ``stack`` already runs on the host if that is not under
    this deploy's stack directory (another ``ferry_root``, or a hand-made project of the
    same name), else None."""
    dirs = files.parse_lines(s.t.run(containers.project_dirs(stack), check=False).out)
    mine = s.paths.stack_dir.rstrip("/") + "/"
    other = [d for d in dirs if not (d.rstrip("/") + "/").startswith(mine)]
    return other[0] if other else None


def deploy(plan: Plan, ui: UI, check: bool = False, roles: list[str] | None = None,
           do_verify: bool = True, serial: int = 0, max_fail: float = 0.0,
           lock_wait: float = 0.0, message: str = "", force: bool = False) -> list[HostReport]:
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
        force: deploy even where the stack's Compose project already runs from another
            directory (another ``ferry_root``): it is taken over.

    Returns:
        One report per selected host, in inventory order.

    Raises:
        FerryError: before any change (unreachable host, preflight, held lock, bundle,
            the project running from elsewhere without ``force``).
    """
    engine = engines.for_plan(plan)
    if engine is not None:
        return engine.deploy(plan, ui, check=check, roles=roles, do_verify=do_verify, serial=serial,
                             max_fail=max_fail, lock_wait=lock_wait, message=message, force=force)
    roles = roles or DEPLOY_ROLES
    reports = {h.name: HostReport(h.name, status="skipped") for h in plan.hosts}
    with open_hosts(plan.hosts, lambda h: plan.host_vars[h.name], lambda name, v: plan.paths(name),
                    plan.opener or (lambda h: connect(plan.specs[h.name]))) as sessions:
        for s in sessions:
            s.t = prefetched(s.t)
        contexts = {s.name: RoleContext(s.name, s.t, s.vars, plan.bundle, plan.stack, s.paths, ui, check)
                    for s in sessions}
        for name, ctx in contexts.items():
            ctx.state.planned_model = plan.models.get(name)

        def refuse(s: HostSession) -> None:
            """Preflight on the gathered facts: where the project runs, every role's checks."""
            elsewhere = foreign_project(s, plan.stack.name)
            if elsewhere and not force:
                raise HostError(s.name, f"Compose project '{plan.stack.name}' already runs from {elsewhere}, "
                                        f"not under this deploy's {s.paths.stack_dir} (another ferry_root?): "
                                        f"refusing to take it over (--force to do it anyway)")
            preflight_roles(contexts[s.name], roles, s)

        try:
            _rollout(plan, sessions, contexts, reports, ui, roles, do_verify, serial, max_fail, lock_wait, message,
                     check, refuse)
        finally:
            for s in sessions:
                reports[s.name].round_trips = s.round_trips
    return [reports[h.name] for h in plan.hosts]


def _rollout(plan: Plan, sessions: list[HostSession], contexts: dict[str, RoleContext],
             reports: dict[str, HostReport], ui: UI, roles: list[str], do_verify: bool, serial: int,
             max_fail: float, lock_wait: float, message: str, check: bool, refuse) -> None:
    """The locked part of :func:`deploy`: facts and preflight, then the batches."""
    with guarded(sessions, plan.stack.name, "deploy", plan.bundle.version, message, lock_wait,
                 check, facts=lambda s: host_facts(contexts[s.name], roles, do_verify),
                 refuse=refuse) as change:
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
    ``prune-releases`` (if listed) only once verification passed.

    A release that does not come up healthy was already switched back by the host
    (``compose-up``); one that comes up but fails verification is switched back here
    (:func:`revert`). Records the outcome in ``change`` (the audit line). Reports
    :class:`HostError` instead of raising it."""
    report = HostReport(ctx.host)
    if parallel:
        ctx.ui = ctx.ui.for_parallel(ctx.host)
    main = [r for r in roles if r != "prune-releases"]
    activated = False
    ctx.state.after_up = after_up_facts(ctx, main, do_verify and not ctx.check)
    try:
        for role in main:
            _run_role(ctx, report, role)
            activated = activated or role == "compose-up"
        if do_verify and not ctx.check:
            started = time.monotonic()
            report.checks = verify_host(ctx.t, ctx.stack, ctx.paths.current, settle_seconds(ctx.vars))
            line = checks_line(report.checks)
            report.results.append(("verify", RoleResult(False, line), time.monotonic() - started))
            ctx.ui.host_line(ctx.host, "verify", line, False)
            failing = sorted({c.target.split()[0] for c in report.checks if not c.ok})
            if failing:
                show_logs(ctx, failing)
                raise HostError(ctx.host, line)
        report.release = ctx.state.release
        if "prune-releases" in roles:
            _run_role(ctx, report, "prune-releases")
    except ActivationFailed as exc:
        report.error = str(exc)
        report.status = {"reverted": "rolled-back", "stopped": "stopped"}.get(exc.result, "failed")
        if exc.result == "reverted":
            report.release = ctx.state.previous_release
            _verify_after_revert(ctx, report, ctx.state.previous_release)
    except (HostError, AnswerError) as exc:      # AnswerError: the host said something unusable
        report.error = str(exc) if isinstance(exc, HostError) else str(HostError(ctx.host, str(exc)))
        report.status = "failed"
        if (activated or ctx.state.activated) and not ctx.check:
            revert(ctx, report)
    if change is not None:
        change.done(ctx.host, report.status, report.error or "", report.release, ctx.bundle.version)
    return report


def after_up_facts(ctx: RoleContext, roles: list[str], do_verify: bool,
                   model: Any = None) -> list[list[str] | str]:
    """What compose-up reads in the round trip that activates a release, once it is up
    (``HostState.after_up``): verification's facts (its first batch; all of them when
    the host's ``model`` of the release is known, see :func:`ferry.host.verify.facts`)
    and the ``facts`` of ``roles`` that run after compose-up (the backup role's
    installed settings)."""
    later = roles[roles.index("compose-up") + 1:] if "compose-up" in roles else []
    return (verify_facts(ctx.stack, ctx.paths.current, model) if do_verify else []) + role_facts(ctx, later)


def _run_role(ctx: RoleContext, report: HostReport, role: str) -> None:
    started = time.monotonic()
    result = load_role(role).run(ctx)
    report.results.append((role, result, time.monotonic() - started))
    ctx.ui.host_line(ctx.host, role, result.summary, result.changed)


def show_logs(ctx: RoleContext, services: list[str]) -> None:
    """Print the state and last ``compose_failure_log_lines`` log lines of each of
    ``services`` of the current release."""
    p, project = ctx.paths, ctx.stack.name
    compose_file = f"{p.current}/compose.yml"
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    states = {c.service: c for c in containers.parse_compose_ps(
        ctx.t.run(containers.compose_ps(project, compose_file, p.current), check=False).out)}
    for service in services:
        c = states.get(service)
        state = f"{c.state}{'/' + c.health if c.health else ''}" if c else "absent"
        ctx.ui.warn(f"{ctx.host}: {service} is {state}; last {lines} log lines:")
        logs = ctx.t.run(containers.compose(project, compose_file, p.current, "logs", "--no-color",
                                            "--tail", str(lines), service), check=False)
        for line in (logs.out + logs.err).splitlines()[-lines:]:
            ctx.ui.info(f"    {line}")


def revert(ctx: RoleContext, report: HostReport) -> None:
    """After a release came up but failed verification: make the release that was current
    before this deploy the running one again and verify it; on a first deploy, remove the
    containers this deploy created (never others of the same project) and the
    ``current`` link. Sets ``report.status``."""
    state = ctx.state
    failed, previous = state.release, state.previous_release
    if not state.release_changed:
        return                                   # nothing was switched: nothing to undo
    if not previous:
        ctx.ui.warn(f"{ctx.host}: no previous release to return to: removing the containers this deploy created")
        stop_new(ctx)
        report.status = "stopped"
        report.error = f"{report.error}; no previous release: the containers it created were removed"
        return
    ctx.ui.warn(f"{ctx.host}: rolling back to {previous}")
    try:
        load_release(ctx, previous, failed)
        result = load_role("compose-up").run(ctx)
        ctx.ui.host_line(ctx.host, "rollback", f"back on {previous}: {result.summary}", True)
        report.release = previous
        report.status = "rolled-back"
        report.error = f"{report.error}; rolled back to {previous}"
        _verify_after_revert(ctx, report, previous)
    except HostError as exc:
        report.error = f"{report.error}; rollback to {previous} failed too: {exc}"


def _verify_after_revert(ctx: RoleContext, report: HostReport, previous: str | None) -> None:
    if not previous:
        return
    checks = verify_host(ctx.t, ctx.stack, ctx.paths.current, settle_seconds(ctx.vars))
    ctx.ui.host_line(ctx.host, "verify", checks_line(checks), False)
    if not all(c.ok for c in checks):
        report.status = "failed"
        report.error = f"{report.error} (which ALSO fails verification)"


def stop_new(ctx: RoleContext) -> None:
    """Remove the stack's containers that this run created (not in
    ``ctx.state.containers_before``) and the ``current`` link: a failed first deploy
    leaves nothing half-up and never touches containers it did not start."""
    now = containers.parse_project_containers(ctx.t.run(containers.project_containers(ctx.stack.name)).out)
    new = sorted(c.id for c in now.values() if c.id not in set(ctx.state.containers_before))
    if new:
        ctx.t.run(containers.remove_containers(new), check=False, timeout=300)
    ctx.t.run(["rm", "-f", "--", ctx.paths.current], check=False)


def load_release(ctx: RoleContext, rid: str, running: str | None) -> None:
    """Make ``releases/<rid>`` the release compose-up will activate: read its compose file
    into ``ctx.state``; ``running`` is what runs now (the release to return to if ``rid``
    fails).

    Raises:
        HostError: the release has no compose file on the host.
    """
    path = f"releases/{rid}/compose.yml"
    found = files.parse_tar(ctx.t.run(files.read_tar(ctx.paths.stack_dir, [path])).stdout)
    if path not in found:
        raise HostError(ctx.host, f"release {rid} has no compose.yml under {ctx.paths.stack_dir}")
    next_release(ctx, rid, running)
    ctx.state.rendered = {"compose.yml": found[path]}


def next_release(ctx: RoleContext, rid: str, running: str | None) -> None:
    """Make ``releases/<rid>`` (known to have its compose file) the release compose-up
    will activate, ``running`` the one to return to if it fails; asks the host nothing."""
    ctx.state.rendered = {}
    ctx.state.model = None
    ctx.state.activated = False
    ctx.state.previous_release = running
    ctx.state.release = rid
    ctx.state.release_changed = True
    ctx.state.last_up = {}


def checks_line(checks: list[Check]) -> str:
    """``11 checks passed`` or which checks failed, one line."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return f"{len(checks)} checks passed"
    return f"{len(bad)} of {len(checks)} checks FAILED: " + "; ".join(f"{c.kind} {c.target}: {c.detail}" for c in bad)


def summary_lines(reports: list[HostReport]) -> list[str]:
    """One line per host: what changed (bytes uploaded, images loaded, containers
    recreated) and the SSH round trips it took."""
    out = []
    for r in reports:
        if r.status == "skipped":
            out.append(f"{r.host}: SKIPPED: not touched (an earlier batch failed)")
            continue
        if r.error:
            error = r.error[len(r.host) + 2:] if r.error.startswith(f"{r.host}: ") else r.error
            out.append(f"{r.host}: {r.status.upper()}: {error}")
            continue
        changed = [name for name, res, _ in r.results if res.changed]
        failed = [c for c in r.checks if not c.ok]
        out.append(f"{r.host}: uploaded {human_bytes(r.metric('bytes'))}, loaded {r.metric('images_loaded')} "
                   f"images, recreated {r.metric('recreated')} containers; "
                   + (f"changed: {', '.join(changed)}" if changed else "nothing changed")
                   + (f"; {len(failed)} checks FAILED" if failed else "")
                   + (f" ({r.round_trips} SSH round trips)" if r.round_trips else ""))
    return out
