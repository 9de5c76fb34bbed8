"""Which engine a command runs on: ``ferry_engine`` of the selected hosts, from the
inventory (``compose``, the default: each host on its own with Docker Compose;
``swarm``: the hosts form one Docker Swarm, :mod:`ferry.actions.swarm`).

:data:`ENGINES` maps each engine other than Compose to the module that implements the
commands for it, under the same function names as the Compose actions (``deploy``,
``rollback``, ``verify``, ``status``, ``backup``, ``restore``). An action asks
:func:`for_plan` or :func:`for_selection` first and hands the call over when it gets a
module; a selection mixing engines is refused in one line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from ..controller.inventory import Inventory, load_inventory
from ..errors import FerryError
from ..model.stack import Stack
from ..model.swarm import selection_engine

ENGINES: dict[str, str] = {"swarm": "ferry.actions.swarm"}
"""``ferry_engine`` value -> the module implementing its commands (Compose: none, the
actions themselves)."""


def module(engine: str) -> ModuleType | None:
    """The module of ``engine`` (None for ``compose``)."""
    name = ENGINES.get(engine)
    return importlib.import_module(name) if name else None


def for_plan(plan: Any) -> ModuleType | None:
    """The engine module of a deploy plan's hosts (:class:`ferry.actions.deploy.Plan`).

    Raises:
        FerryError: the hosts mix engines, or one has an unknown ``ferry_engine``.
    """
    return module(selection_engine([(h.name, plan.host_vars[h.name]) for h in plan.hosts]))


def for_selection(inventory_path: Inventory | Path, pattern: str, stack: Stack | None,
                  sets: dict[str, Any]) -> ModuleType | None:
    """The engine module of the hosts ``pattern`` selects (variables as a run merges them).

    Raises:
        FerryError: bad inventory or pattern, mixed or unknown engines.
    """
    from .common import host_variables
    inventory = load_inventory(inventory_path)
    return module(selection_engine([(h.name, host_variables(h, stack, sets)) for h in inventory.select(pattern)]))


def compose_only(inventory_path: Inventory | Path, pattern: str, stack: Stack, sets: dict[str, Any],
                 command: str) -> None:
    """Refuse ``command`` (``remove``, ``logs``, ``exec``, ``restart``...), which acts on
    Compose projects, on hosts of another engine, in one line with what to do there
    (the engine module's ``BY_HAND``).

    Raises:
        FerryError: the selection is a swarm (nothing was done).
    """
    engine = for_selection(inventory_path, pattern, stack, sets)
    if engine is not None:
        hint = getattr(engine, "BY_HAND", {}).get(command, "")
        raise FerryError(f"{command} acts on Compose projects; {pattern} is a swarm, where Ferry does not do it yet"
                         + (f": {hint.format(stack=stack.name)}" if hint else "") + " (nothing was done)")
