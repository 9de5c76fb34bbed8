"""What every action needs: the hosts of a stack, with their merged variables."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..controller.inventory import Host, Inventory, load_inventory
from ..host.session import HostSession, open_hosts
from ..host.transport.ssh import connect_host
from ..model.paths import HostPaths
from ..model.stack import Stack
from ..model.vars import merge_vars
from ..roles import all_role_defaults


def host_variables(host: Host, stack: Stack, sets: dict[str, Any], roles: list[str] | None = None) -> dict[str, Any]:
    """Merged variables for one host: role defaults (of ``roles``, default: the deploy
    roles) < stack defaults < inventory variables < ``--set``, inventory Jinja rendered
    with all of them visible (:meth:`ferry.controller.inventory.Host.resolve`).

    Raises:
        FerryError: an inventory value Ferry needs cannot be rendered (names it).
    """
    return host.resolve(merge_vars(all_role_defaults(roles), stack.defaults), sets)


@contextlib.contextmanager
def stack_hosts(inventory_path: Inventory | Path, pattern: str, stack: Stack, sets: dict[str, Any],
                bundle: str = "") -> Iterator[list[HostSession]]:
    """Open every host ``pattern`` selects in ``inventory_path`` (an
    :class:`~ferry.controller.inventory.Inventory` or its path) for ``stack``.

    Raises:
        FerryError: bad inventory or pattern; HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(pattern)
    with open_hosts(hosts, lambda h: host_variables(h, stack, sets),
                    lambda name, v: HostPaths(str(v["ferry_root"]), stack.name, bundle),
                    lambda h: connect_host(h, inventory)) as sessions:
        yield sessions
