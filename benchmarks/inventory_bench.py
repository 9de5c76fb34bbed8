"""Inventory benchmark: what reading an inventory with ansible-core costs each command.

Prints, in one run, interleaved ``--rounds`` times (medians of wall time and of CPU
time, user + system; CPU time is the figure to trust on a busy machine):

1. ``ferry inventory --json`` as a ratio to ``ansible-inventory --list`` on the same
   inventory (both whole processes, same vault password file);
2. the part of a Ferry command that is the inventory: a process that only imports
   Ferry's CLI, against one that also resolves the inventory (ansible-core import,
   plugin loader set-up, parsing, variables, Jinja), i.e. what every ``inv deploy``
   pays for it.

Usage (after ``make bootstrap``)::

    .venv/bin/python benchmarks/inventory_bench.py [--rounds 5] [--inventory tests/fixtures/inventories/ini/hosts.ini]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = ROOT / "tests/fixtures/inventories/vault-password.txt"


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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
