"""Fixtures for end-to-end tests against real sandbox hosts (see ``devkit.sandbox``).

The ``sandbox`` fixture brings up 8 *fresh* hosts (``ferry-sandbox-1..8``: no Docker,
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
    """A freshly created 8-host sandbox (``prod`` = sandbox-1, ``staging`` = sandbox-2..8).

    sandbox-1..6: the deploy, stack, release and interruption tests; sandbox-7: bundle
    trust and layer transfer (test_bundle_trust.py, test_layer_transfer.py); sandbox-8: a
    host deployed by the Ferry before layer transfer (test_old_format_host.py)."""
    return sandbox_mod.up(count=8, fresh=True)


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
