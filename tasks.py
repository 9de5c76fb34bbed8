"""The checkout's ``inv`` tasks: Ferry's own commands (``ferry.cli``, the same as the
installed ``ferry`` command) plus the devkit's (``devkit.tasks``: sandbox hosts,
stand-in images, demo, tests). ``inv --list`` shows them all."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from devkit import tasks as dev  # noqa: E402
from ferry import cli  # noqa: E402

# In the checkout, the sandbox's inventory is the default one (-i or $FERRY_INVENTORY win).
os.environ.setdefault("FERRY_INVENTORY", str(dev.sandbox_inventory()))
os.environ.setdefault("FERRY_PROJECT", str(ROOT))

ns = cli.namespace(*dev.collections())
