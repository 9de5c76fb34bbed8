"""The checkout's development tasks (``inv sandbox.*``, ``inv demo``, ``inv test``), and
``inv bundle`` building stand-in images first. Not part of the installed product."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from invoke import Collection, Exit, task

from ferry.cli import BUNDLE_HELP, user_errors
from ferry.ui import UI

ROOT = Path(__file__).resolve().parent.parent


def sandbox_inventory() -> Path:
    """The sandbox's inventory (``.sandbox/inventory.yml``, ``.sandbox-<name>/`` with
    ``FERRY_SANDBOX_NAME``), computed without importing the sandbox module."""
    name = os.environ.get("FERRY_SANDBOX_NAME", "ferry-sandbox")
    return ROOT / (".sandbox" if name == "ferry-sandbox" else f".sandbox-{name}") / "inventory.yml"


@task(help={"count": "number of hosts (first is group prod, the rest staging)",
            "fresh": "destroy existing sandbox hosts (and their Docker data) first",
            "nodpkg": "N hosts without dpkg/apt whose os-release says Rocky Linux (group nodpkg; default: keep those there)",
            "world": "also start hosts like the world: deploy+sudo (NOPASSWD / password), a bastion, a host behind it",
            "swarm": "N hosts for a Docker Swarm (group swarm, ferry_engine: swarm; default: keep those there)",
            "fresh_swarm": "recreate the swarm hosts (no Docker) and leave the others"})
@user_errors
def sandbox_up(c, count=3, fresh=False, nodpkg=None, world=False, swarm=None, fresh_swarm=False):
    """Start throw-away target hosts (systemd+sshd, no Docker, no network) and write .sandbox/inventory.yml."""
    from devkit import sandbox
    ui = UI()
    sb = sandbox.up(count=int(count), fresh=fresh, console=ui.console,
                    nodpkg=None if nodpkg is None else int(nodpkg), world=world,
                    swarm=None if swarm is None else int(swarm), fresh_swarm=fresh_swarm)
    ui.table("sandbox hosts", ["host", "ip", "container"],
             [[h.name, h.ip, h.container] for h in sb.hosts + sb.nodpkg + sb.swarm + sb.world])
    ui.info(f"inventory: {sb.inventory}")


@task
@user_errors
def sandbox_down(c):
    """Remove the sandbox hosts, their volumes and network."""
    from devkit import sandbox
    sandbox.down(console=UI().console)


@task
@user_errors
def sandbox_status(c):
    """Show the sandbox hosts, if any."""
    from devkit import sandbox
    ui = UI()
    sb = sandbox.status()
    if sb is None:
        ui.info("no sandbox (start one with `inv sandbox.up`)")
        return
    ui.table("sandbox hosts", ["host", "ip", "container"],
             [[h.name, h.ip, h.container] for h in sb.hosts + sb.nodpkg + sb.swarm + sb.world])


@task(help={"stack": "stack name (a folder under stacks/)"})
@user_errors
def standins(c, stack):
    """Build (or find up to date) the stand-in images of a stack's recipes (stacks/<name>/images/)."""
    from devkit.images import build_stack_images
    from ferry.controller.project import find_project
    ui = UI()
    for tag, image_id in build_stack_images(find_project().stack_dir(stack), console=ui.console).items():
        ui.info(f"{tag}: {image_id[:19]}")


@task(help=BUNDLE_HELP)
@user_errors
def bundle(c, stack=None, version=None, dist=None, sign=None, docker_static=None, compress="gzip", level=6):
    """Build stand-in images for the stack's recipes (devkit), then the offline bundle (ferry bundle)."""
    from devkit.images import build_stack_images
    from ferry import cli
    from ferry.controller.project import find_project
    stack_dir = find_project().stack_dir(stack)
    build_stack_images(stack_dir, console=UI().console)
    cli.bundle.body(c, stack=stack, version=version, dist=dist, sign=sign, docker_static=docker_static,
                    compress=compress, level=level)


@task(help={"count": "sandbox hosts to start"})
@user_errors
def demo(c, count=3):
    """Quickstart: sandbox up, bundle llm-chat, deploy to prod, then curl its health from here."""
    import urllib.request
    from ferry import cli
    from ferry.controller.inventory import Inventory
    sandbox_up.body(c, count=count)
    bundle.body(c, stack="llm-chat")
    cli.deploy.body(c, host="prod", stack="llm-chat")
    inv = Inventory(sandbox_inventory())
    ip = inv.select("prod")[0].vars["ansible_host"]
    with urllib.request.urlopen(f"http://{ip}/api/health", timeout=10) as r:
        UI().info(f"curl http://{ip}/api/health -> {r.status} {r.read().decode().strip()}")


#: Parallel pytest workers of `inv test` (each with its own 6-host sandbox); 0: one
#: pytest process, one sandbox (see the README's Tests section). The end-to-end modules
#: mostly wait (health checks, SSH round trips, containers starting), so 3 workers on
#: 2 cores still shorten the run.
TEST_WORKERS = 3


def prebuild(console=None) -> list[tuple[str, float]]:
    """Build, once and before pytest starts, what the end-to-end tier's workers share: the
    sandbox host images (Debian host, host without dpkg, world host), the stand-in images
    of the stacks and the test stacks (the imported test projects' recipes work only once
    copied into a stack: their test builds them), the Docker payload's debs and Compose
    binary, and the two Docker static tarballs. Each is a no-op
    when up to date (cache and engine). Returns (what, seconds) per step.

    Raises:
        FerryError: a build failed (its one-line reason).
    """
    from devkit import docker_tarball, sandbox
    from devkit.images import build_stack_images
    from ferry.controller.dockerdist import build_docker_payload
    from ferry.roles import role_defaults
    import tempfile

    steps: list[tuple[str, object]] = [
        ("sandbox host images", lambda: (sandbox.build_host_image(console),
                                         sandbox.build_host_image(console, sandbox.RECIPE_NODPKG, sandbox.NODPKG_TAG),
                                         sandbox.build_world_image(console))),
    ]
    for stack in sorted([*(ROOT / "stacks").glob("*/stack.yml"), *(ROOT / "tests/e2e/stacks").glob("*/stack.yml")]):
        steps.append((f"stand-in images of {stack.parent.name}",
                      lambda d=stack.parent: build_stack_images(d, console=console)))

    def payload():
        with tempfile.TemporaryDirectory(prefix="ferry-prebuild-") as tmp:
            build_docker_payload(Path(tmp) / "docker", role_defaults("install-docker-offline"), console)
    steps.append(("Docker payload", payload))
    for suite in sorted(docker_tarball.SUITES):
        steps.append((f"Docker static tarball ({suite})", lambda s=suite: docker_tarball.assemble(s, console)))
    spent = []
    for what, step in steps:
        started = time.monotonic()
        step()
        spent.append((what, time.monotonic() - started))
    return spent


def _worker_sandboxes(name: str) -> list[str]:
    """Names of the sandboxes pytest-xdist workers of sandbox ``name`` made (``<name>-gw0``...)."""
    from ferry.controller.localdocker import docker, engine_running
    if not engine_running():
        return []
    from devkit.sandbox import LABEL
    out = docker("ps", "-a", "--filter", f"label={LABEL}", "--format", f'{{{{.Label "{LABEL}"}}}}').stdout.decode()
    out += docker("network", "ls", "--filter", f"label={LABEL}", "--format", f'{{{{.Label "{LABEL}"}}}}').stdout.decode()
    return sorted({n for n in out.split() if re.fullmatch(re.escape(name) + r"-gw\d+", n)})


def _sandboxes_down(names: list[str]) -> None:
    """``inv sandbox.down`` for each sandbox in ``names``, in parallel."""
    procs = [subprocess.Popen([sys.executable, "-m", "invoke", "sandbox.down"], cwd=ROOT,
                              env={**os.environ, "FERRY_SANDBOX_NAME": n},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in names]
    for n, proc in zip(names, procs):
        _, err = proc.communicate()
        if proc.returncode:
            UI().info(f"sandbox {n}: not removed: {err.decode(errors='replace').strip()[-300:]}")


@task(help={"k": "only tests matching this pytest -k expression", "unit": "skip the end-to-end tier",
            "workers": f"parallel pytest workers, each with its own sandbox (default {TEST_WORKERS}; 0: one process)",
            "keep": "keep the sandbox hosts after the run, to look at them (default: removed)"})
@user_errors
def test(c, k=None, unit=False, workers=TEST_WORKERS, keep=False):
    """Run the test suite (pure, fake-transport and end-to-end tiers), in parallel workers."""
    from devkit import sandbox
    workers = int(workers)
    argv = [sys.executable, "-m", "pytest", "-q"]
    if unit:
        argv += ["-m", "not e2e"]
    if k:
        argv += ["-k", k]
    if keep:
        argv += ["--e2e-keep-hosts"]
    if workers > 0:
        # one module per unit of work, handed out in the order the e2e conftest sorts
        argv += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    ui = UI()
    if not unit:
        left = _worker_sandboxes(sandbox.NAME)
        if left:                                   # left by a run that was killed
            ui.info(f"removing the sandboxes of an earlier run: {', '.join(left)}")
            _sandboxes_down(left)
        started = time.monotonic()
        spent = prebuild(ui.console)
        ui.info(f"prebuilt images and payloads in {time.monotonic() - started:.0f} s: "
                + ", ".join(f"{what} {s:.0f}s" for what, s in spent if s >= 1))
    # SIGTERM (a CI job cancelled or timed out) ends the run as Ctrl-C does: the sandboxes
    # are removed below, not left behind as stopped containers.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        rc = subprocess.call(argv, cwd=ROOT)
    finally:
        if not unit and not keep:
            _sandboxes_down([sandbox.NAME, *_worker_sandboxes(sandbox.NAME)])
        signal.signal(signal.SIGTERM, previous)
    if rc:
        raise Exit(code=rc)


def collections() -> list:
    """The devkit's tasks and collections, for ``tasks.py``."""
    sandbox = Collection("sandbox")
    sandbox.add_task(sandbox_up, "up")
    sandbox.add_task(sandbox_down, "down")
    sandbox.add_task(sandbox_status, "status")
    return [sandbox, standins, bundle, demo, test]
