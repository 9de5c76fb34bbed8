"""compose-up: make the release the running one with ``docker compose up -d --wait
--pull never --remove-orphans``, then count what Compose recreated or restarted.

The switch of ``current`` and the ``up`` run on the host as ONE unit
(:mod:`ferry.host.activate`, ``files/ferry-activate``): if ``up`` does not become
healthy, the host switches ``current`` back to the previous release and brings it up
again (or, on a first deploy, removes only the containers this run created) before the
controller hears of it, and the controller going away (Ctrl-C, kill, SSH loss) cannot
stop that half way. So ``current`` always names what runs. The failing services' states
and last log lines are printed. Once the release is up, the same round trip reads the
project's containers and what the action reads next (``HostState.after_up``:
verification's facts, the backup role's).

Compose itself decides what to recreate: a service whose configuration (image ID,
environment from ``.env``, ports, the ``ferry.config-digest`` label of its mounted
rendered files...) changed. Images come from the bundle only: ``--pull never`` whatever
a service's ``pull_policy`` says (the summary names the policies it overrode).

``up --wait`` returns once every container runs and every healthcheck passes. A
container without a healthcheck must then also *stay* running for
``compose_settle_seconds`` (same container, same start time: no restart loop); a
one-shot service that others wait for with ``service_completed_successfully`` must have
exited 0. A container that restarts meanwhile fails the role (its logs shown) after the
release was activated, so deploy switches back to the previous release.

Preflight (read-only, before any host changes): the ports, container names and network
subnets the release needs must not be held by another stack or process on the host.

After a successful ``up`` the role records, in ``<stack_dir>/up.json``, the release and
the container of each service (on a session's transport, written in the run's last round
trip with the audit line: :meth:`ferry.host.facts.Prefetched.defer`; lost, it only costs
the next deploy an ``up``). When the next deploy finds the same release, no image
change, and exactly those containers still running and healthy, ``up`` would have
nothing to do and is skipped. Anything else - a container stopped, removed or
recreated by hand - runs ``up``.
"""

from __future__ import annotations

import json
import time

from ferry.errors import HostError
from ferry.host import containers, files
from ferry.host.activate import ActivationFailed, activate, parse_activation
from ferry.host.answers import json_doc
from ferry.host.verify import one_shot_services
from ferry.model.compose import ComposeModel, host_conflicts, parse_model
from ferry.roles import RoleContext, RoleResult


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only commands :func:`preflight` and :func:`run` read first (gathered
    ahead by deploy): what the host's other containers, networks and sockets hold, and
    the stack's containers."""
    return [containers.host_facts(), containers.project_containers(ctx.stack.name)]


def preflight(ctx: RoleContext) -> None:
    """Read-only, before any change on any host: refuse a deploy whose ports, container
    names or network subnets another stack or process on the host already holds
    (``ctx.state.planned_model``: the model of the trial render).

    Raises:
        HostError: naming both stacks (or the process) for each clash.
    """
    model = ctx.state.planned_model
    if model is None:
        return
    facts = containers.parse_host_facts(ctx.t.run(containers.host_facts(), check=False).out)
    found = host_conflicts(model, ctx.stack.name, facts)
    if found:
        raise HostError(ctx.host, f"{ctx.stack.name}: " + "; ".join(found) + " (nothing was changed)")


def host_model(ctx: RoleContext) -> ComposeModel:
    """The model of the release to activate: render-config's, else (rollback) as Compose
    on the host resolves ``releases/<release>/compose.yml``."""
    if ctx.state.model is None:
        rel = f"{ctx.paths.releases}/{ctx.state.release}"
        res = ctx.t.run(containers.compose_config(ctx.stack.name, f"{rel}/compose.yml", rel))
        ctx.state.model = parse_model(json_doc(res.stdout, f"docker compose config of {rel}", dict))
    return ctx.state.model


def running_model(ctx: RoleContext) -> ComposeModel:
    """Compose's model of the release ``current`` names (just activated), as the host
    resolves it: read in the round trip that activated it when the action asked for
    verification's facts (``ctx.state.after_up``), else asked now."""
    res = ctx.t.run(containers.compose_config(ctx.stack.name, f"{ctx.paths.current}/compose.yml", ctx.paths.current))
    return parse_model(json_doc(res.stdout, f"docker compose config of {ctx.paths.current}", dict))


def up(ctx: RoleContext, argv: list[str], timeout: float):
    """Run ``ferry-activate`` (``argv``); on a transport that gathers facts
    (:class:`ferry.host.facts.Prefetched`), as the gate of one round trip that then reads
    the project's containers and ``ctx.state.after_up`` once the release is up. Returns
    the script's :class:`~ferry.host.transport.Result`."""
    gather = getattr(ctx.t, "gather", None)
    if gather is None:
        return ctx.t.run(argv, check=False, timeout=timeout)
    return gather([containers.project_containers(ctx.stack.name), *ctx.state.after_up], gate=argv, timeout=timeout)


def pull_note(model: ComposeModel) -> str:
    """``--pull never`` and the ``pull_policy`` values it overrides, for the summary."""
    policies: dict[str, list[str]] = {}
    for s in model.services.values():
        if s.pull_policy and s.pull_policy != "never":
            policies.setdefault(s.pull_policy, []).append(s.name)
    over = "; ".join(f"pull_policy {k} of {', '.join(sorted(v))} overridden" for k, v in sorted(policies.items()))
    return "images from the bundle only (--pull never" + (f"; {over}" if over else "") + ")"


def settle(ctx: RoleContext, model: ComposeModel) -> dict[str, containers.Container]:
    """Wait until every container without a healthcheck has run ``compose_settle_seconds``
    and check it is still the same, running container (no restart loop).

    Returns:
        ``{service: Container}`` after the wait.

    Raises:
        HostError: a container restarted, stopped or was replaced meanwhile (its logs shown).
    """
    project, wait = ctx.stack.name, float(ctx.vars.get("compose_settle_seconds", 10))
    now, found = containers.parse_project_state(ctx.t.run(containers.project_containers(project)).out)
    one_shot = one_shot_services(model)
    watched = {s: c for s, c in found.items() if s not in one_shot and not c.health}
    left = max([wait - (now - c.started) for c in watched.values() if c.started] + [0.0])
    if left <= 0:
        return found
    time.sleep(left + 0.2)
    forget = getattr(ctx.t, "forget", None)
    if forget is not None:       # what was read right after up is stale now, for settle and verify
        forget()
    _, again = containers.parse_project_state(ctx.t.run(containers.project_containers(project)).out)
    bad = {s: again.get(s) for s, c in watched.items()
           if s not in again or again[s].id != c.id or again[s].started_at != c.started_at
           or again[s].status != "running"}
    if bad:
        show_logs(ctx, sorted(bad))
        what = "; ".join(f"{s}: " + (f"{c.status}, {c.restarts} restarts" if c else "gone") for s, c in sorted(bad.items()))
        raise HostError(ctx.host, f"did not stay running for the settle time ({wait:g}s, no healthcheck): {what}")
    return again


def show_logs(ctx: RoleContext, services: list[str]) -> None:
    """Print the last ``compose_failure_log_lines`` log lines of each of ``services``."""
    p, project = ctx.paths, ctx.stack.name
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    for service in services:
        ctx.ui.warn(f"{ctx.host}: {service}: last {lines} log lines:")
        logs = ctx.t.run(containers.compose(project, f"{p.current}/compose.yml", p.current, "logs", "--no-color",
                                            "--tail", str(lines), service), check=False)
        for line in (logs.out + logs.err).splitlines()[-lines:]:
            ctx.ui.info(f"    {line}")


def run(ctx: RoleContext) -> RoleResult:
    """Bring the release up (or skip when unchanged); see the module docstring.

    Raises:
        ActivationFailed: the release did not come up healthy (the host already reverted).
    """
    p, project, state = ctx.paths, ctx.stack.name, ctx.state
    before = containers.parse_project_containers(ctx.t.run(containers.project_containers(project)).out)
    last = state.last_up
    unchanged = (not state.release_changed and not state.images_changed
                 and last.get("release") == state.release and set(before) == set(host_model(ctx).services)
                 and last.get("containers") == {s: c.id for s, c in before.items()}
                 and all(c.healthy for c in before.values()))
    if unchanged:
        return RoleResult(False, f"recreated 0 containers; {len(before)} running and healthy, "
                                 f"the same as after the last up", {"recreated": 0})
    if ctx.check:
        model = host_model(ctx)
        bad = sorted(s for s in model.services if s not in before or not before[s].healthy)
        return RoleResult(True, "would run compose up" + (f" ({', '.join(bad)} not healthy)" if bad else "")
                          + f"; {pull_note(model)}")
    wait = int(ctx.vars.get("compose_wait_timeout", 120))
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    state.containers_before = [c.id for c in before.values()]
    previous = state.previous_release if state.release_changed else state.release
    started = time.monotonic()
    res = up(ctx, activate(p.root, project, state.release, previous, wait, lines), 2 * wait + 300)
    act = parse_activation(res.out)
    if not act.ok:
        ctx.ui.warn(f"{ctx.host}: release {state.release} did not come up healthy:")
        services = len(state.model.services) if state.model is not None else len(before)
        for line in (act.log.splitlines() or res.err.splitlines())[-(lines * max(1, services) + 20):]:
            ctx.ui.info(f"    {line}")
        what = {"reverted": f"the host switched back to {previous}, which runs again",
                "stopped": "nothing to return to: the containers it created were removed",
                }.get(act.result, "and nothing could be brought back up" if previous else "")
        raise ActivationFailed(ctx.host, f"docker compose up did not become healthy; {what}".rstrip("; "),
                               act.result)
    state.activated = True
    model = state.model = state.model or running_model(ctx)
    after = settle(ctx, model)
    record = json.dumps({"release": state.release, "containers": {s: c.id for s, c in after.items()}})
    defer = getattr(ctx.t, "defer", None)
    if defer is not None:        # with the audit line: a lost up.json only costs the next deploy an up
        defer(files.write_text_command(f"{p.stack_dir}/up.json", record, 0o644))
    else:
        ctx.t.run(files.write_file(f"{p.stack_dir}/up.json", 0o644), input=record.encode())
    recreated = sorted(s for s in after if s not in before or after[s].id != before[s].id)
    restarted = sorted(s for s in after if s in before and after[s].id == before[s].id
                       and after[s].started_at != before[s].started_at)
    removed = sorted(set(before) - set(after))
    parts = [f"recreated {len(recreated)} containers" + (f" ({', '.join(recreated)})" if recreated else "")]
    if restarted:
        parts.append(f"restarted {', '.join(restarted)}")
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    parts.append(f"{len(after)} running, ready in {time.monotonic() - started:.1f}s")
    parts.append(pull_note(model))
    if state.release_changed:
        parts.append(f"current -> {state.release}")
    return RoleResult(bool(recreated or restarted or removed or state.release_changed), "; ".join(parts),
                      {"recreated": len(recreated), "restarted": len(restarted)})
