"""Fixtures for end-to-end tests against real sandbox hosts (see ``devkit.sandbox``).

The ``sandbox`` fixture brings up 6 *fresh* hosts (``ferry-sandbox-1..6``: no Docker,
empty ``/var/lib/docker``) once per test session, in the default state directory
``<repo>/.sandbox``. It deliberately does NOT tear them down at the end, so a developer
can inspect the hosts after a run (``ssh -i .sandbox/id_ed25519 -o
UserKnownHostsFile=.sandbox/known_hosts root@<ip>``, or ``docker exec -it
ferry-sandbox-1 bash``); remove them with ``devkit.sandbox.down()``.
"""

from __future__ import annotations

import pytest

from devkit import sandbox as sandbox_mod


@pytest.fixture(scope="session")
def sandbox() -> sandbox_mod.Sandbox:
    """A freshly created 6-host sandbox (``prod`` = sandbox-1, ``staging`` = sandbox-2..6)."""
    return sandbox_mod.up(count=6, fresh=True)


def pytest_collection_modifyitems(session, config, items):
    """Run the sandbox self-checks first, while the hosts are still fresh, and the
    backup tests last.

    ``test_sandbox_hosts.py`` asserts e.g. that no host has Docker yet; other e2e tests
    share the session-scoped ``sandbox`` and deploy onto it. Stable sort: the order
    within each group is kept.
    """
    def rank(item) -> int:
        if item.path.name == "test_sandbox_hosts.py":
            return 0
        # the backup tests deploy onto hosts the deploy tests expect fresh: they go last
        return 2 if item.path.name.startswith("test_backup_") else 1
    items.sort(key=rank)


@pytest.fixture(scope="session")
def world(sandbox) -> sandbox_mod.Sandbox:
    """The sandbox plus the hosts that look like the world (``devkit.sandbox.WORLD``):
    ``world-sudo`` (only ``deploy`` logs in, sudo NOPASSWD), ``world-sudopw`` (sudo wants
    ``deploy``'s password, in ``host_vars/world-sudopw.yml``), ``world-bastion`` (``jump``
    on port 2222) and ``world-inner``, reachable only through the bastion. Fresh, like
    the sandbox's hosts."""
    return sandbox_mod.up(count=len(sandbox.hosts), state_dir=sandbox.state_dir, world=True)
