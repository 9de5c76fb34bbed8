"""Inventory benchmark: what reading an inventory with ansible-core costs each command.

Prints, in one run, interleaved ``--rounds`` times (medians of wall time and of CPU
time, user + system; CPU time is the figure to trust on a busy machine):

1. ``ferry inventory --json`` as a ratio to ``ansible-inventory --list`` on the same
   inventory (both whole processes, same vault password file);
2. the part of a Ferry command that is the inventory: a process that only imports
   Ferry's CLI, against one that also resolves the inventory (ansible-core import,
   plugin loader set-up, parsing, variables, Jinja), i.e. what every ``inv deploy``
   pays for it;
3. the inventory snapshot (``ferry.controller.inventory_cache``): ``ferry inventory
   --json`` on a static inventory shaped like the sandbox's (``--static``; no vault, no
   Jinja, so it is cached) read from its snapshot, as a ratio to the same command with
   ``FERRY_INVENTORY_CACHE=off`` (ansible-core imported and run), interleaved rounds,
   min and median (``benchmarks/ratio.py``).

Usage (after ``make bootstrap``)::

    .venv/bin/python benchmarks/inventory_bench.py [--rounds 5] [--inventory tests/fixtures/inventories/ini/hosts.ini]
        [--static INVENTORY]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratio import ROOT, ferry, figure, interleave, load, timed as timed_wall  # noqa: E402

sys.path.insert(0, str(ROOT))
from ferry.ui import UI  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = ROOT / "tests/fixtures/inventories/vault-password.txt"

#: A static inventory shaped like ``devkit.sandbox``'s (what ``inv deploy`` and the
#: e2e tests read): connection variables, two groups, six hosts.
STATIC = """all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: id_ed25519
    ferry_known_hosts: known_hosts
  children:
    prod:
      hosts:
        bench-1: {ansible_host: 172.30.0.11, ansible_port: 22}
    staging:
      hosts:
""" + "".join(f"        bench-{n}: {{ansible_host: 172.30.0.{10 + n}, ansible_port: 22}}\n" for n in range(2, 7))


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inventory", default=str(ROOT / "tests/fixtures/inventories/ini/hosts.ini"))
    ap.add_argument("--static", help="a static inventory for figure 3 (default: one like the sandbox's)")
    args = ap.parse_args()
    snapshot_figure(args.rounds, args.static)
    with tempfile.TemporaryDirectory() as project:
        commands = {
            "ansible-inventory --list": [str(BIN / "ansible-inventory"), "-i", args.inventory,
                                         "--vault-password-file", str(PASSWORD), "--list"],
            "ferry inventory --json": [str(BIN / "ferry"), "--project", project, "inventory", "-i", args.inventory,
                                       "--vault-password-file", str(PASSWORD), "--json"],
            "python: import ferry.cli": [sys.executable, "-c", "import ferry.cli"],
            "python: import ferry.cli + Inventory()": [
                sys.executable, "-c",
                "import sys, ferry.cli; from ferry.controller.inventory import Inventory; "
                "Inventory(sys.argv[1], [sys.argv[2]]).select('all')", args.inventory, str(PASSWORD)],
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                wall, cpu = timed(argv)
                walls[name].append(wall)
                cpus[name].append(cpu)
    wall = {name: statistics.median(t) for name, t in walls.items()}
    cpu = {name: statistics.median(t) for name, t in cpus.items()}
    for name in commands:
        print(f"{name:42s} median wall {wall[name]:5.2f} s, CPU {cpu[name]:5.2f} s")
    for what, med in (("wall", wall), ("CPU", cpu)):
        print(f"{what}: ferry inventory / ansible-inventory = "
              f"{med['ferry inventory --json'] / med['ansible-inventory --list']:.2f}x; inventory cost per Ferry "
              f"command = {med['python: import ferry.cli + Inventory()'] - med['python: import ferry.cli']:.2f} s")


def snapshot_figure(rounds: int, static: str | None) -> None:
    """Figure 3: ``ferry inventory --json`` from the snapshot / with snapshots off."""
    with tempfile.TemporaryDirectory() as tmp:
        project, cache = Path(tmp, "project"), Path(tmp, "cache")
        project.mkdir()
        inventory = Path(static) if static else Path(tmp, "inventory.yml")
        if not static:
            inventory.write_text(STATIC)
        argv = ferry("--project", str(project), "inventory", "-i", str(inventory), "--json")
        env = {"FERRY_INVENTORY_CACHE_DIR": str(cache)}
        os.environ.pop("FERRY_INVENTORY_CACHE", None)
        timed_wall(argv, env)                     # writes the snapshot
        if not list(cache.glob("*.json")):
            raise SystemExit(f"{inventory} is not cached (vault, Jinja, a secret name or a script): "
                             "figure 3 needs a static inventory")
        seconds = interleave(rounds, {
            "snapshot": lambda: timed_wall(argv, env)[0],
            "off": lambda: timed_wall(argv, {**env, "FERRY_INVENTORY_CACHE": "off"})[0],
        })
    figure(UI(), f"ferry inventory --json, {inventory.name} ({load()})",
           ("from the snapshot", seconds["snapshot"]), ("FERRY_INVENTORY_CACHE=off", seconds["off"]),
           "< 1 (no ansible-core import)")


if __name__ == "__main__":
    main()
