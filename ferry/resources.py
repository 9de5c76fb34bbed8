"""Where Ferry's own files are: roles, shared templates and files, and the cache.

In a source checkout they are the top-level ``roles/``, ``templates/`` and ``files/``
folders (the design card's layout); an installed Ferry carries the same folders as
package data under ``ferry/_data/`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Ferry's own ``roles``, ``templates`` or ``files`` folder (installed copy first,
    else the source checkout's top-level folder)."""
    installed = _PACKAGE / "_data" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def cache_dir() -> Path:
    """Controller cache (downloaded packages, built payloads): ``$FERRY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ferry``, else ``~/.cache/ferry``."""
    env = os.environ.get("FERRY_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferry"
