"""The checkout's development tasks (``inv sandbox.*``, ``inv demo``, ``inv test``), and
``inv bundle`` building stand-in images first. Not part of the installed product."""

from __future__ import annotations

import os
import subprocess
import sys
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


@task(help={"k": "only tests matching this pytest -k expression", "unit": "skip the end-to-end tier"})
def test(c, k=None, unit=False):
    """Run the test suite (pure, fake-transport and end-to-end tiers)."""
    argv = [sys.executable, "-m", "pytest", "-q"]
    if unit:
        argv += ["-m", "not e2e"]
    if k:
        argv += ["-k", k]
    rc = subprocess.call(argv, cwd=ROOT)
    if rc:
        raise Exit(code=rc)


def collections() -> list:
    """The devkit's tasks and collections, for ``tasks.py``."""
    sandbox = Collection("sandbox")
    sandbox.add_task(sandbox_up, "up")
    sandbox.add_task(sandbox_down, "down")
    sandbox.add_task(sandbox_status, "status")
    return [sandbox, standins, bundle, demo, test]
