"""compose-up: make the release the running one with ``docker compose up -d --wait
--pull never --remove-orphans``, then count what Compose recreated or restarted.

The switch of ``current`` and the ``up`` run on the host as ONE unit
(:mod:`ferry.host.activate`, ``files/ferry-activate``): if ``up`` does not become
healthy, the host switches ``current`` back to the previous release and brings it up
again (or, on a first deploy, removes only the containers this run created) before the
controller hears of it, and the controller going away (Ctrl-C, kill, SSH loss) cannot
stop that half way. So ``current`` always names what runs. The failing services' states
and last log lines are printed.

Compose itself decides what to recreate: a service whose configuration (image ID,
environment from ``.env``, ports, the ``ferry.config-digest`` label of its mounted
rendered files...) changed.

After a successful ``up`` the role records, in ``<stack_dir>/up.json``, the release and
the container of each service. When the next deploy finds the same release, no image
change, and exactly those containers still running and healthy, ``up`` would have
nothing to do and is skipped. Anything else - a container stopped, removed or
recreated by hand - runs ``up``.
"""

from __future__ import annotations

import json
import time

from ferry.host import containers, files
from ferry.host.activate import ActivationFailed, activate, parse_activation
from ferry.model.compose import compose_services
from ferry.roles import RoleContext, RoleResult


def run(ctx: RoleContext) -> RoleResult:
    """Bring the release up (or skip when unchanged); see the module docstring.

    Raises:
        ActivationFailed: the release did not come up healthy (the host already reverted).
    """
    p, project, state = ctx.paths, ctx.stack.name, ctx.state
    before = containers.parse_project_containers(ctx.t.run(containers.project_containers(project)).out)
    services = set(compose_services(state.rendered["compose.yml"]))
    last = state.last_up
    unchanged = (not state.release_changed and not state.images_changed
                 and last.get("release") == state.release and set(before) == services
                 and last.get("containers") == {s: c.id for s, c in before.items()}
                 and all(c.healthy for c in before.values()))
    if unchanged:
        return RoleResult(False, f"recreated 0 containers; {len(before)} running and healthy, "
                                 f"the same as after the last up", {"recreated": 0})
    if ctx.check:
        bad = sorted(s for s in services if s not in before or not before[s].healthy)
        return RoleResult(True, "would run compose up" + (f" ({', '.join(bad)} not healthy)" if bad else ""))
    wait = int(ctx.vars.get("compose_wait_timeout", 120))
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    state.containers_before = [c.id for c in before.values()]
    previous = state.previous_release if state.release_changed else state.release
    started = time.monotonic()
    res = ctx.t.run(activate(p.root, project, state.release, previous, wait, lines), check=False,
                    timeout=2 * wait + 300)
    act = parse_activation(res.out)
    if not act.ok:
        ctx.ui.warn(f"{ctx.host}: release {state.release} did not come up healthy:")
        for line in (act.log.splitlines() or res.err.splitlines())[-(lines * max(1, len(services)) + 20):]:
            ctx.ui.info(f"    {line}")
        what = {"reverted": f"the host switched back to {previous}, which runs again",
                "stopped": "nothing to return to: the containers it created were removed",
                }.get(act.result, "and nothing could be brought back up" if previous else "")
        raise ActivationFailed(ctx.host, f"docker compose up did not become healthy; {what}".rstrip("; "),
                               act.result)
    after = containers.parse_project_containers(ctx.t.run(containers.project_containers(project)).out)
    ctx.t.run(files.write_file(f"{p.stack_dir}/up.json", 0o644), input=json.dumps(
        {"release": state.release, "containers": {s: c.id for s, c in after.items()}}).encode())
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
    if state.release_changed:
        parts.append(f"current -> {state.release}")
    return RoleResult(bool(recreated or restarted or removed or state.release_changed), "; ".join(parts),
                      {"recreated": len(recreated), "restarted": len(restarted)})
