"""stack-deploy: make a release the one a Docker Swarm runs, then wait until every
service has its desired replicas running the new spec and ready.

Runs on the primary manager (``ctx``), with every node of the cluster in
``ctx.state.swarm`` (:class:`SwarmRun`). In order:

1. the stack file: :func:`ferry.model.swarm.stack_file` turns Compose's normalized
   model of the rendered release (``docker-compose config --format json`` on the
   controller, env files inlined) into the Compose file format 3.8 ``docker stack
   deploy`` reads, written as ``releases/<id>/swarm-stack.json`` (0600);
2. every node gets the release directory (and ``secrets.json``, the data dirs), so a
   task started on any node finds the files it bind-mounts under ``current/``;
3. skipped when nothing changed: same release current on every node, no image loaded,
   every service converged;
4. activation (``files/ferry-swarm-activate``, one unit per host): ``current`` switched
   on every other node, then on the primary switched together with ``docker stack
   deploy --prune --resolve-image never`` (images as the nodes hold them, no registry);
5. the health gate (:func:`ferry.host.swarm.service_readiness`): every service's
   desired replicas run the current spec and are ready (with a healthcheck, Swarm
   counts a task running once healthy; without one, running ``compose_settle_seconds``);
   an update Swarm paused or rolled back (``update_config.failure_action: rollback``)
   fails at once, otherwise ``compose_wait_timeout`` seconds;
6. on failure: each failing service's tasks' errors and last log lines, then the
   previous release is activated again everywhere (Swarm rolls the services back to
   it) and waited for; a first deploy removes the stack instead. Raises
   :class:`ferry.host.activate.ActivationFailed` saying which.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ferry.controller import composecli
from ferry.errors import HostError
from ferry.host import swarm as hs
from ferry.host.activate import ActivationFailed
from ferry.host.files import write_file
from ferry.host.shell import q, sh
from ferry.model.swarm import stack_file
from ferry.roles import RoleContext, RoleResult


@dataclass
class SwarmRun:
    """The cluster a stack-deploy acts on.

    Attributes:
        others: role contexts of every node but the primary (inventory order).
        data_dirs: data directories (absolute) every node must have.
        images_changed: some node loaded or re-tagged an image this run.
        state: the stack as the gate last saw it (:class:`ferry.host.swarm.StackState`).
    """

    others: list[RoleContext] = field(default_factory=list)
    data_dirs: list[str] = field(default_factory=list)
    images_changed: bool = False
    state: Any = None


def read_release(stack_dir: str, release: str) -> list[str]:
    """A tar stream of ``releases/<release>/`` and ``secrets.json`` as they are (symlinks
    kept as symlinks: a release's ``data`` link is not followed)."""
    return sh(f"cd {q(stack_dir)} && set -- {q('releases/' + release)} && "
              "if [ -e secrets.json ]; then set -- \"$@\" secrets.json; fi && tar -cf - -- \"$@\"")


def node_release_facts(stack_dir: str, release: str) -> list[str]:
    """Two lines: ``readlink current`` (empty when none) and ``yes``/``no``: the node
    holds ``releases/<release>/``."""
    return sh(f"cd {q(stack_dir)} 2>/dev/null && readlink current || echo; "
              f"if [ -d {q(stack_dir + '/releases/' + release)} ]; then echo yes; else echo no; fi")


def write_release(stack_dir: str, data_dirs: list[str]) -> list[str]:
    """Extract a :func:`read_release` stream into ``stack_dir`` (creating it and
    ``data_dirs``); files keep their modes (0600 ones stay 0600)."""
    dirs = " ".join(q(d) for d in [stack_dir + "/releases", *data_dirs])
    return sh(f"set -e; mkdir -p {dirs}; cd {q(stack_dir)}; tar --no-same-owner -xpf -")


def _current(line: str) -> str:
    return line.strip().rsplit("/", 1)[-1] if line.strip() else ""


def converge(ctx: RoleContext, since: float) -> tuple[bool, hs.StackState, list[hs.Readiness]]:
    """Poll the stack until every service is ready, one failed, or
    ``compose_wait_timeout`` seconds passed.

    Returns:
        ``(ok, last state, readiness of each service)``.
    """
    wait = float(ctx.vars.get("compose_wait_timeout", 120))
    settle = float(ctx.vars.get("compose_settle_seconds", 10))
    poll = max(0.5, float(ctx.vars.get("swarm_poll_seconds", 2)))
    deadline = time.monotonic() + wait
    while True:
        state = hs.parse_stack_state(ctx.stack.name, ctx.t.run(hs.stack_state(ctx.stack.name)).out)
        found = [hs.service_readiness(state, s, settle, since) for s in state.services.values()]
        if found and all(r.ready for r in found):
            return True, state, found
        if any(r.failed for r in found) or time.monotonic() >= deadline:
            return False, state, found
        time.sleep(poll)


def show_failures(ctx: RoleContext, state: hs.StackState, found: list[hs.Readiness]) -> None:
    """Print each failing service's readiness line and its last log lines."""
    lines = int(ctx.vars.get("compose_failure_log_lines", 20))
    for r in found:
        if r.ready:
            continue
        ctx.ui.warn(f"{ctx.host}: {r.service}: {r.detail}")
        logs = ctx.t.run(hs.service_logs(state.services[r.service].full, lines), check=False, timeout=60)
        for line in (logs.out + logs.err).splitlines()[-lines:]:
            ctx.ui.info(f"    {line}")


def _activate(ctx: RoleContext, run_: SwarmRun, release: str) -> tuple[str, str]:
    for other in run_.others:
        res = other.t.run(hs.activate(other.paths.root, ctx.stack.name, release, False), check=False)
        if hs.parse_activation(res.out)[0] != "ok":
            raise HostError(other.host, f"could not switch current to {release}: {res.last_error_line()}")
    res = ctx.t.run(hs.activate(ctx.paths.root, ctx.stack.name, release, True), check=False, timeout=600)
    return hs.parse_activation(res.out or res.err)


def _tasks(state: hs.StackState | None) -> dict[str, set[str]]:
    return {n: {t.id for t in s.live()} for n, s in (state.services if state else {}).items()}


def revert(ctx: RoleContext, run_: SwarmRun, failed: str, previous: str | None, why: str,
           first: bool = False) -> ActivationFailed:
    """Activate ``previous`` everywhere again and wait for it. A first deploy (``first``:
    the stack ran no release before) removes the stack and the ``current`` links
    instead; with no other release to return to (the failed one was already current)
    nothing is touched.

    Returns:
        The :class:`ActivationFailed` to raise: ``reverted`` (the swarm runs
        ``previous`` again), ``stopped`` (stack removed) or ``failed``.
    """
    if not previous or previous == failed:
        if not first:
            return ActivationFailed(ctx.host, f"{why}; {failed} stays current (no other release to return to)",
                                    "failed")
        ctx.ui.warn(f"{ctx.host}: no previous release to return to: removing the stack")
        ctx.t.run(hs.stack_rm(ctx.stack.name), check=False, timeout=300)
        for c in [ctx, *run_.others]:
            c.t.run(["rm", "-f", "--", c.paths.current], check=False)
        return ActivationFailed(ctx.host, f"{why}; nothing to return to: the stack was removed", "stopped")
    ctx.ui.warn(f"{ctx.host}: rolling the swarm back to {previous}")
    result, log = _activate(ctx, run_, previous)
    if result != "ok":
        return ActivationFailed(ctx.host, f"{why}; and docker stack deploy of {previous} failed too: "
                                          f"{(log.strip().splitlines() or ['?'])[-1]}", "failed")
    state = hs.parse_stack_state(ctx.stack.name, ctx.t.run(hs.stack_state(ctx.stack.name)).out)
    ok, state, found = converge(ctx, state.now)
    ctx.state.release = previous
    ctx.state.previous_release = failed
    if not ok:
        show_failures(ctx, state, found)
        return ActivationFailed(ctx.host, f"{why}; back on {previous}, which does not converge either", "failed")
    ctx.ui.host_line(ctx.host, "rollback", f"back on {previous}: every service converged", True)
    return ActivationFailed(ctx.host, f"{why}; the swarm runs {previous} again", "reverted")


def ensure_release(ctx: RoleContext, run_: SwarmRun, release: str) -> int:
    """Copy ``releases/<release>/`` (and ``secrets.json``) from the primary to every node
    lacking it, and make the data dirs on every node.

    Returns:
        How many nodes got the release.
    """
    p = ctx.paths
    facts = {c.host: c.t.run(node_release_facts(c.paths.stack_dir, release)).out.splitlines() for c in run_.others}
    missing = [c for c in run_.others if facts[c.host][1:2] != ["yes"]]
    if missing:
        tar = ctx.t.run(read_release(p.stack_dir, release)).stdout
        for c in missing:
            c.t.run(write_release(c.paths.stack_dir, run_.data_dirs), input=tar)
    if run_.data_dirs:
        for c in run_.others:
            if c not in missing:
                c.t.run(sh("mkdir -p " + " ".join(q(d) for d in run_.data_dirs)))
    return len(missing)


def activate_release(ctx: RoleContext, release: str, previous: str | None,
                     before: hs.StackState | None = None, first: bool = False) -> RoleResult:
    """Make ``release`` (its stack file already on the primary) the one the swarm runs:
    every node gets it, ``current`` switched everywhere, ``docker stack deploy`` on the
    primary, the health gate; back on ``previous`` when it fails (``first``: the stack
    ran nothing before, so a failure removes it).

    Raises:
        ActivationFailed: it did not converge (see :func:`revert` for what runs then).
        HostError: a node could not take the release.
    """
    run_: SwarmRun = ctx.state.swarm
    stack = ctx.stack.name
    started = time.monotonic()
    copied = ensure_release(ctx, run_, release)
    if before is None:
        before = hs.parse_stack_state(stack, ctx.t.run(hs.stack_state(stack)).out)
    result, log = _activate(ctx, run_, release)
    ctx.state.activated = True
    if result != "ok":
        for line in log.strip().splitlines()[-20:]:
            ctx.ui.info(f"    {line}")
        back = previous if previous and previous != release else None
        raise ActivationFailed(ctx.host, f"docker stack deploy of {release} failed: "
                                         f"{(log.strip().splitlines() or ['?'])[-1]}; current names "
                                         f"{back or release if not first else 'nothing'} again",
                               "reverted" if back else ("stopped" if first else "failed"))
    ok, after, found = converge(ctx, before.now)
    run_.state = after
    if not ok:
        show_failures(ctx, after, found)
        bad = [r for r in found if not r.ready]
        why = "; ".join(f"{r.service}: {r.detail}" for r in bad) or "no service converged"
        raise revert(ctx, run_, release, previous, f"release {release} did not converge: {why}", first)
    old, new = _tasks(before), _tasks(after)
    updated = sorted(n for n in new if new[n] != old.get(n))
    removed = sorted(set(old) - set(new))
    parts = [f"updated {len(updated)} services" + (f" ({', '.join(updated)})" if updated else "")]
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    parts.append(f"{len(found)} services, {sum(r.desired for r in found)} tasks converged in "
                 f"{time.monotonic() - started:.1f}s; images as the nodes hold them (--resolve-image never)")
    parts.append(f"current -> {release} on {1 + len(run_.others)} nodes" + (f" (copied to {copied})" if copied else ""))
    return RoleResult(True, "; ".join(parts), {"recreated": sum(len(new[n] - old.get(n, set())) for n in new),
                                               "updated": len(updated), "updated_services": updated})


def run(ctx: RoleContext) -> RoleResult:
    """Write the stack file, then activate the release unless nothing changed; see the
    module docstring.

    Raises:
        ActivationFailed: the release did not converge (the swarm is back on the
            previous release, or the stack was removed on a first deploy).
        HostError: a node could not take the release.
    """
    run_: SwarmRun = ctx.state.swarm
    state, p, stack = ctx.state, ctx.paths, ctx.stack.name
    release, previous = state.release, state.previous_release
    config = json.loads(composecli.config_json(state.rendered, stack, p.current, ctx.bundle.path))
    document, notes = stack_file(config)
    for note in notes:
        ctx.ui.info(f"  {note}")
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    path = hs.stack_file_path(p.stack_dir, release)
    have = ctx.t.run(["cat", "--", path], check=False)
    nodes = [c.t.run(node_release_facts(c.paths.stack_dir, release)).out.splitlines() for c in [ctx, *run_.others]]
    before = hs.parse_stack_state(stack, ctx.t.run(hs.stack_state(stack)).out)
    settle = float(ctx.vars.get("compose_settle_seconds", 10))
    converged = bool(before.services) and all(hs.service_readiness(before, s, settle).ready
                                              for s in before.services.values())
    unchanged = (not state.release_changed and not run_.images_changed and have.ok and have.stdout == data
                 and all(v[1:2] == ["yes"] and _current(v[0]) == release for v in nodes) and converged)
    if unchanged:
        tasks = sum(len(s.live()) for s in before.services.values())
        return RoleResult(False, f"updated 0 services; {len(before.services)} services, {tasks} tasks converged "
                                 f"on {release}", {"recreated": 0})
    if ctx.check:
        return RoleResult(True, f"would docker stack deploy {release or 'the new release'}")
    if not have.ok or have.stdout != data:
        ctx.t.run(write_file(path, 0o600), input=data)     # it holds the environment
    return activate_release(ctx, release, previous, before, first=not previous)
