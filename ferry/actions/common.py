"""What every action needs: the hosts of a stack, with their merged variables."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..controller.inventory import Host, Inventory
from ..host.session import HostSession, open_hosts
from ..host.transport.ssh import connect, connection_specs
from ..model.paths import HostPaths
from ..model.stack import Stack
from ..model.vars import merge_vars
from ..roles import all_role_defaults


def host_variables(host: Host, stack: Stack, sets: dict[str, Any]) -> dict[str, Any]:
    """Merged variables for one host: role defaults < stack defaults < group/host vars < --set."""
    return merge_vars(all_role_defaults(), stack.defaults, host.vars, sets)


@contextlib.contextmanager
def stack_hosts(inventory_path: Path, pattern: str, stack: Stack, sets: dict[str, Any],
                bundle: str = "") -> Iterator[list[HostSession]]:
    """Open every host ``pattern`` selects in ``inventory_path`` for ``stack``.

    Raises:
        FerryError: bad inventory, pattern or connection variables (all hosts' are
            checked before any is contacted); HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    specs = connection_specs(hosts, inventory)
    with open_hosts(hosts, lambda h: host_variables(h, stack, sets),
                    lambda name, v: HostPaths(str(v["ferry_root"]), stack.name, bundle),
                    lambda h: connect(specs[h.name])) as sessions:
        yield sessions
