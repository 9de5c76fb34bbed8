"""Fixtures for end-to-end tests against real sandbox hosts (see ``devkit.sandbox``).

The ``sandbox`` fixture brings up 6 *fresh* hosts (``<name>-1..6``: no Docker, empty
``/var/lib/docker``) once per test session. It does not remove them at the end (``inv
test`` does, unless ``--keep``; ``inv sandbox.down``), but when a module is done the
hosts it changed are reset and the extra hosts' containers removed: a stack left running
costs the 2-core machine its healthchecks while the other modules run. To look at a
module's hosts as it left them, run it alone with ``--e2e-keep-hosts``.

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

**Parallel workers** (pytest-xdist, ``inv test --workers N``: ``pytest -n N --dist loadfile``;
not ``loadgroup``, whose groups pytest 9's node IDs no longer carry). Each
worker has a sandbox of its own, named ``<FERRY_SANDBOX_NAME>-<worker>`` (``ferry-sandbox-gw0``
...: containers, networks, state directory ``.sandbox-ferry-sandbox-gw0/``), so workers
never share a host; the stand-in and host images are the engine's, built before pytest
starts (``inv test``) or under a file lock. A module is one unit of work (its tests
keep their order on one worker), and the modules are handed out longest first
(:data:`SECONDS`), so that no long module starts last.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

# Under pytest-xdist each worker has its own sandbox: set before devkit.sandbox reads it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["FERRY_SANDBOX_NAME"] = (f"{os.environ.get('FERRY_SANDBOX_NAME', 'ferry-sandbox')}-"
                                        f"{os.environ['PYTEST_XDIST_WORKER']}")
# `inv ...` run by a test defaults to this sandbox's inventory (tasks.py), not to one
# inherited from the `inv test` that started pytest.
os.environ.pop("FERRY_INVENTORY", None)

from devkit import sandbox as sandbox_mod  # noqa: E402  (reads FERRY_SANDBOX_NAME)

if os.environ.get("PYTEST_XDIST_WORKER") and not sandbox_mod.NAME.endswith(f"-{os.environ['PYTEST_XDIST_WORKER']}"):
    raise RuntimeError(f"devkit.sandbox was imported before tests/e2e/conftest.py: worker "
                       f"{os.environ['PYTEST_XDIST_WORKER']} would share sandbox {sandbox_mod.NAME}")

# A suite started in the background by a non-interactive shell (`make test &`, nohup, some
# CI runners) inherits SIGINT *ignored*, and an ignored signal stays ignored across exec:
# every `inv`/`ferry` the tests start would then shrug off the Ctrl-C the interruption
# tests send. Handle SIGINT here, so child processes start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HOSTS = 6
PRISTINE, CLEAN, USED = "pristine", "clean", "used"
_ledger = None   # the session's Ledger, made by the sandbox fixture


def pytest_addoption(parser):
    parser.addoption("--e2e-shuffle", metavar="SEED", default=None,
                     help="run the end-to-end test modules in a random order (each module's tests keep theirs)")
    parser.addoption("--e2e-hosts", type=int, default=HOSTS, metavar="N",
                     help=f"sandbox hosts to bring up (default {HOSTS}); fewer for a module that claims "
                          "only the first ones, on a loaded machine")
    parser.addoption("--e2e-keep-hosts", action="store_true", default=False,
                     help="leave each module's hosts as it left them (default: reset when the module is done)")
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
        if self.state[name] != PRISTINE and (fresh or self.state[name] != CLEAN):
            started = time.monotonic()
            if fresh:
                sandbox_mod.recreate_host(name)
                self.state[name] = PRISTINE
            else:
                sandbox_mod.reset_host(name)
            self.spent.append((module, name, "recreated" if fresh else "reset", time.monotonic() - started))
        if not readonly:
            self.state[name] = USED


    def quiesce(self, module: str, names: list[str]) -> None:
        """Reset the hosts a module changed, once it is done with them (at once): a stack
        left running costs the machine CPU (healthchecks every 2 s) while other modules
        run, and the next module to claim one as clean then finds it so."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(sandbox_mod.reset_host, names))
        for name in names:
            self.state[name] = CLEAN
        if names:
            self.spent.append((module, ",".join(names), "reset after", time.monotonic() - started))


@pytest.fixture(scope="module", autouse=True)
def _claimed_hosts(request):
    """Claim the hosts of the module's ``hosts`` marker (see the module docstring); when
    the module is done, reset the ones it changed and stop what runs on the extra hosts
    (world, no-dpkg, swarm: :func:`devkit.sandbox.quiesce_extra_hosts`)."""
    marks = list(request.node.iter_markers("hosts"))
    changed: list[str] = []
    if marks:
        sb = request.getfixturevalue("sandbox")
        assert _ledger is not None
        for mark in marks:
            for name in mark.args or [h.name for h in sb.hosts]:
                _ledger.claim(request.node.name, name, mark.kwargs.get("fresh", False),
                              mark.kwargs.get("readonly", False))
                if not mark.kwargs.get("readonly", False) and name not in changed:
                    changed.append(name)
    yield
    if _ledger is not None and not request.config.getoption("--e2e-keep-hosts"):
        _ledger.quiesce(request.node.name, changed)
        sandbox_mod.quiesce_extra_hosts()


def _rank(item) -> int:
    """Modules that want fresh hosts first (read-only ones before the others): the
    sandbox is fresh at the start, so they then cost no recreation."""
    hosts = list(item.iter_markers("hosts"))
    if any(m.kwargs.get("fresh") and m.kwargs.get("readonly") for m in hosts):
        return 0
    return 1 if any(m.kwargs.get("fresh") for m in hosts) else 2


#: Wall seconds of each end-to-end module, measured one module at a time on a loaded
#: 2-core machine (load 10-20, 2026-11-23): under pytest-xdist the modules are handed out
#: longest first. Only the order depends on it; refresh it when a module grows much.
SECONDS: dict[str, float] = {
    "test_static_engine": 900, "test_swarm": 900, "test_import_projects": 900, "test_backup_llm_chat": 850,
    "test_releases_rollback": 650, "test_interruptions": 540, "test_deploy_llm_chat": 450,
    "test_day2_commands": 400, "test_world_llm_chat": 380, "test_bad_input_llm_chat": 350,
    "test_stack_xiaozhi": 350, "test_backup_defaults": 300, "test_backup_mariadb_redis": 300,
    "test_uninstall": 300, "test_layer_transfer": 300, "test_old_format_host": 300,
    "test_stack_chatgpt_on_wechat": 250, "test_stack_uni_load": 250, "test_standin_images": 200,
    "test_ssh_world": 150, "test_stack_corp_wechat_gptbot": 150, "test_installed_command": 150,
    "test_bundle_trust": 150, "test_stack_mistakes_refused": 100, "test_sandbox_hosts": 100,
    "test_stack_added_from_folder": 100, "test_docker_payload": 20,
}
#: What a module missing from :data:`SECONDS` counts: end-to-end / other tiers.
DEFAULT_SECONDS, DEFAULT_SECONDS_UNIT = 300.0, 10.0


def _seconds(item) -> float:
    name = item.module.__name__.rsplit(".", 1)[-1]
    if name in SECONDS:
        return SECONDS[name]
    return DEFAULT_SECONDS if item.get_closest_marker("e2e") else DEFAULT_SECONDS_UNIT


def _parallel(config) -> bool:
    """True under pytest-xdist (on the controller and in its workers)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) or \
        (config.pluginmanager.hasplugin("xdist") and bool(getattr(config.option, "numprocesses", None)))


def pytest_collection_modifyitems(session, config, items):
    """Order by :func:`_rank` (stable: each module's tests keep their order), or shuffle
    the modules with ``--e2e-shuffle SEED``. Under pytest-xdist (``--dist loadfile``: a
    module is one unit of work, handed out in this order): read-only fresh modules first,
    then longest first (:data:`SECONDS`)."""
    seed = config.getoption("--e2e-shuffle")
    if seed is None:
        if _parallel(config):
            items.sort(key=lambda item: (_rank(item) > 0, -_seconds(item), item.module.__name__))
        else:
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
    spent = (_ledger.spent if _ledger is not None else []) + getattr(config, "_e2e_workers_spent", [])
    if spent:
        total = sum(s for *_, s in spent)
        terminalreporter.write_line(f"sandbox hosts put in known states: {len(spent)} times, {total:.1f} s: "
                                    + ", ".join(f"{n} {how} for {m} ({s:.1f}s)" for m, n, how, s in spent))


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its ledger's spent seconds to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and _ledger is not None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        workeroutput["e2e_spent"] = json.dumps([(m, f"{n}@{worker}", how, s) for m, n, how, s in _ledger.spent])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller collects each worker's ledger (:func:`pytest_sessionfinish`)."""
    spent = getattr(node, "workeroutput", {}).get("e2e_spent")
    if spent:
        config = node.config
        config._e2e_workers_spent = getattr(config, "_e2e_workers_spent", []) + [tuple(x) for x in json.loads(spent)]


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
