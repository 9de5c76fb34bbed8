"""Snapshots of resolved inventories, so a command whose inventory did not change reads
it without importing ansible-core (about 0.4 s per command).

:class:`ferry.controller.inventory.Inventory` decides what is worth a snapshot (see its
docstring: no vault, no Jinja, no secret-named variable, static files only) and what a
snapshot holds; this module only says where snapshots live, names them by a key and
reads and writes them.

The key (:func:`cache_key`) is the sha256 of a JSON document holding
:data:`FORMAT`, Ferry's and ansible-core's versions, the absolute source path, every
file of the source (the file itself, or the whole tree of a directory source) and of the
``group_vars/`` and ``host_vars/`` trees next to it (relative path and content sha256;
names starting with ``.`` are skipped, as Ansible skips them), every ``ANSIBLE_*``
environment variable, the contents of each ``ansible.cfg`` Ansible may read
(``$ANSIBLE_CONFIG``, ``./ansible.cfg``, ``~/.ansible.cfg``, ``/etc/ansible/ansible.cfg``)
and the vault password file paths given. Any change to one of them is another key.

Snapshots are JSON files ``<key>.json`` in :func:`cache_dir`: a directory of the user's
own, mode 0700 (a directory that is not is neither read nor written), files 0600,
written to a temporary file and renamed. At most :data:`KEEP` are kept (the least
recently used go). ``FERRY_INVENTORY_CACHE=off`` turns reads and writes off. A snapshot
that cannot be read or does not parse is ignored: the inventory is loaded in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from .hashcache import sha256_file

#: Version of the snapshot layout and of the key document; bump on any change.
FORMAT = 1

#: How many snapshots :func:`write` keeps in the cache directory.
KEEP = 32

#: Suffixes of files Ansible's ``auto`` inventory plugin reads (a YAML file naming a
#: ``plugin:`` is a dynamic inventory, never cached).
_PLUGIN_SUFFIXES = (".yml", ".yaml")

#: Directories next to an inventory that hold variables, not inventory sources.
_VARS_DIRS = ("group_vars", "host_vars")


def enabled() -> bool:
    """False when ``FERRY_INVENTORY_CACHE`` is ``off`` (also ``0``, ``no``, ``false``)."""
    return os.environ.get("FERRY_INVENTORY_CACHE", "").strip().lower() not in ("off", "0", "no", "false")


def cache_dir() -> Path:
    """Where snapshots live: ``$FERRY_INVENTORY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ferry/inventory``, else ``~/.cache/ferry/inventory``."""
    given = os.environ.get("FERRY_INVENTORY_CACHE_DIR")
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ferry" / "inventory"


class _NotCacheable(Exception):
    """A source file that must not be cached (executable, special, a plugin config)."""


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative path, path)`` of every file under ``root`` (``root`` itself when it
    is a file), sorted, following symbolic links once, skipping names that start with
    ``.`` (as Ansible does in inventory directories and ``group_vars/``)."""
    if not root.is_dir():
        yield root.name, root
        return
    seen: set[str] = set()
    for top, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:            # a link loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(top) / name
            yield path.relative_to(root).as_posix(), path


def _fingerprint(root: Path, source: bool) -> list[list[str]]:
    """``[[relative path, sha256], ...]`` of ``root``'s files (see :func:`_files`).

    Raises:
        _NotCacheable: a file is not a regular file (a FIFO, a socket...); or, when
            ``source`` (inventory sources, not variables), an executable file (an
            inventory script) or a YAML file with a top-level ``plugin:`` key.
        OSError: a file cannot be read.
    """
    out = []
    for rel, path in _files(root):
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise _NotCacheable(f"{path} is not a regular file")
        if source and not any(part in _VARS_DIRS for part in Path(rel).parts[:-1]):
            if mode & 0o111:
                raise _NotCacheable(f"{path} is executable (an inventory script)")
            if path.suffix.lower() in _PLUGIN_SUFFIXES and _names_plugin(path):
                raise _NotCacheable(f"{path} configures an inventory plugin")
        out.append([rel, sha256_file(path)])
    return out


def _names_plugin(path: Path) -> bool:
    """True when YAML file ``path`` is a mapping with a ``plugin`` key (an inventory
    plugin's configuration), or cannot be read as plain YAML (Ansible's own tags:
    better not cached than misjudged)."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=loader)   # noqa: S506 (a safe loader)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return True
    return isinstance(data, dict) and "plugin" in data


def _config_files() -> list[Path]:
    """The ``ansible.cfg`` files Ansible may read, in its order of search."""
    out = []
    given = os.environ.get("ANSIBLE_CONFIG")
    if given:
        p = Path(given).expanduser()
        out.append(p / "ansible.cfg" if p.is_dir() else p)
    out += [Path.cwd() / "ansible.cfg", Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    return out


def _ansible_core_version() -> str | None:
    """ansible-core's version without importing it: ``__version__`` of the
    ``ansible/release.py`` Python would import (a text read, 0.1 ms; the package
    metadata costs 18 ms), else its distribution's metadata; None if not installed."""
    import importlib.util
    import re
    with contextlib.suppress(ImportError, ValueError, OSError, TypeError, IndexError):
        spec = importlib.util.find_spec("ansible")
        if spec is not None and spec.submodule_search_locations:
            text = (Path(list(spec.submodule_search_locations)[0]) / "release.py").read_text()
            found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
            if found:
                return found.group(1)
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ansible-core")
    except PackageNotFoundError:
        return None


def cache_key(source: Path, base_dir: Path, vault_password_files: Sequence[str | Path] = ()) -> str | None:
    """The key (64 hex digits) of inventory ``source`` (a file or a directory, as given
    to ``ansible -i``; ``base_dir`` is its directory, or itself) in this environment,
    as the module docstring describes; None when caching is off, ansible-core is not
    installed, or a source file must not be cached (executable, a special file, a
    YAML ``plugin:`` configuration) or cannot be read (the full load reports it)."""
    if not enabled():
        return None
    ansible_version = _ansible_core_version()
    if ansible_version is None:
        return None
    from .. import __version__
    source = source.absolute()
    try:
        files = {"source": _fingerprint(source, source=True)}
        for name in _VARS_DIRS:
            tree = base_dir.absolute() / name
            if tree.exists():
                files[name] = _fingerprint(tree, source=False)
        configs = []
        for cfg in _config_files():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                configs.append([str(cfg), sha256_file(cfg)])
    except (_NotCacheable, OSError):
        return None
    document = {
        "format": FORMAT, "ferry": __version__, "ansible_core": ansible_version, "source": str(source),
        "files": files, "env": sorted([k, v] for k, v in os.environ.items() if k.startswith("ANSIBLE_")),
        "configs": configs, "vault_password_files": [str(p) for p in vault_password_files],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _private_dir(create: bool) -> Path | None:
    """:func:`cache_dir` if it is a directory of this user's with mode 0700 (made so when
    ``create`` and missing), else None."""
    root = cache_dir()
    if create and not root.exists():
        with contextlib.suppress(OSError):
            root.parent.mkdir(parents=True, exist_ok=True)
            root.mkdir(mode=0o700)
            os.chmod(root, 0o700)     # whatever the umask
    try:
        st = root.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return root


def read(key: str) -> dict[str, Any] | None:
    """The snapshot stored under ``key`` (a JSON object whose ``key`` field is ``key``),
    or None: none, caching off, or not readable / not JSON / not this key (ignored,
    never an error). A snapshot read counts as used (for :data:`KEEP`)."""
    if not enabled():
        return None
    root = _private_dir(create=False)
    if root is None:
        return None
    path = root / f"{key}.json"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return None
            data = json.loads(f.read())
        with contextlib.suppress(OSError):
            os.utime(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("format") != FORMAT:
        return None
    return data


def write(key: str, snapshot: dict[str, Any]) -> bool:
    """Store ``snapshot`` (JSON data) under ``key``: mode 0600, a temporary file renamed
    into place; then remove the least recently used beyond :data:`KEEP`. Returns
    whether it was stored (never raises for a file system problem: the cache is an
    optimisation)."""
    if not enabled():
        return False
    root = _private_dir(create=True)
    if root is None:
        return False
    try:
        body = json.dumps({**snapshot, "format": FORMAT, "key": key}).encode()
    except (TypeError, ValueError):          # not JSON data after all: not cached
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(body)
        os.replace(tmp, root / f"{key}.json")
        tmp = None
    except OSError:
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _prune(root)
    return True


def _prune(root: Path) -> None:
    """Remove the least recently used snapshots beyond :data:`KEEP`."""
    try:
        found = []
        for p in root.glob("*.json"):
            with contextlib.suppress(OSError):
                found.append((p.stat().st_mtime, p))
    except OSError:
        return
    found.sort(reverse=True)
    for _, p in found[KEEP:]:
        with contextlib.suppress(OSError):
            p.unlink()
