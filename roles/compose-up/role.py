"""compose-up: ``docker compose up -d --wait --pull never --remove-orphans`` in the
current release, then the readiness rules, then count what Compose recreated.

Compose itself decides what to recreate: a service whose configuration (image ID,
environment from ``.env``, ports, the ``ferry.config-digest`` label of its mounted
rendered files...) changed. Images come from the bundle only: ``--pull never`` whatever
a service's ``pull_policy`` says (the summary names the policies it overrode).

``up --wait`` returns once every container runs and every healthcheck passes. A
container without a healthcheck must then also *stay* running for
``compose_settle_seconds`` (same container, same start time: no restart loop); a
one-shot service that others wait for with ``service_completed_successfully`` must have
exited 0. On failure, the failing containers' last log lines are shown and the role
raises.

After a successful ``up`` the role records, in ``<stack_dir>/up.json``, the release and
the container of each service. When the next deploy finds the same release, no image
change, and exactly those containers still running and healthy, ``up`` would have
nothing to do and is skipped (0.05 s instead of 1.4 s). Anything else - a container
stopped, removed or recreated by hand - runs ``up``.
"""

from __future__ import annotations

import json
import time

from ferry.errors import HostError
from ferry.host.containers import parse_compose_ps, parse_project_state
from ferry.host.verify import one_shot_services
from ferry.model.compose import ComposeModel, host_conflicts, parse_model
from ferry.roles import RoleContext, RoleResult
from ferry.host import containers, files


def show_logs(ctx: RoleContext, services: list[str]) -> None:
    """Print the last ``compose_failure_log_lines`` log lines of each of ``services``
    (with their state), from the current release's Compose project."""
    p, project = ctx.paths, ctx.stack.name
    compose_file = f"{p.current}/compose.yml"
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    states = {c.service: c for c in parse_compose_ps(
        ctx.t.run(containers.compose_ps(project, compose_file, p.current), check=False).out)}
    for service in services:
        c = states.get(service)
        state = f"{c.state}{'/' + c.health if c.health else ''}" if c else "absent"
        ctx.ui.warn(f"{ctx.host}: {service} is {state}; last {lines} log lines:")
        logs = ctx.t.run(containers.compose(project, compose_file, p.current, "logs", "--no-color",
                                     "--tail", str(lines), service), check=False)
        for line in (logs.out + logs.err).splitlines()[-lines:]:
            ctx.ui.info(f"    {line}")


def preflight(ctx: RoleContext) -> None:
    """Read-only, before any change on any host: refuse a deploy whose ports, container
    names or network subnets another stack or process on the host already holds
    (``ctx.state["planned_model"]``: the model of the trial render)."""
    model = ctx.state.get("planned_model")
    if model is None:
        return
    facts = containers.parse_host_facts(ctx.t.run(containers.host_facts(), check=False).out)
    found = host_conflicts(model, ctx.stack.name, facts)
    if found:
        raise HostError(ctx.host, f"{ctx.stack.name}: " + "; ".join(found) + " (nothing was changed)")


def host_model(ctx: RoleContext) -> ComposeModel:
    """The current release's model: from render-config (``ctx.state["model"]``), else as
    Compose on the host resolves it (rollback)."""
    if ctx.state.get("model") is None:
        p = ctx.paths
        res = ctx.t.run(containers.compose_config(ctx.stack.name, f"{p.current}/compose.yml", p.current))
        ctx.state["model"] = parse_model(json.loads(res.stdout))
    return ctx.state["model"]


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
    now, found = parse_project_state(ctx.t.run(containers.project_containers(project)).out)
    one_shot = one_shot_services(model)
    watched = {s: c for s, c in found.items() if s not in one_shot and not c.health}
    left = max([wait - (now - c.started) for c in watched.values() if c.started] + [0.0])
    if left <= 0:
        return found
    time.sleep(left + 0.2)
    _, again = parse_project_state(ctx.t.run(containers.project_containers(project)).out)
    bad = {s: again.get(s) for s, c in watched.items()
           if s not in again or again[s].id != c.id or again[s].started_at != c.started_at
           or again[s].status != "running"}
    if bad:
        show_logs(ctx, sorted(bad))
        what = "; ".join(f"{s}: " + (f"{c.status}, {c.restarts} restarts" if c else "gone") for s, c in sorted(bad.items()))
        raise HostError(ctx.host, f"did not stay running for the settle time ({wait:g}s, no healthcheck): {what}")
    return again


def run(ctx: RoleContext) -> RoleResult:
    """Bring the current release up (or skip when unchanged); see the module docstring."""
    p, project = ctx.paths, ctx.stack.name
    compose_file = f"{p.current}/compose.yml"
    _, before = parse_project_state(ctx.t.run(containers.project_containers(project)).out)
    model = host_model(ctx)
    services = set(model.services)
    last = ctx.state.get("last_up") or {}
    unchanged = (not ctx.state.get("release_changed") and not ctx.state.get("images_changed")
                 and last.get("release") == ctx.state.get("release") and set(before) == services
                 and last.get("containers") == {s: c.id for s, c in before.items()}
                 and all(c.healthy for c in before.values()))
    if unchanged:
        return RoleResult(False, f"recreated 0 containers; {len(before)} running and healthy, "
                                 f"the same as after the last up", {"recreated": 0})
    if ctx.check:
        bad = sorted(s for s in services if s not in before or not before[s].healthy)
        return RoleResult(True, "would run compose up" + (f" ({', '.join(bad)} not healthy)" if bad else "")
                          + f"; {pull_note(model)}")
    wait = int(ctx.vars.get("compose_wait_timeout", 120))
    started = time.monotonic()
    res = ctx.t.run(containers.compose_up(project, compose_file, p.current, wait), check=False, timeout=wait + 120)
    if not res.ok:
        ps = parse_compose_ps(ctx.t.run(containers.compose_ps(project, compose_file, p.current), check=False).out)
        bad = [c.service for c in ps if c.state != "running" or c.health not in ("", "healthy")] \
            or [c.service for c in ps]
        show_logs(ctx, bad)
        raise HostError(ctx.host, f"docker compose up did not become healthy: {res.last_error_line()}")
    after = settle(ctx, model)
    ctx.t.run(files.write_file(f"{p.stack_dir}/up.json", 0o644), input=json.dumps(
        {"release": ctx.state.get("release"), "containers": {s: c.id for s, c in after.items()}}).encode())
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
    return RoleResult(bool(recreated or restarted or removed), "; ".join(parts),
                      {"recreated": len(recreated), "restarted": len(restarted)})
