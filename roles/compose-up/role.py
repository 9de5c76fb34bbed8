"""compose-up: ``docker compose up -d --wait --pull never --remove-orphans`` in the
current release, then count what Compose recreated or restarted.

Compose itself decides what to recreate: a service whose configuration (image ID,
environment from ``.env``, ports, the ``ferry.config-digest`` label of its mounted
rendered files...) changed. On failure, the failing containers' last log lines are
shown and the role raises.

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
from ferry.host.containers import parse_compose_ps, parse_project_containers
from ferry.roles import RoleContext, RoleResult
from ferry.model.compose import compose_services
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


def run(ctx: RoleContext) -> RoleResult:
    """Bring the current release up (or skip when unchanged); see the module docstring."""
    p, project = ctx.paths, ctx.stack.name
    compose_file = f"{p.current}/compose.yml"
    before = parse_project_containers(ctx.t.run(containers.project_containers(project)).out)
    services = set(compose_services(ctx.state["rendered"]["compose.yml"]))
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
        return RoleResult(True, "would run compose up" + (f" ({', '.join(bad)} not healthy)" if bad else ""))
    wait = int(ctx.vars.get("compose_wait_timeout", 120))
    started = time.monotonic()
    res = ctx.t.run(containers.compose_up(project, compose_file, p.current, wait), check=False, timeout=wait + 120)
    if not res.ok:
        ps = parse_compose_ps(ctx.t.run(containers.compose_ps(project, compose_file, p.current), check=False).out)
        bad = [c.service for c in ps if c.state != "running" or c.health not in ("", "healthy")] \
            or [c.service for c in ps]
        show_logs(ctx, bad)
        raise HostError(ctx.host, f"docker compose up did not become healthy: {res.last_error_line()}")
    after = parse_project_containers(ctx.t.run(containers.project_containers(project)).out)
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
    parts.append(f"{len(after)} running, healthy in {time.monotonic() - started:.1f}s")
    return RoleResult(bool(recreated or restarted or removed), "; ".join(parts),
                      {"recreated": len(recreated), "restarted": len(restarted)})
