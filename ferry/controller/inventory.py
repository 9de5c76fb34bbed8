"""Inventory: hosts, groups and their variables, read by Ansible's own code (ansible-core).

Ferry does not parse inventories itself. :class:`Inventory` hands the source (a file or
a directory, as ``ansible -i``) to ansible-core's ``InventoryManager``, asks its
``VariableManager`` for each host's variables exactly as ``ansible-inventory --list``
does, and renders Jinja in those values with Ansible's ``Templar``. So every format and
rule Ansible has applies unchanged: YAML and INI inventories (and any other enabled
inventory plugin), host ranges (``web[01:03]``), ``children``, ``group_vars/`` and
``host_vars/`` next to the source as files or directories (``group_vars/prod/main.yml``),
Ansible's variable precedence (``all`` < parent group < child group <
``ansible_group_priority`` < host), ``hash_behaviour``, ``!vault`` values and
vault-encrypted files, and ``ansible.cfg`` / ``ANSIBLE_*`` settings.

Around it Ferry keeps its own layering, lowest first:

1. role defaults (``roles/<role>/defaults.yml``) and the stack's ``defaults.yml``;
2. the inventory variables (Ansible's precedence inside);
3. ``--set key=value``.

Inventory values are templated with all layers visible (``{{ http_port }}`` in
``group_vars`` sees a ``--set http_port=...``, as Ansible's ``-e`` would); values from
role/stack defaults and ``--set`` are data and never templated. A value whose template
needs a variable nobody defines (an Ansible fact such as ``ansible_default_ipv4``) stays
unrendered, as in Ansible where templating is lazy: using it in a stack template is an
error naming it; the variables Ferry itself reads (``ansible_*`` connection keys, the
ones in role or stack defaults, ``ferry_*``) must render.

Templates see Ansible's magic variables :data:`MAGIC_VARS` (``inventory_hostname``,
``group_names``, ``groups``...). Relative paths in variables Ferry reads
(``ansible_ssh_private_key_file``, ``ferry_known_hosts``) are relative to the inventory
file's directory (the directory itself when ``-i`` is one).

Vault passwords come from ``--vault-password-file`` (repeatable), else
``ANSIBLE_VAULT_PASSWORD_FILE`` / ``vault_password_file`` in ``ansible.cfg``, plus
``ANSIBLE_VAULT_IDENTITY_LIST`` entries ``id@file``. A password file that is executable
is run, as in Ansible.

A static inventory with no vault, no Jinja and no secret-named variable is kept as a
snapshot (:mod:`ferry.controller.inventory_cache`, see :class:`Inventory`), so the next
command with the same files and settings does not import ansible-core at all.

ansible-core is imported on first use (about 0.4 s), never at import of this module;
everything it would print is captured and reported through Ferry's UI, and all values
leave this module as plain Python types (``str``, ``int``, ``dict``...). Only the main
thread loads and renders; the results are plain data the host threads only read.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jinja2

from ..errors import FerryError
from ..model.vars import merge_vars, parse_set_args  # noqa: F401 (re-exported)
from . import inventory_cache

#: Ansible connection variables Ferry acts on. Any other ``ansible_*`` variable of a
#: selected host (``ansible_connection``, ``ansible_become``...) is named in one warning
#: line, since Ferry would silently do something else than Ansible. The SSH transport
#: reads them (:data:`ferry.host.transport.ssh.CONNECTION_VARS`, a unit test keeps the
#: two lists equal).
HONOURED_ANSIBLE_VARS: frozenset[str] = frozenset({
    "ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user", "ansible_ssh_user",
    "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_password", "ansible_ssh_pass",
    "ansible_ssh_password", "ansible_become", "ansible_become_method", "ansible_become_user",
    "ansible_become_password", "ansible_become_pass", "ansible_ssh_common_args", "ansible_ssh_extra_args",
})

#: ``ansible_*`` variables that are not about the connection and change nothing for
#: Ferry (Ansible itself consumes ``ansible_group_priority`` while reading the
#: inventory; Ferry runs no Python on hosts): never warned about.
IRRELEVANT_ANSIBLE_VARS: frozenset[str] = frozenset({
    "ansible_group_priority", "ansible_python_interpreter",
})

#: Ansible's magic variables Ferry's templates see, as Ansible defines them.
MAGIC_VARS: tuple[str, ...] = ("inventory_hostname", "inventory_hostname_short", "group_names", "groups",
                               "inventory_dir", "inventory_file")

#: Variables whose values are always masked in listings (besides vault values and
#: names that say password/secret/token/key, see :func:`is_secret_name`).
SECRET_VARS: frozenset[str] = frozenset({
    "ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass",
    "ansible_sudo_pass",
})

#: What a masked value shows.
MASK = "********"

_SECRET_WORDS = {"password", "passwords", "passwd", "pass", "passphrase", "secret", "secrets", "token", "tokens",
                 "key", "keys", "apikey", "credential", "credentials"}
_PATH_WORDS = {"file", "path", "dir", "name", "id"}


def is_secret_name(name: str) -> bool:
    """True when variable ``name`` says it holds a secret: one of :data:`SECRET_VARS`,
    or a word ``password``/``pass``/``secret``/``token``/``key`` (plural too) in it,
    unless the name ends in ``_file``/``_path``/``_dir``/``_name``/``_id``
    (``ansible_ssh_private_key_file`` is a path, ``llm_api_key`` a secret)."""
    if name in SECRET_VARS:
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]
    if not words or words[-1] in _PATH_WORDS:
        return False
    return any(w in _SECRET_WORDS for w in words)


class Unrendered(jinja2.StrictUndefined):
    """An inventory value whose Jinja needs a variable Ferry does not have (an Ansible
    fact, a playbook variable). Ferry's templates raise when they use it, naming the
    missing variable; :attr:`template` is the raw text, :attr:`reason` why."""

    def __init__(self, name: str, template: Any, reason: str):
        super().__init__(hint=f"inventory variable '{name}' cannot be rendered: {reason}", name=name)
        self.template = template
        self.reason = reason


@dataclass
class Host:
    """One inventory host.

    Attributes:
        name: inventory name (``web01``); used in every message about the host.
        groups: names of the groups it belongs to, directly or through children, plus
            ``all``.
        vars: its inventory variables (the keys ``ansible-inventory --list`` shows),
            rendered in the inventory's own context, plain Python values; a value
            that needs an undefined variable is an :class:`Unrendered`.
        magic: Ansible's magic variables of the host (:data:`MAGIC_VARS`).
        secrets: names of the variables whose value is or contains a vault secret.
    """

    name: str
    groups: set[str] = field(default_factory=set)
    vars: dict[str, Any] = field(default_factory=dict)
    magic: dict[str, Any] = field(default_factory=dict, repr=False)
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)
    inventory: "Inventory | None" = field(default=None, repr=False, compare=False)

    def resolve(self, lower: Mapping[str, Any] | None = None, sets: Mapping[str, Any] | None = None,
                required: Iterable[str] = ()) -> dict[str, Any]:
        """The host's variables for a run: ``lower`` (role and stack defaults) <
        inventory variables < ``sets`` (``--set``), plus :attr:`magic`; inventory
        values templated with all of it visible (see the module docstring).

        Args:
            lower: defaults, lowest precedence (data, not templated).
            sets: ``--set`` values, highest precedence (data, not templated).
            required: more names that must render (beside ``lower``'s keys, the
                ``ansible_*`` and ``ferry_*`` ones).

        Call it from one thread (the main one, before hosts are opened in parallel):
        it runs ansible-core, whose display and vault state are process-wide.

        Raises:
            FerryError: a variable Ferry reads cannot be rendered, or a template or
                vault error (one line naming the file and variable).
        """
        if self.inventory is None:
            return {**merge_vars(dict(lower or {}), self.vars, dict(sets or {})), **self.magic}
        return self.inventory.variables(self.name, lower or {}, sets or {}, required)


@dataclass
class Group:
    """One inventory group as Ansible resolved it.

    Attributes:
        name: group name.
        hosts: names of its direct hosts, in inventory order.
        children: names of its child groups, in inventory order.
    """

    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


# -- ansible-core, behind one door -----------------------------------------------------

_PLUGINS_READY = False


def _ansible():
    """Import ansible-core's pieces once (about 0.6 s) and set up its plugin loader.

    Importing it creates its ``Display`` singleton, which wraps ``sys.stdout`` and
    ``sys.stderr`` writes in a lock (for its own forks) and changes their encoding
    error handler to one that prints an Ansible warning; Ferry forks no Ansible
    worker, so both are undone here and Ferry's streams stay as they were."""
    global _PLUGINS_READY
    if not _PLUGINS_READY:
        import sys
        streams = [s for s in (sys.stdout, sys.stderr) if hasattr(s, "buffer") and hasattr(s, "reconfigure")]
        errors = [s.errors for s in streams]
        from ansible.plugins.loader import init_plugin_loader
        from ansible.utils.display import Display
        Display()
        for stream, error in zip(streams, errors):
            for attr in ("write", "flush"):
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(stream.buffer, attr)
            with contextlib.suppress(Exception):
                stream.reconfigure(errors=error)
        init_plugin_loader([])
        _PLUGINS_READY = True
    import ansible.constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager, split_host_pattern
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import EncryptedString, VaultSecretsContext, get_file_vault_secret
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager
    return {"C": C, "AnsibleError": AnsibleError, "InventoryManager": InventoryManager,
            "split_host_pattern": split_host_pattern, "DataLoader": DataLoader, "EncryptedString": EncryptedString,
            "VaultSecretsContext": VaultSecretsContext, "get_file_vault_secret": get_file_vault_secret,
            "Templar": Templar, "VariableManager": VariableManager}


def _forget_vars_files() -> None:
    """Empty ansible-core's per-process caches of ``host_vars/``/``group_vars/`` lookups
    (``host_group_vars``: the files found per host or group, the directories found
    missing, canonical paths). ansible-core reads an inventory once per process; Ferry
    may read one several times in a process (a long-lived caller, the test suite), and a
    directory or file added in between (``host_vars/`` holding a become password) must
    count. Costs one directory scan per source on the next load."""
    from ansible.plugins.vars import host_group_vars
    for cache in (host_group_vars.FOUND, host_group_vars.NAK, host_group_vars.CANONICAL_PATHS):
        cache.clear()


@dataclass
class _Said:
    """What ansible-core tried to print while Ferry ran it."""

    warnings: list[str] = field(default_factory=list)
    failures: list[tuple[str, BaseException]] = field(default_factory=list)


@contextlib.contextmanager
def _quiet(secrets: list | None) -> Iterator[_Said]:
    """Run ansible-core with its ``Display`` captured (nothing reaches stdout/stderr) and
    ``secrets`` as the vault secrets of the process (restored afterwards)."""
    from ansible.parsing.vault import VaultSecretsContext
    from ansible.utils.display import Display
    said = _Said()
    display = Display()

    def warning(msg, *args, **kwargs):
        said.warnings.append(_one_line(str(msg)))

    def error_as_warning(msg, exception, *args, **kwargs):
        said.failures.append((str(msg or ""), exception))

    def swallow(*args, **kwargs):
        return None

    patched = {"warning": warning, "error_as_warning": error_as_warning, "deprecated": swallow,
               "display": swallow, "error": swallow, "banner": swallow}
    for name, fn in patched.items():
        setattr(display, name, fn)
    previous = VaultSecretsContext._current
    VaultSecretsContext._current = VaultSecretsContext(list(secrets or []))
    try:
        yield said
    finally:
        VaultSecretsContext._current = previous
        for name in patched:
            with contextlib.suppress(AttributeError):
                delattr(display, name)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _origin(value: Any):
    """Ansible's ``Origin`` tag of ``value`` (file, line), or None."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:       # a newer ansible-core moved it: messages lose the line, nothing else
        return None
    if isinstance(value, Origin):
        return value
    try:
        return Origin.get_tag(value)
    except Exception:         # untaggable value
        return None


_GENERIC = ("Failed to parse inventory", "Unexpected AnsibleError error")


def _describe(exc: BaseException) -> str:
    """One line for an ansible-core error: ``file:line: message`` where it knows them
    (a YAML syntax error says what PyYAML found, not Ansible's guess about colons)."""
    where, message = _explain(exc)
    return f"{where}: {message}" if where else message


def _explain(exc: BaseException) -> tuple[str, str]:
    """``(file[:line] or "", message)`` of an ansible-core error (see :func:`_describe`)."""
    import yaml
    parts: list[str] = []
    where = ""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, yaml.MarkedYAMLError):
            detail = _one_line(" ".join(x for x in (seen.problem, seen.context) if x))
            parts = [p for p in parts if not p.startswith("YAML parsing failed")] + [f"YAML parsing failed: {detail}"]
        else:
            text = str(getattr(seen, "_original_message", None) or seen)
            text = _one_line(re.split(r"\n\s*(?:Origin:|<<<)", text)[0]).rstrip(".")
            if text and not text.startswith(_GENERIC) and not any(text in p for p in parts):
                parts.append(text)
        origin = _origin(getattr(seen, "obj", None))
        if origin is not None and origin.path and (not where or (origin.line_num and ":" not in where)):
            where = f"{origin.path}:{origin.line_num}" if origin.line_num else origin.path
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    message = ": ".join(parts) or _one_line(str(exc))
    return ("" if where in message else where), message


def _plain(value: Any, es_type: type) -> Any:
    """``value`` with Ansible's tagged and vault types turned into plain Python ones."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, es_type):
        return str(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                                 value.microsecond, value.tzinfo)
    if isinstance(value, datetime.date):
        return datetime.date(value.year, value.month, value.day)
    if isinstance(value, Mapping):
        return {_plain(k, es_type): _plain(v, es_type) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, es_type) for v in value]
    return value


def _where(value: Any) -> str | None:
    """``file:line`` (or ``file``) of Ansible's origin of ``value``, or None."""
    origin = _origin(value)
    if origin is not None and origin.path:
        return f"{origin.path}:{origin.line_num}" if origin.line_num else origin.path
    return None


def _may_template(value: Any) -> bool:
    """True when a string in plain ``value`` (keys included) is or may be Jinja to
    Ansible: it holds ``{{``, ``{%`` or ``{#``, or starts with ``#jinja2:`` (Ansible's
    ``is_possibly_template``)."""
    return any(s.startswith("#jinja2:") or "{{" in s or "{%" in s or "{#" in s for s in _strings(value))


def _names(value: Any) -> Iterator[str]:
    """Every mapping key in plain ``value``, nested ones included (variable names)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield str(key)
            yield from _names(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _names(inner)


def _is_json_data(value: Any) -> bool:
    """True when JSON carries plain ``value`` back unchanged (strings, numbers, booleans,
    None, lists, mappings with string keys; not dates, bytes or other keys)."""
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is list:
        return all(_is_json_data(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_json_data(v) for k, v in value.items())
    return False


def _vars_plugins() -> set[str] | None:
    """Names of the vars plugins ansible-core ran (``ansible.builtin.host_group_vars``
    by default), or None when this ansible-core does not say."""
    from ansible.plugins.loader import vars_loader
    cache = getattr(vars_loader, "_plugin_instance_cache", None)
    return None if cache is None else {str(n) for n in cache}


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a plain value (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _has_vault(value: Any, es_type: type) -> bool:
    if isinstance(value, es_type):
        return True
    if isinstance(value, Mapping):
        return any(_has_vault(v, es_type) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_vault(v, es_type) for v in value)
    return False


def _origin_files(value: Any) -> Iterator[str]:
    origin = _origin(value)
    if origin is not None and origin.path:
        yield origin.path
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _origin_files(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _origin_files(v)


def vault_password_files(given: Sequence[str | Path] = ()) -> list[tuple[str, str]]:
    """The ``(vault id, password file)`` pairs of a run: ``given``
    (``--vault-password-file``), else Ansible's configured ``vault_password_file``
    (``ANSIBLE_VAULT_PASSWORD_FILE`` or ``ansible.cfg``, read now, not at import); plus
    ``id@file`` entries of ``ANSIBLE_VAULT_IDENTITY_LIST`` / ``vault_identity_list``.

    Raises:
        FerryError: an identity asks for a prompt (Ferry reads passwords from files).
    """
    a = _ansible()
    config = a["C"].config
    default_id = str(config.get_config_value("DEFAULT_VAULT_IDENTITY") or "default")
    out = [(default_id, str(Path(p).expanduser())) for p in given]
    if not out:
        configured = config.get_config_value("DEFAULT_VAULT_PASSWORD_FILE")
        if configured:
            out.append((default_id, str(Path(str(configured)).expanduser())))
    for entry in config.get_config_value("DEFAULT_VAULT_IDENTITY_LIST") or []:
        vid, sep, source = str(entry).rpartition("@")
        vid, source = (vid if sep else default_id), source
        if source in ("prompt", "prompt_ask_vault_pass"):
            raise FerryError(f"vault identity '{entry}' asks for a prompt; give a vault password file instead "
                             f"(--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)")
        out.append((vid, str(Path(source).expanduser())))
    return out


class Inventory:
    """An inventory resolved by ansible-core.

    Args:
        path: the inventory source: a file (INI, YAML, any format an enabled Ansible
            inventory plugin reads) or a directory of them, as ``ansible -i``.
        vault_password_files: ``--vault-password-file`` values; default: Ansible's
            configuration (see :func:`vault_password_files`).
        warn: called with each warning line (Ansible's own warnings, unknown
            connection variables); default: kept in :attr:`warnings` only.

    Attributes:
        hosts: ``{name: Host}`` in inventory order.
        groups: ``{name: Group}``, ``all`` first, then as Ansible lists them.
        warnings: every warning line so far.

    Raises:
        FerryError: the source does not exist or a file in it does not parse (the
            message names the file, and the line when Ansible knows it); a vault
            password file is missing or wrong, or a vault value cannot be decrypted
            (the message says "vault"); a Jinja value is malformed.

    Snapshots: after a load by ansible-core, the resolved inventory (hosts with their
    groups, variables and magic variables; groups; Ansible's warnings; the ``file:line``
    origin of each variable; the host lists of the patterns :meth:`select` answered) is
    written as a snapshot under a key of the source files, ``group_vars/``/``host_vars/``,
    ``ANSIBLE_*``, ``ansible.cfg`` and the versions (:func:`inventory_cache.cache_key`).
    An ``Inventory`` of the same key is read from it without importing ansible-core; its
    warnings are reported again, and a host pattern it does not hold loads the inventory
    with ansible-core then (so errors are Ansible's, word for word). Only an inventory
    whose every value is plain data is written, that is, when all of these hold:

    - no vault: no ``!vault`` value, no vault-encrypted file (decrypted values would be
      stored in clear, and a vault password change would not be seen);
    - no Jinja: no variable name or value, nested ones included, holds ``{{``, ``{%``,
      ``{#`` or starts with ``#jinja2:``; so rendering is the identity whatever the
      defaults and ``--set`` (:meth:`Host.resolve` is a plain merge) and no value is
      :class:`Unrendered`;
    - no variable name, nested keys included, is a secret one (:func:`is_secret_name`):
      a password is never copied into a cache file;
    - every value is JSON data (strings, numbers, booleans, null, lists, mappings with
      string keys: a YAML date or a byte string would come back changed);
    - static sources only: every source file is a regular, non-executable file (an
      executable one is an inventory script), no ``.yml``/``.yaml`` source names a
      ``plugin:`` (a dynamic inventory), and ansible-core ran no vars plugin but
      ``host_group_vars`` (another one may read anything).

    On a snapshot the vault password files of the first run are only checked to exist
    (the inventory has no vault data to decrypt). ``FERRY_INVENTORY_CACHE=off`` turns
    snapshots off.
    """

    def __init__(self, path: Path | str, vault_password_files: Sequence[str | Path] = (),
                 warn: Callable[[str], None] | None = None):
        self.path = Path(path).expanduser()
        self.base_dir = self.path if self.path.is_dir() else self.path.parent
        self.warnings: list[str] = []
        self._warn = warn
        if not self.path.exists():
            raise FerryError(f"inventory {self.path} not found")
        self._given_vault = list(vault_password_files)
        self._manager = None
        self._snapshot: dict[str, Any] | None = None
        self._cache_key = inventory_cache.cache_key(self.path, self.base_dir, self._given_vault)
        if self._cache_key is not None and self._from_snapshot(inventory_cache.read(self._cache_key)):
            return
        self._load()
        self.groups = self._read_groups()
        self.hosts: dict[str, Host] = {}
        with _quiet(self._secrets) as said:
            for name, raw in self._raw.items():
                values = self._render(name, {}, {}, required=())
                magic = {k: _plain(raw[k], self._es) for k in MAGIC_VARS if k in raw}
                self.hosts[name] = Host(name, {"all", *magic.get("group_names", [])}, values, magic,
                                        self._secret_keys(name, values), self)
            self._report(said.warnings)
        if self._cache_key is not None:
            self._snapshot = self._make_snapshot()
            if self._snapshot is not None:
                inventory_cache.write(self._cache_key, self._snapshot)

    # -- loading ---------------------------------------------------------------------

    def _load(self) -> None:
        """Read the inventory with ansible-core: its manager, every host's raw variables
        (Ansible's tagged values), the vault secrets and files. Hosts and groups are
        built from them by the caller."""
        a = self._a = _ansible()
        self._es = a["EncryptedString"]
        self._shared_templar = None
        self._loader = a["DataLoader"]()
        _forget_vars_files()
        self._secrets = self._load_secrets(a, self._given_vault)
        with _quiet(self._secrets) as said:
            self._loader.set_vault_secrets(self._secrets)
            try:
                manager = a["InventoryManager"](loader=self._loader, sources=[str(self.path.absolute())])
            except a["AnsibleError"] as exc:
                raise FerryError(self._vault_hint(*_explain(exc))) from None
            self._fail_on(said)
            try:
                self._vm = a["VariableManager"](loader=self._loader, inventory=manager)
                self._raw = {h.name: self._vm.get_vars(host=h, include_hostvars=False, stage="all")
                             for h in manager.get_hosts("all")}
            except a["AnsibleError"] as exc:
                raise FerryError(self._vault_hint(*_explain(exc))) from None
            self._fail_on(said)
            self._report(said.warnings)
            internal = a["C"].INTERNAL_STATIC_VARS
            self._keys = {n: [str(k) for k in raw if k not in internal] for n, raw in self._raw.items()}
            self._vault_files = {p for p in {f for raw in self._raw.values() for f in _origin_files(raw)}
                                 if _is_vault_file(p)}
        self._manager = manager

    def _ensure_loaded(self) -> None:
        """Load the inventory with ansible-core if it came from a snapshot (a host
        pattern the snapshot does not answer). The hosts and groups stay the
        snapshot's: the same key means the same inventory."""
        if self._manager is None:
            self._load()

    # -- the snapshot ----------------------------------------------------------------

    def _make_snapshot(self) -> dict[str, Any] | None:
        """What a later run with the same key needs to skip ansible-core, as JSON data;
        None when this inventory must not be cached (see the class docstring)."""
        if self._vault_files or any(h.secrets for h in self.hosts.values()):
            return None
        plugins = _vars_plugins()
        if plugins is None or not plugins <= {"host_group_vars", "ansible.builtin.host_group_vars"}:
            return None
        origins: dict[str, dict[str, str]] = {}
        for name, raw in self._raw.items():
            if any(_may_template(k) or _may_template(_plain(raw[k], self._es)) for k in self._keys[name]):
                return None
            host = self.hosts[name]
            if any(is_secret_name(k) for k in _names(host.vars)) or not _is_json_data(host.vars) \
                    or not _is_json_data(host.magic):
                return None
            origins[name] = {str(k): where for k, v in raw.items() if (where := _where(v))}
        return {
            "base_dir": str(self.base_dir),
            "hosts": [{"name": h.name, "groups": sorted(h.groups), "vars": h.vars, "magic": h.magic}
                      for h in self.hosts.values()],
            "groups": [{"name": g.name, "hosts": g.hosts, "children": g.children} for g in self.groups.values()],
            "warnings": list(self.warnings),
            "origins": origins,
            "password_files": [list(pair) for pair in self._password_files],
            "patterns": {},
        }

    def _from_snapshot(self, snap: dict[str, Any] | None) -> bool:
        """Take hosts, groups, origins and the warnings (reported again, as a full
        load reports them) from ``snap`` (see :meth:`_make_snapshot`); False, with
        nothing changed, when there is none or it does not have the expected shape.

        Raises:
            FerryError: a vault password file of the snapshot's run is gone (as the
                full load would say).
        """
        if snap is None:
            return False
        try:
            hosts: dict[str, Host] = {}
            for h in snap["hosts"]:
                if not isinstance(h["vars"], dict) or not isinstance(h["magic"], dict):
                    return False
                hosts[str(h["name"])] = Host(str(h["name"]), set(h["groups"]), h["vars"], h["magic"],
                                             frozenset(), self)
            groups = {str(g["name"]): Group(str(g["name"]), [str(x) for x in g["hosts"]],
                                            [str(x) for x in g["children"]]) for g in snap["groups"]}
            origins = {str(n): dict(o) for n, o in snap["origins"].items()}
            patterns = {str(p): [str(n) for n in names] for p, names in snap["patterns"].items()}
            password_files = [(str(vid), str(f)) for vid, f in snap["password_files"]]
            warnings = [str(w) for w in snap["warnings"]]
            if "all" not in groups or any(n not in hosts for names in patterns.values() for n in names):
                return False
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        for _, filename in password_files:
            if not Path(filename).is_file():
                raise FerryError(f"vault password file {filename} not found")
        self._password_files = password_files
        self.hosts, self.groups = hosts, groups
        self._snapshot = {**snap, "patterns": patterns}
        self._origins = origins
        self._report(warnings)
        return True

    def _remember(self, pattern: str, found: list[str]) -> None:
        """Add a host pattern's answer to the snapshot file (when there is one)."""
        if self._snapshot is not None and self._cache_key is not None \
                and self._snapshot["patterns"].get(pattern) != found:
            self._snapshot["patterns"][pattern] = found
            inventory_cache.write(self._cache_key, self._snapshot)

    def _load_secrets(self, a: dict, given: Sequence[str | Path]) -> list:
        secrets = []
        self._password_files = vault_password_files(given)
        for vid, filename in self._password_files:
            if not Path(filename).is_file():
                raise FerryError(f"vault password file {filename} not found")
            with _quiet(None):
                try:
                    secret = a["get_file_vault_secret"](filename=filename, vault_id=vid, loader=self._loader)
                    secret.load()
                except a["AnsibleError"] as exc:
                    raise FerryError(f"vault password file {filename}: {_describe(exc)}") from None
            secrets.append((vid, secret))
        return secrets

    def _vault_hint(self, where: str, message: str, what: str = "") -> str:
        """``where: what message``, saying "vault" and what to do when ``message`` is
        a decryption failure (``what``: ``host h: variable 'k': `` or empty)."""
        prefix = (f"{where}: " if where else "") + what
        lowered = message.lower()
        if "decrypt" not in lowered and "vault" not in lowered:
            return prefix + message
        if "decrypt" in lowered and not self._secrets:
            return (f"{prefix}vault-encrypted data and no vault password given "
                    f"(--vault-password-file FILE or ANSIBLE_VAULT_PASSWORD_FILE)")
        if "decrypt" in lowered:
            files = ", ".join(f for _, f in self._password_files)
            return f"{prefix}vault: cannot decrypt with the vault password in {files} (wrong password?)"
        return prefix + message

    def _fail_on(self, said: _Said) -> None:
        """A source some plugin failed to parse is an error (Ansible would warn and go
        on). Of the plugins that tried the first such file, the error of the one its
        extension calls for is reported."""
        if not said.failures:
            return
        unparsed = [w[len("Unable to parse "):].split(" as an inventory source")[0]
                    for w in said.warnings if w.startswith("Unable to parse ")]
        where = unparsed[0] if unparsed else ""
        about = [f for f in said.failures if where and where in str(_origin(getattr(f[1], "obj", None)))] \
            or said.failures
        preferred = f"'{_preferred_plugin(Path(where or self.path))}'"
        chosen = next((f for f in about if preferred in f[0]), about[-1])
        message = self._vault_hint(*_explain(chosen[1]))
        if where and where not in message:
            message = f"{where}: {message}"
        raise FerryError(f"inventory {message}")

    def _report(self, lines: Iterable[str]) -> None:
        for line in lines:
            if line.startswith("Unable to parse ") or line in self.warnings:
                continue
            self.warnings.append(line)
            if self._warn:
                self._warn(f"ansible: {line}")

    def _read_groups(self) -> dict[str, Group]:
        groups = self._manager.groups
        order = ["all"] + [n for n in groups if n != "all"]
        return {n: Group(n, [h.name for h in groups[n].hosts], [c.name for c in groups[n].child_groups])
                for n in order if n in groups}

    # -- rendering -------------------------------------------------------------------

    def _render(self, name: str, lower: Mapping[str, Any], sets: Mapping[str, Any],
                required: Iterable[str]) -> dict[str, Any]:
        """``name``'s inventory variables (plain), templated over lower < inventory < sets."""
        raw = self._raw[name]
        keys = self._keys[name]
        must = set(required) | set(lower)
        context = {**lower, **raw, **sets}
        templar = self._templar()
        templar.available_variables = context
        out: dict[str, Any] = {}
        for key in keys:
            if key in sets:
                continue
            try:
                out[key] = _plain(templar.template(raw[key]), self._es)
            except self._a["AnsibleError"] as exc:
                where, message = _explain(exc)
                if _is_undefined(exc) and key not in must and not key.startswith(("ansible_", "ferry_")):
                    out[key] = Unrendered(key, _plain(raw[key], self._es) if not _has_vault(raw[key], self._es)
                                          else MASK, f"{where}: {message}" if where else message)
                    continue
                if not where:
                    where = _where(raw[key]) or ""
                raise FerryError(self._vault_hint(where, message, f"host {name}: variable '{key}': ")) from None
        return out

    def _templar(self):
        """One Ansible ``Templar`` for every host, compiling each template text once.

        ansible-core compiles a Jinja template on every use (about 5 ms each); the same
        group variable on a hundred hosts, rendered again with the run's defaults, would
        cost that each time. Compiled templates are cached per (text, origin, options)
        on this Templar's own environment, so each is compiled once per run."""
        if self._shared_templar is None:
            templar = self._a["Templar"](loader=self._loader, variables={})
            engine = getattr(templar, "_engine", None)
            compile_ = getattr(engine, "_compile_template", None)
            if compile_ is not None:
                cache: dict = {}

                def cached(template, options, _compile=compile_):
                    origin = _origin(template)
                    key = (str(template), str(origin) if origin is not None else "", options)
                    try:
                        return cache[key]
                    except KeyError:
                        cache[key] = found = _compile(template, options)
                        return found
                    except TypeError:                 # unhashable options: no cache
                        return _compile(template, options)
                engine._compile_template = cached
            self._shared_templar = templar
        return self._shared_templar

    def variables(self, name: str, lower: Mapping[str, Any], sets: Mapping[str, Any],
                  required: Iterable[str] = ()) -> dict[str, Any]:
        """See :meth:`Host.resolve` (this is it, for host ``name``)."""
        if self._manager is None:      # from a snapshot: no Jinja anywhere, templating is the identity
            host = self.hosts[name]
            rendered = {k: copy.deepcopy(v) for k, v in host.vars.items() if k not in sets}
            return {**merge_vars(dict(lower), rendered, dict(sets)), **host.magic}
        with _quiet(self._secrets) as said:
            rendered = self._render(name, lower, sets, required)
            self._report(said.warnings)
        return {**merge_vars(dict(lower), rendered, dict(sets)), **self.hosts[name].magic}

    def _secret_keys(self, name: str, values: Mapping[str, Any]) -> frozenset[str]:
        """Names of ``name``'s variables that hold a vault value, come from a
        vault-encrypted file, or contain the plaintext of one."""
        raw = self._raw[name]
        secret = {k for k in self._keys[name]
                  if _has_vault(raw[k], self._es) or any(f in self._vault_files for f in _origin_files(raw[k]))}
        plaintexts = {s for k in secret for s in _strings(values.get(k)) if len(s) >= 4}
        for k in self._keys[name]:
            if k not in secret and any(p in s for s in _strings(values.get(k)) for p in plaintexts):
                secret.add(k)
        return frozenset(secret)

    def origin(self, name: str, key: str) -> str:
        """Where host ``name``'s variable ``key`` is set, for messages: ``file:line``
        (Ansible's origin of the value), else the inventory path."""
        if self._manager is None:
            return self._origins.get(name, {}).get(key) or str(self.path)
        return _where(self._raw.get(name, {}).get(key)) or str(self.path)

    # -- queries ---------------------------------------------------------------------

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching an Ansible host pattern, in inventory order.

        Args:
            pattern: ``prod``, ``web01``, ``prod,staging``, ``prod:&web``,
                ``prod:!db1``, ``web*``, ``all`` (Ansible's patterns).

        Returns:
            The matching hosts, without duplicates. Unknown ``ansible_*`` connection
            variables of these hosts are named in one warning line.

        Raises:
            FerryError: a name in the pattern matches no host or group (lists the
                known ones), or the pattern as a whole selects no host.
        """
        pattern = pattern.strip()
        if not pattern:
            raise FerryError("empty host pattern: give --host with a host, a group or a pattern")
        if self._manager is None and self._snapshot is not None and pattern in self._snapshot["patterns"]:
            hosts = [self.hosts[n] for n in self._snapshot["patterns"][pattern]]
            self._warn_unhonoured(hosts)
            return hosts
        self._ensure_loaded()
        with _quiet(self._secrets) as said:
            try:
                for term in self._a["split_host_pattern"](pattern):
                    bare = term.lstrip("!&")
                    if bare and bare in self.groups and not self._manager.get_hosts(bare):
                        raise FerryError(f"group '{bare}' has no hosts in {self.path}")
                    if bare and not self._manager.get_hosts(bare):
                        raise FerryError(f"unknown host or group '{bare}' in {self.path}; known groups: "
                                         f"{_listing(list(self.groups))}; known hosts: "
                                         f"{_listing(list(self.hosts)) or '(none)'}")
                found = [h.name for h in self._manager.get_hosts(pattern)]
            except self._a["AnsibleError"] as exc:
                raise FerryError(f"host pattern '{pattern}': {_describe(exc)} (in {self.path})") from None
        if not found:
            raise FerryError(f"'{pattern}' selects no hosts in {self.path}")
        self._remember(pattern, found)
        hosts = [self.hosts[n] for n in found]
        self._warn_unhonoured(hosts)
        return hosts

    def _warn_unhonoured(self, hosts: list[Host]) -> None:
        unknown: dict[str, list[str]] = {}
        for h in hosts:
            for key in h.vars:
                if key.startswith("ansible_") and key not in HONOURED_ANSIBLE_VARS \
                        and key not in IRRELEVANT_ANSIBLE_VARS:
                    if key == "ansible_connection" and h.vars[key] in ("ssh", "smart", "paramiko"):
                        continue
                    unknown.setdefault(key, []).append(h.name)
        if unknown:
            parts = [f"{k} ({_listing(v, 3)})" for k, v in sorted(unknown.items())]
            line = f"inventory: Ferry ignores these Ansible connection variables: {', '.join(parts)}"
            if line not in self.warnings:
                self.warnings.append(line)
                if self._warn:
                    self._warn(line)

    def resolve_path(self, value: str) -> Path:
        """A path from an inventory variable: ``~`` expanded, relative to the
        inventory's directory (:attr:`base_dir`)."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def listing(self, pattern: str = "all", mask: bool = True, lower: Mapping[str, Any] | None = None,
                sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The inventory in ``ansible-inventory --list``'s shape: ``{"_meta":
        {"hostvars": {host: vars}}, group: {"hosts": [...], "children": [...]}}``,
        for the hosts ``pattern`` selects (groups list only those hosts; empty groups
        are left out, as Ansible does with ``--limit``).

        Args:
            pattern: an Ansible host pattern (see :meth:`select`).
            mask: replace secret values by :data:`MASK` (vault values, values containing
                one, :data:`SECRET_VARS`, names per :func:`is_secret_name`).
            lower, sets: the run's defaults and ``--set`` (see :meth:`Host.resolve`);
                only the inventory's own variables are listed, rendered with them.

        Values are plain Python; one that cannot be rendered shows its raw text. An
        inventory with no hosts at all lists as empty (like ``ansible-inventory --list``).
        """
        hosts = self.select(pattern) if self.hosts or pattern.strip() != "all" else []
        wanted = {h.name for h in hosts}
        out: dict[str, Any] = {}
        seen: set[str] = set()

        def walk(name: str) -> None:         # ansible-inventory's json_inventory, group by group
            g = self.groups[name]
            body: dict[str, Any] = {}
            members = [h for h in g.hosts if h in wanted] if name != "all" else []
            if members:
                body["hosts"] = members
            if g.children:
                body["children"] = list(g.children)
            if body:
                out[name] = body
            for child in g.children:
                if child not in seen:
                    seen.add(child)
                    walk(child)
        walk("all")
        out["_meta"] = {"hostvars": {h.name: self.shown_vars(h, mask, lower, sets) for h in hosts}}
        return out

    def shown_vars(self, host: Host, mask: bool = True, lower: Mapping[str, Any] | None = None,
                   sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``host``'s inventory variables for display, sorted by name: rendered (with
        ``lower``/``sets``, see :meth:`Host.resolve`), secrets masked when ``mask``; a
        value that cannot be rendered shows its raw template text."""
        resolved = host.resolve(lower, sets) if (lower or sets) else host.vars
        out = {}
        for key in sorted(host.vars):
            value = resolved[key]
            if mask and (key in host.secrets or is_secret_name(key)):
                out[key] = MASK
            elif isinstance(value, Unrendered):
                out[key] = value.template
            else:
                out[key] = value
        return out


def inventory_table(listing: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[host, groups, "key: value" lines]`` of an :meth:`Inventory.listing`, for
    a table (values as compact JSON, non-ASCII text kept)."""
    import json
    groups: dict[str, list[str]] = {}
    for name, body in listing.items():
        if name != "_meta":
            for h in body.get("hosts", []):
                groups.setdefault(h, []).append(name)
    rows = []
    for host, values in listing["_meta"]["hostvars"].items():
        lines = [f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)}"
                 for k, v in values.items()]
        rows.append([host, ", ".join(groups.get(host, [])), "\n".join(lines)])
    return rows


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_undefined(exc: BaseException) -> bool:
    from ansible.errors import AnsibleUndefinedVariable
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AnsibleUndefinedVariable):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_vault_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(b"$ANSIBLE_VAULT")) == b"$ANSIBLE_VAULT"
    except OSError:
        return False


def _preferred_plugin(path: Path) -> str:
    """The inventory plugin a file's extension calls for (to pick its parse error)."""
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml", ".json"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    return "ini"


def load_inventory(source: "Inventory | Path | str", **kwargs: Any) -> Inventory:
    """``source`` if it is already an :class:`Inventory`, else ``Inventory(source, **kwargs)``."""
    return source if isinstance(source, Inventory) else Inventory(source, **kwargs)
