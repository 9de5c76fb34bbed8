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
    """Run the sandbox self-checks first, while the hosts are still fresh, the backup
    tests after the others, and the static-engine tests last (nothing after them may
    recreate the sandbox).

    ``test_sandbox_hosts.py`` asserts e.g. that no host has Docker yet; other e2e tests
    share the session-scoped ``sandbox`` and deploy onto it. Stable sort: the order
    within each group is kept.
    """
    def rank(item) -> int:
        if item.path.name == "test_sandbox_hosts.py":
            return 0
        # adds a host without dpkg to the sandbox as it runs (keeping the regular hosts)
        if item.path.name == "test_static_engine.py":
            return 3
        # the backup tests deploy onto hosts the deploy tests expect fresh: they go last
        return 2 if item.path.name.startswith("test_backup_") else 1
    items.sort(key=rank)
