"""What every action needs: the hosts of a stack, with their merged variables."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..controller.inventory import Host, Inventory
from ..host.session import HostSession, open_hosts
from ..host.transport.ssh import connect_host
from ..model.paths import HostPaths
from ..model.stack import Stack
from ..model.vars import Declarations, Layer
from ..roles import role_declarations


def declarations(stack: Stack) -> Declarations:
    """Every variable the roles and ``stack`` declare (a stack's new defaults applied).

    Raises:
        FerryError: a stack variable declared by a role too, or a new default for a
            variable nothing declares.
    """
    return (role_declarations() + stack.variables).complete()


def host_variables(host: Host, stack: Stack, sets: dict[str, Any]) -> dict[str, Any]:
    """Merged and checked variables for one host: role defaults < stack defaults <
    group/host vars < ``--set`` (text, see :func:`ferry.model.vars.coerce`).

    Returns:
        The merged variables, declared ones converted to their type.

    Raises:
        FerryError: one line naming where a value comes from, the key, the host and
            the rule it breaks (see :meth:`ferry.model.vars.Declarations.check`).
    """
    return declarations(stack).check([Layer("inventory", host.vars, host.origins), Layer("--set", sets, text=True)],
                                     host.name)


def unknown_variable_warnings(hosts: list[Host], stack: Stack, sets: dict[str, Any],
                              known: Iterable[str] = ()) -> list[str]:
    """One line per variable set in the inventory or with ``--set`` that nothing declares
    (a typo?), naming where it is set, its hosts and the closest declared name.

    Args:
        hosts: the selected hosts.
        stack: the stack being run.
        sets: ``--set`` values.
        known: names declared elsewhere (other stacks of the project), not reported.
    """
    decls = declarations(stack)
    found: dict[str, list[Host]] = {}
    for h in hosts:
        for name in decls.unknown([*h.vars, *sets], known):
            found.setdefault(name, []).append(h)
    out = []
    for name, where in sorted(found.items()):
        origin = "--set" if name in sets else where[0].origins.get(name, "inventory")
        hint = decls.suggest(name)
        out.append(f"{origin}: variable '{name}' (hosts {', '.join(h.name for h in where)}) is declared by no role "
                    f"or stack ({stack.name}): a typo?" + (f" did you mean '{hint}'?" if hint else ""))
    return out


@contextlib.contextmanager
def stack_hosts(inventory_path: Path, pattern: str, stack: Stack, sets: dict[str, Any],
                bundle: str = "") -> Iterator[list[HostSession]]:
    """Open every host ``pattern`` selects in ``inventory_path`` for ``stack``.

    Raises:
        FerryError: bad inventory or pattern; HostError: a host unreachable or its key
            unknown/changed (no host is touched then).
    """
    inventory = Inventory(inventory_path)
    hosts = inventory.select(pattern)
    with open_hosts(hosts, lambda h: host_variables(h, stack, sets),
                    lambda name, v: HostPaths(str(v["ferry_root"]), stack.name, bundle),
                    lambda h: connect_host(h, inventory)) as sessions:
        yield sessions
