"""Swarm benchmark on sandbox hosts: prints figures, asserts nothing.

In one run:

1. **deploy time**: the llm-chat-swarm bundle (backend x2 pinned to the data node,
   frontend x2, nginx on every node) deployed to a 3-node swarm (``swarm-1`` manager,
   ``swarm-2``/``swarm-3`` workers) and the same bundle to one Compose host
   (``sandbox-1``), interleaved, ``--rounds`` each, from the same starting point: Docker
   installed (and the swarm formed), nothing of the stack on the hosts (no store files,
   no images, no releases). Wall time of the whole deploy (upload, load, render, up or
   ``docker stack deploy`` + convergence, verification), medians compared as a ratio;
   the swarm's role times printed too;
2. **time to recover**: the worker that runs the most replicated tasks (a frontend
   replica: the backend is pinned to the data node) has its host (its sandbox
   container) stopped; the time until the stack is healthy again on the others: every
   replicated service's desired replicas running and ready on the remaining nodes,
   nginx ready on each of them and its ``/api/health`` answering 200 there. The worker
   is started again afterwards.

Usage (after ``make bootstrap``)::

    FERRY_SANDBOX_NAME=swarm FERRY_CACHE_DIR=/work/cache .venv/bin/python benchmarks/swarm_bench.py --rounds 2

It recreates its sandbox (``fresh``: 1 host + 3 swarm hosts) and removes it at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from devkit import sandbox as sbx  # noqa: E402
from devkit.images import build_bundle  # noqa: E402
from ferry.actions.deploy import deploy, prepare  # noqa: E402
from ferry.actions.swarm import setup  # noqa: E402
from ferry.controller.inventory import Inventory  # noqa: E402
from ferry.controller.localdocker import docker  # noqa: E402
from ferry.host import swarm as hs  # noqa: E402
from ferry.host.transport.ssh import connect_host  # noqa: E402
from ferry.roles import role_defaults  # noqa: E402
from ferry.ui import UI  # noqa: E402

STACK = "llm-chat-swarm"
SINGLE = "sandbox-1"
NODES = ["swarm-1", "swarm-2", "swarm-3"]


def quiet_ui() -> UI:
    return UI(Console(file=io.StringIO(), width=200))


def bench_inventory(sb) -> Path:
    """The sandbox's inventory with swarm-2 and swarm-3 as workers (one manager)."""
    text = sb.inventory.read_text()
    for n in NODES[1:]:
        text = text.replace(f"{n}: {{ansible_host:", f"{n}: {{swarm_role: worker, ansible_host:")
    path = sb.state_dir / "bench-inventory.yml"
    path.write_text(text)
    return path


def sh(inv: Inventory, host: str, script: str) -> str:
    t = connect_host(inv.hosts[host], inv)
    try:
        return t.run(["sh", "-c", script], check=False, timeout=600).out
    finally:
        t.close()


def reset(inv: Inventory, hosts: list[str], swarm: bool, image_ids: list[str]) -> None:
    """Nothing of the stack left on ``hosts``: services or containers, images, store,
    bundles, releases (Docker, and the swarm, stay)."""
    if swarm:
        sh(inv, hosts[0], f"docker stack rm {STACK} >/dev/null 2>&1; for i in $(seq 120); do "
                          f"[ -z \"$(docker service ls -q --filter label=com.docker.stack.namespace={STACK})\" ] "
                          "&& break; sleep 1; done")
    for h in hosts:
        down = (f"for i in $(seq 120); do [ -z \"$(docker ps -aq --filter label=com.docker.stack.namespace={STACK})\" ] "
                f"&& [ -z \"$(docker network ls -q --filter name={STACK}_default)\" ] && break; sleep 1; done"
                if swarm else f"docker ps -aq --filter label=com.docker.compose.project={STACK} | xargs -r docker rm -f; "
                              f"docker network rm {STACK}_default 2>/dev/null")
        sh(inv, h, f"{down}; docker rmi -f {' '.join(image_ids)} >/dev/null 2>&1; "
                   "rm -rf /opt/ferry/store /opt/ferry/bundles /opt/ferry/stacks; true")


def timed_deploy(inventory: Path, pattern: str, bundle: Path) -> tuple[float, dict[str, float]]:
    started = time.monotonic()
    plan = prepare(inventory, pattern, STACK, bundle, bundle.parent, {})
    reports = deploy(plan, quiet_ui())
    total = time.monotonic() - started
    bad = [r for r in reports if r.failed]
    if bad:
        raise SystemExit(f"deploy to {pattern} failed: {bad[0].error}")
    roles: dict[str, float] = {}
    for r in reports:
        for name, _, seconds in r.results:
            roles[name] = max(roles.get(name, 0.0), seconds)
    return total, roles


def healthy_after_stop(inv: Inventory, stopped: str, settle: float, limit: float = 600) -> float:
    """Seconds from now until the stack is healthy on the nodes other than ``stopped``."""
    t = connect_host(inv.hosts[NODES[0]], inv)
    started = time.monotonic()
    others = [n for n in NODES if n != stopped]
    try:
        while time.monotonic() - started < limit:
            state = hs.parse_stack_state(STACK, t.run(hs.stack_state(STACK)).out)
            gone = {i for i, n in state.nodes.items() if n.hostname == stopped}
            ok = bool(state.services)
            for svc in state.services.values():
                live = [x for x in svc.live() if x.node not in gone and x.state == "running" and x.current]
                wanted = svc.replicas if svc.mode == "replicated" else len(others)
                ok = ok and len(live) >= wanted
            if ok:
                try:
                    ok = all(urllib.request.urlopen(f"http://{inv.hosts[n].vars['ansible_host']}/api/health",
                                                    timeout=5).status == 200 for n in others)
                except OSError:
                    ok = False
            if ok:
                return time.monotonic() - started
            time.sleep(1)
    finally:
        t.close()
    raise SystemExit(f"not healthy {limit:.0f}s after {stopped} stopped")


def busiest_worker(inv: Inventory) -> tuple[str, list[str]]:
    """The worker that runs the most tasks of replicated services (stopping it makes
    Swarm reschedule them), and those tasks (``frontend.1``...)."""
    t = connect_host(inv.hosts[NODES[0]], inv)
    try:
        state = hs.parse_stack_state(STACK, t.run(hs.stack_state(STACK)).out)
    finally:
        t.close()
    runs: dict[str, list[str]] = {n: [] for n in NODES[1:]}
    for svc in state.services.values():
        for x in svc.live():
            name = state.node_name(x.node)
            if svc.mode == "replicated" and name in runs:
                runs[name].append(f"{svc.name}.{x.slot}")
    worker = max(runs, key=lambda n: (len(runs[n]), n))
    return worker, sorted(runs[worker])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="leave the sandbox up")
    args = ap.parse_args()
    ui = UI()
    sb = sbx.up(count=1, swarm=3, fresh=True, console=ui.console)
    inventory = bench_inventory(sb)
    inv = Inventory(inventory)
    b = build_bundle(ROOT / "stacks" / STACK, sb.state_dir / "dist", None, quiet_ui(),
                     docker_settings=role_defaults("install-docker-offline"))
    image_ids = [i["id"] for i in b.manifest["images"]]
    ui.info(f"bundle {b.path.name}: {sum(f['size'] for f in b.files()) / 1e6:.0f} MB")
    started = time.monotonic()
    setup(prepare(inventory, "swarm", STACK, b.path, b.path.parent, {}), quiet_ui())
    ui.info(f"swarm.setup (Docker on 3 fresh hosts, swarm formed): {time.monotonic() - started:.1f}s")
    timed_deploy(inventory, SINGLE, b.path)          # Docker on the single host
    times: dict[str, list[float]] = {"single": [], "swarm": []}
    roles: dict[str, list[dict[str, float]]] = {"single": [], "swarm": []}
    for i in range(args.rounds):
        order = ["single", "swarm"] if i % 2 == 0 else ["swarm", "single"]
        for side in order:
            hosts = [SINGLE] if side == "single" else NODES
            reset(inv, hosts, side == "swarm", image_ids)
            seconds, by_role = timed_deploy(inventory, SINGLE if side == "single" else "swarm", b.path)
            times[side].append(seconds)
            roles[side].append(by_role)
            ui.info(f"round {i + 1}: {side}: {seconds:.1f}s")
    single, swarm = statistics.median(times["single"]), statistics.median(times["swarm"])
    ui.info(f"deploy of {b.path.name}, from Docker installed and nothing of the stack (median of {args.rounds}):")
    ui.info(f"  one Compose host ({SINGLE}):            {single:.1f}s")
    ui.info(f"  3-node swarm (1 manager, 2 workers):  {swarm:.1f}s")
    ui.info(f"  swarm / single: {swarm / single:.2f}x")
    for side in ("single", "swarm"):
        names = sorted({n for r in roles[side] for n in r}, key=lambda n: -statistics.median(
            [r.get(n, 0.0) for r in roles[side]]))
        ui.info(f"  {side} by role (slowest node, median): " + ", ".join(
            f"{n} {statistics.median([r.get(n, 0.0) for r in roles[side]]):.1f}s" for n in names))
    stopped, moved = busiest_worker(inv)
    container = next(h.container for h in sb.swarm if h.name == stopped)
    ui.info(f"stopping {stopped}, which runs {', '.join(moved) or 'no replicated task'} (and its nginx)")
    settle = float(role_defaults("compose-up").get("compose_settle_seconds", 10))
    docker("stop", "-t", "1", container, timeout=120)
    seconds = healthy_after_stop(inv, stopped, settle)
    ui.info(f"time to recover: {stopped} (a worker) stopped -> stack healthy on "
            f"{', '.join(n for n in NODES if n != stopped)} "
            f"in {seconds:.1f}s (Swarm noticing the node down, rescheduling its tasks, healthchecks)")
    docker("start", container, timeout=120)
    if not args.keep:
        sbx.down(sb.state_dir, console=ui.console)


if __name__ == "__main__":
    main()
