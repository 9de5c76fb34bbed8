"""Settings every test tier shares.

Inventory snapshots (:mod:`ferry.controller.inventory_cache`) go to a directory of this
session's own, removed at its end: no test reads a snapshot left by another run or by
the user's own commands. Subprocesses (the ``ferry`` CLI of e2e tests) inherit it."""

import os
import shutil
import tempfile

_INVENTORY_CACHE = tempfile.mkdtemp(prefix="ferry-test-inventory-cache-")
os.environ["FERRY_INVENTORY_CACHE_DIR"] = _INVENTORY_CACHE
os.environ.pop("FERRY_INVENTORY_CACHE", None)


def pytest_unconfigure(config):
    shutil.rmtree(_INVENTORY_CACHE, ignore_errors=True)
