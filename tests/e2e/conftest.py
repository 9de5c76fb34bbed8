"""Fixtures for end-to-end tests against real sandbox hosts (see ``devkit.sandbox``).

The ``sandbox`` fixture brings up 6 *fresh* hosts (``<name>-1..6``: no Docker, empty
``/var/lib/docker``) once per test session. It deliberately does NOT tear them down at
the end, so a developer can inspect the hosts after a run (``docker exec -it
<name>-1 bash``); remove them with ``inv sandbox.down``.

**Known states, whatever the order.** A test module names the hosts it uses and the
state it needs with a marker, and gets them in that state before its first test::

    pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-2")]          # clean
    pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-1", fresh=True)]

- *clean* (the default): no container, network or volume, no Ferry file
  (:func:`devkit.sandbox.reset_host`, a few seconds); Docker may be installed, with
  images, or not;
- *fresh*: as created, no Docker at all (:func:`devkit.sandbox.recreate_host`, same
  address and host keys, about 10 s);
- ``readonly=True``: the module promises not to change the hosts, so they stay as they
  were for the next claimant (the sandbox self-checks).

A host that nobody changed since it was created is both clean and fresh: claiming it
costs nothing. So the default order runs the modules that want fresh hosts first; any
other order (``--e2e-shuffle SEED``, or one file alone) works too, it only resets more.
Modules without the marker use no sandbox host. The time spent resetting is printed at
the end of the run.
"""

from __future__ import annotations

import random
import time

import pytest

from devkit import sandbox as sandbox_mod

HOSTS = 6
PRISTINE, USED = "pristine", "used"
_ledger = None   # the session's Ledger, made by the sandbox fixture


def pytest_addoption(parser):
    parser.addoption("--e2e-shuffle", metavar="SEED", default=None,
                     help="run the end-to-end test modules in a random order (each module's tests keep theirs)")
    parser.addoption("--e2e-hosts", type=int, default=HOSTS, metavar="N",
                     help=f"sandbox hosts to bring up (default {HOSTS}); fewer for a module that claims "
                          "only the first ones, on a loaded machine")
    parser.addoption("--e2e-reuse-sandbox", action="store_true", default=False,
                     help="keep the sandbox hosts that run (every claimed host is reset or recreated first) "
                          "instead of creating all of them again")


def pytest_configure(config):
    config.addinivalue_line("markers", "hosts(*names, fresh=False, readonly=False): the sandbox hosts a test "
                                       "module needs and their state (tests/e2e/conftest.py)")


@pytest.fixture(scope="session")
def sandbox(request) -> sandbox_mod.Sandbox:
    """A freshly created 6-host sandbox (``prod`` = sandbox-1, ``staging`` = sandbox-2..6;
    ``--e2e-hosts N`` for N); with ``--e2e-reuse-sandbox`` the running one, its hosts in
    unknown states."""
    global _ledger
    reuse = request.config.getoption("--e2e-reuse-sandbox")
    sb = sandbox_mod.up(count=request.config.getoption("--e2e-hosts"), fresh=not reuse)
    _ledger = Ledger([h.name for h in sb.hosts], USED if reuse else PRISTINE)
    return sb


class Ledger:
    """What each host has been through since the sandbox came up, and the seconds spent
    putting hosts in the states modules asked for."""

    def __init__(self, names: list[str], state: str = PRISTINE):
        self.state = {n: state for n in names}
        self.spent: list[tuple[str, str, str, float]] = []

    def claim(self, module: str, name: str, fresh: bool, readonly: bool) -> None:
        """Bring ``name`` into the clean (or fresh) state unless it is untouched."""
        if name not in self.state:
            raise pytest.UsageError(f"{module}: hosts() names {name!r}, the sandbox has {', '.join(self.state)}")
        if self.state[name] != PRISTINE:
            started = time.monotonic()
            if fresh:
                sandbox_mod.recreate_host(name)
                self.state[name] = PRISTINE
            else:
                sandbox_mod.reset_host(name)
            self.spent.append((module, name, "recreated" if fresh else "reset", time.monotonic() - started))
        if not readonly:
            self.state[name] = USED


@pytest.fixture(scope="module", autouse=True)
def _claimed_hosts(request):
    """Claim the hosts of the module's ``hosts`` marker (see the module docstring)."""
    marks = list(request.node.iter_markers("hosts"))
    if marks:
        sb = request.getfixturevalue("sandbox")
        assert _ledger is not None
        for mark in marks:
            for name in mark.args or [h.name for h in sb.hosts]:
                _ledger.claim(request.node.name, name, mark.kwargs.get("fresh", False),
                              mark.kwargs.get("readonly", False))
    yield


def _rank(item) -> int:
    """Modules that want fresh hosts first (read-only ones before the others): the
    sandbox is fresh at the start, so they then cost no recreation."""
    hosts = list(item.iter_markers("hosts"))
    if any(m.kwargs.get("fresh") and m.kwargs.get("readonly") for m in hosts):
        return 0
    return 1 if any(m.kwargs.get("fresh") for m in hosts) else 2


def pytest_collection_modifyitems(session, config, items):
    """Order by :func:`_rank` (stable: each module's tests keep their order), or shuffle
    the modules with ``--e2e-shuffle SEED``."""
    seed = config.getoption("--e2e-shuffle")
    if seed is None:
        items.sort(key=_rank)
        return
    modules = list(dict.fromkeys(item.module.__name__ for item in items))
    random.Random(seed).shuffle(modules)
    order = {m: i for i, m in enumerate(modules)}
    items.sort(key=lambda item: order[item.module.__name__])
    config._e2e_order = modules


def pytest_report_header(config):
    if config.getoption("--e2e-shuffle") is not None:
        return f"e2e modules shuffled with seed {config.getoption('--e2e-shuffle')}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    order = getattr(config, "_e2e_order", None)
    if order:
        terminalreporter.write_line("e2e module order: " + ", ".join(m.rsplit(".", 1)[-1] for m in order))
    if _ledger is not None and _ledger.spent:
        total = sum(s for *_, s in _ledger.spent)
        terminalreporter.write_line(f"sandbox hosts put in known states: {len(_ledger.spent)} times, {total:.1f} s: "
                                    + ", ".join(f"{n} {how} for {m} ({s:.1f}s)" for m, n, how, s in _ledger.spent))


@pytest.fixture(scope="session")
def world(sandbox) -> sandbox_mod.Sandbox:
    """The sandbox plus the hosts that look like the world (``devkit.sandbox.WORLD``),
    created afresh for the session (whatever ran before): ``world-sudo`` (only ``deploy``
    logs in, sudo NOPASSWD), ``world-sudopw`` (sudo wants ``deploy``'s password, in
    ``host_vars/world-sudopw.yml``), ``world-bastion`` (``jump`` on port 2222) and
    ``world-inner``, reachable only through the bastion. The numbered hosts are left as
    they are (no module claims them through this fixture)."""
    sandbox_mod.remove_world()
    return sandbox_mod.up(count=len(sandbox.hosts), state_dir=sandbox.state_dir, world=True)
