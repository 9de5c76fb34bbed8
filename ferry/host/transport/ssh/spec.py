"""One host's SSH connection, typed and validated before any connection.

:meth:`ConnectionSpec.from_vars` builds it from an inventory host's variables, the
OpenSSH options in ``ansible_ssh_common_args``/``ansible_ssh_extra_args`` and the OpenSSH
client configuration (``~/.ssh/config``, or ``-F FILE`` in those arguments), with
Ansible's precedence, highest first:

1. inventory variables (``ansible_host``, ``ansible_port``, ``ansible_user``,
   ``ansible_ssh_private_key_file``, ``ferry_known_hosts``, ``ferry_connect_timeout``...);
2. options in ``ansible_ssh_common_args`` then ``ansible_ssh_extra_args``
   (``-o Key=Value``, ``-J``, ``-i``, ``-p``, ``-l``, ``-F``; the first value of a key
   wins, as in OpenSSH);
3. the ssh_config entry of the host's name (``Host`` aliases, ``HostName``, ``User``,
   ``Port``, ``IdentityFile``, ``ProxyJump``, ``ProxyCommand``, ``UserKnownHostsFile``,
   ``ConnectTimeout``, ``ServerAliveInterval``/``ServerAliveCountMax``), read with
   :class:`paramiko.SSHConfig`; the name looked up is ``ansible_host``, else the
   inventory name, as OpenSSH is called by Ansible;
4. defaults: port 22, the local user name (OpenSSH's default), the agent and the
   default keys, ``~/.ssh/known_hosts``, 10 s connect timeout, dead peer after 60 s,
   commands time out after 1800 s.

The same spec drives the paramiko connection (:mod:`.hops`) and the OpenSSH bulk path
(:func:`.transport.openssh_argv`), so both reach the host the same way and verify the
same host keys on every hop.

Every value is checked here (types and ranges with pydantic); a bad one raises
:class:`~ferry.errors.FerryError` with one line naming the host, the variable and the
rule, before any host is contacted. Secrets (passwords) are kept as
:class:`pydantic.SecretStr` and never printed.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import paramiko
from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, SecretStr, StringConstraints,
                      ValidationError)
from typing_extensions import Annotated

from ....errors import FerryError

log = logging.getLogger("ferry")

#: The connection variables Ferry honours (Ansible's names, and Ferry's own).
CONNECTION_VARS = (
    "ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
    "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
    "ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become",
    "ansible_become_method", "ansible_become_user", "ansible_become_password", "ansible_become_pass",
    "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_connection",
    "ferry_known_hosts", "ferry_connect_timeout", "ferry_ssh_dead_after", "ferry_command_timeout",
    "ferry_transfer",
)

SECRET_VARS = frozenset({"ansible_password", "ansible_ssh_pass", "ansible_ssh_password",
                         "ansible_become_password", "ansible_become_pass"})

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds for TCP connect, SSH banner and authentication, per hop."""
DEFAULT_DEAD_AFTER = 60.0
"""Seconds without an answer to keepalives after which a host is reported dead."""
DEFAULT_COMMAND_TIMEOUT = 1800.0
"""Seconds a remote command may run unless its caller gives its own timeout."""

# Host names, IPv4 and IPv6 addresses; never a leading '-' (it would read as an option).
_ADDRESS = r"^[A-Za-z0-9_\[][A-Za-z0-9_.:\[\]-]*$"
# User names as OpenSSH and sudo take them (also DOMAIN users with '@' or '.').
_USER = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$"
_PATH = r"^[^\x00\n]+$"

Address = Annotated[str, StringConstraints(pattern=_ADDRESS, max_length=253)]
User = Annotated[str, StringConstraints(pattern=_USER, max_length=64)]
PathText = Annotated[str, StringConstraints(pattern=_PATH, max_length=4096)]
Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class _Vars(BaseModel):
    """The raw connection variables, as pydantic checks and converts them.

    Each field's description is the rule quoted when a value breaks it."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    host: Optional[Address] = Field(None, validation_alias=AliasChoices("ansible_host", "ansible_ssh_host"),
                                    description="must be a host name or an IP address")
    port: Optional[Annotated[int, Field(ge=1, le=65535)]] = Field(
        None, validation_alias=AliasChoices("ansible_port", "ansible_ssh_port"),
        description="must be a port number, an integer from 1 to 65535")
    user: Optional[User] = Field(None, validation_alias=AliasChoices("ansible_user", "ansible_ssh_user"),
                                 description="must be a user name (letters, digits, '.', '_', '-', '@')")
    key_file: Optional[PathText] = Field(
        None, validation_alias=AliasChoices("ansible_ssh_private_key_file", "ansible_private_key_file"),
        description="must be the path of a private key file")
    password: Optional[SecretStr] = Field(
        None, validation_alias=AliasChoices("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"),
        description="must be a string")
    become: bool = Field(False, validation_alias="ansible_become", description="must be true or false")
    become_method: Literal["sudo"] = Field("sudo", validation_alias="ansible_become_method",
                                           description="only 'sudo' is supported")
    become_user: User = Field("root", validation_alias="ansible_become_user",
                              description="must be a user name (letters, digits, '.', '_', '-', '@')")
    become_password: Optional[SecretStr] = Field(
        None, validation_alias=AliasChoices("ansible_become_password", "ansible_become_pass"),
        description="must be a string")
    common_args: str = Field("", validation_alias="ansible_ssh_common_args", description="must be a string")
    extra_args: str = Field("", validation_alias="ansible_ssh_extra_args", description="must be a string")
    connection: Literal["ssh", "paramiko", "smart"] = Field(
        "ssh", validation_alias="ansible_connection",
        description="must be ssh (Ferry connects over SSH only)")
    known_hosts: Optional[PathText] = Field(None, validation_alias="ferry_known_hosts",
                                            description="must be the path of a known_hosts file")
    connect_timeout: Optional[Seconds] = Field(None, validation_alias="ferry_connect_timeout",
                                               description="must be a number of seconds > 0")
    dead_after: Optional[Seconds] = Field(None, validation_alias="ferry_ssh_dead_after",
                                          description="must be a number of seconds > 0")
    command_timeout: Seconds = Field(DEFAULT_COMMAND_TIMEOUT, validation_alias="ferry_command_timeout",
                                     description="must be a number of seconds > 0")
    transfer: Literal["auto", "openssh", "paramiko"] = Field(
        "auto", validation_alias="ferry_transfer", description="must be auto, openssh or paramiko")


def _aliases(field_name: str) -> list[str]:
    alias = _Vars.model_fields[field_name].validation_alias
    return list(alias.choices) if isinstance(alias, AliasChoices) else [str(alias)]


def _variable_of(field_name: str, raw: dict[str, Any]) -> str:
    """The inventory variable that set ``field_name`` (the first of its names present)."""
    return next((a for a in _aliases(field_name) if a in raw), _aliases(field_name)[0])


#: inventory variable -> field of :class:`_Vars`.
_FIELD_OF = {a: name for name in _Vars.model_fields for a in _aliases(name)}


def _check_vars(host: str, raw: dict[str, Any]) -> _Vars:
    """Validate the connection variables of ``host`` (one line naming variable and rule)."""
    try:
        return _Vars.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        var = str(err["loc"][0]) if err.get("loc") else "?"
        rule = _Vars.model_fields[_FIELD_OF[var]].description if var in _FIELD_OF else err.get("msg", "invalid")
        shown = "(hidden)" if var in SECRET_VARS else repr(raw.get(var))
        raise FerryError(f"{host}: {var}={shown}: {rule}") from None


# ---------------------------------------------------------------------------- ssh arguments

# OpenSSH client options without / with a value (ssh(1)).
_FLAGS = set("1246AaCfGgKkMNnqsTtVvXxYy")
_WITH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")
#: -o keys Ferry honours.
_HONOURED = {"proxyjump", "proxycommand", "user", "port", "hostname", "identityfile",
             "userknownhostsfile", "connecttimeout", "serveraliveinterval", "serveralivecountmax"}
#: -o keys that do not change where or how Ferry connects: dropped without a warning.
_HARMLESS = {"controlmaster", "controlpersist", "controlpath", "identitiesonly", "loglevel", "batchmode",
             "compression", "hashknownhosts", "pubkeyauthentication", "preferredauthentications",
             "passwordauthentication", "kbdinteractiveauthentication", "gssapiauthentication",
             "addkeystoagent", "forwardagent", "tcpkeepalive", "globalknownhostsfile", "checkhostip"}


@dataclass
class SSHArgs:
    """What ``ansible_ssh_common_args``/``ansible_ssh_extra_args`` say.

    Attributes:
        options: lower-case ssh_config keyword -> first value given (``-o``, ``-J``,
            ``-p``, ``-l``).
        identity_files: ``-i`` / ``-o IdentityFile`` values, in order.
        config_file: ``-F FILE``.
        ignored: options Ferry does not use (for a warning).
    """

    options: dict[str, str] = field(default_factory=dict)
    identity_files: list[str] = field(default_factory=list)
    config_file: str | None = None
    ignored: list[str] = field(default_factory=list)


def parse_ssh_args(host: str, variable: str, text: str, into: SSHArgs | None = None) -> SSHArgs:
    """Parse OpenSSH client options the way ``ssh`` reads its command line.

    Args:
        host: inventory name (for messages).
        variable: the variable the text came from (for messages).
        text: e.g. ``-o ProxyJump=jump@10.0.0.1 -o 'ProxyCommand=ssh -W %h:%p gw'``,
            split with :func:`shlex.split`.
        into: add to these already parsed arguments (the first value of a key wins).

    Raises:
        FerryError: unbalanced quotes, a word that is not an option, an option missing
            its value, an option ``ssh`` does not have; ``StrictHostKeyChecking`` other
            than ``yes`` (Ferry always verifies host keys).
    """
    args = into or SSHArgs()
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise FerryError(f"{host}: {variable}: {exc} (quote it as a shell would)") from None

    def option(keyword: str, value: str) -> None:
        key = keyword.lower()
        if key == "identityfile":
            args.identity_files.append(value)
        elif key == "stricthostkeychecking" and value.lower() not in ("yes", "true"):
            raise FerryError(f"{host}: {variable}: StrictHostKeyChecking={value} refused: Ferry always verifies "
                             f"host keys against ferry_known_hosts (add the key there out of band)")
        elif key in _HONOURED:
            args.options.setdefault(key, value)
        elif key not in _HARMLESS and key != "stricthostkeychecking":
            args.ignored.append(f"-o {keyword}")

    i = 0
    while i < len(words):
        word = words[i]
        if len(word) < 2 or not word.startswith("-"):
            raise FerryError(f"{host}: {variable}: unexpected word {word!r} (only ssh options such as "
                             f"-o Key=Value, -J, -i, -p, -l, -F)")
        flag = word[1]
        if flag in _WITH_VALUE:
            value = word[2:]
            if not value:
                i += 1
                if i >= len(words):
                    raise FerryError(f"{host}: {variable}: option -{flag} needs a value")
                value = words[i]
            if flag == "o":
                keyword, sep, rest = value.partition("=")
                if not sep:
                    keyword, _, rest = value.strip().partition(" ")
                if not keyword.strip() or not rest.strip():
                    raise FerryError(f"{host}: {variable}: -o {value!r} is not Key=Value")
                option(keyword.strip(), rest.strip())
            elif flag == "J":
                option("ProxyJump", value)
            elif flag == "i":
                args.identity_files.append(value)
            elif flag == "p":
                option("Port", value)
            elif flag == "l":
                option("User", value)
            elif flag == "F":
                args.config_file = args.config_file or value
            else:
                args.ignored.append(f"-{flag}")
        elif all(ch in _FLAGS for ch in word[1:]):
            args.ignored.extend(f"-{ch}" for ch in word[1:] if ch not in "qvT")
        else:
            raise FerryError(f"{host}: {variable}: {word!r} is not an ssh option")
        i += 1
    return args


# ---------------------------------------------------------------------------- ssh_config

_CONFIG_CACHE: dict[tuple[str, float], paramiko.SSHConfig] = {}


def load_ssh_config(path: Path | None) -> paramiko.SSHConfig:
    """The OpenSSH client configuration at ``path`` (``-F``), else ``~/.ssh/config`` when it
    exists, else an empty one. Parsed once per file version.

    Raises:
        FerryError: ``path`` given but missing, or a file paramiko cannot parse.
    """
    explicit = path is not None
    path = path or Path("~/.ssh/config").expanduser()
    if not path.is_file():
        if explicit:
            raise FerryError(f"ssh config file {path} (-F) not found")
        return paramiko.SSHConfig()
    key = (str(path), path.stat().st_mtime)
    if key not in _CONFIG_CACHE:
        try:
            _CONFIG_CACHE[key] = paramiko.SSHConfig.from_path(str(path))
        except Exception as exc:   # paramiko raises several kinds for a bad file
            raise FerryError(f"{path}: cannot read this ssh config: {exc}") from None
    return _CONFIG_CACHE[key]


def _lookup(config: paramiko.SSHConfig, name: str, where: str) -> dict[str, Any]:
    try:
        return dict(config.lookup(name))
    except Exception as exc:
        raise FerryError(f"{where}: ssh config lookup of {name!r} failed: {exc}") from None


# ---------------------------------------------------------------------------- hops

@dataclass(frozen=True)
class Hop:
    """One jump host (bastion) on the way to a target.

    Attributes:
        address: its HostName (IP or DNS name) as known_hosts lists it.
        port: its SSH port.
        user: login user on the jump host.
        key_files: private keys to offer (empty: agent and default keys).
    """

    address: str
    port: int
    user: str
    key_files: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """``bastion 10.0.0.1`` (``:PORT`` when not 22), for messages."""
        return f"bastion {self.address}" + (f":{self.port}" if self.port != 22 else "")


_JUMP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:@/\[\]]+)(?::(?P<port>[0-9]+))?/?$")


def _as_keys(host: str, what: str, values: list[str], base: Callable[[str], Path], required: bool) -> tuple[Path, ...]:
    keys = []
    for value in values:
        path = base(os.path.expanduser(value))
        if path.is_file():
            keys.append(path)
        elif required:
            raise FerryError(f"{host}: {what} {path} not found")
    return tuple(keys)


# ---------------------------------------------------------------------------- the spec

@dataclass(frozen=True)
class Become:
    """Privilege escalation with sudo (``ansible_become``).

    Attributes:
        user: ``ansible_become_user`` (default root).
        password: ``ansible_become_password`` (or ``--ask-become-pass``), None when
            sudo needs none (NOPASSWD).
        method: ``ansible_become_method``; only ``sudo``.
    """

    user: str = "root"
    password: SecretStr | None = None
    method: str = "sudo"


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything needed to open one host's SSH connection, validated.

    Attributes:
        host: inventory name (every message about the host uses it).
        address: the target's HostName (IP or DNS name; its known_hosts entry).
        port: SSH port, 1-65535.
        user: login user.
        key_files: private keys to offer, in order (empty: the agent and default keys).
        use_agent: offer the SSH agent's keys too.
        password: login password (``ansible_password``) or None.
        known_hosts: the known_hosts file EVERY hop's key must be in.
        jumps: bastions, first reached first (ProxyJump).
        proxy_command: a command whose stdin/stdout reach the first hop (or the target
            when there are no jumps), ``%h``/``%p``/``%r`` already expanded; run without
            a shell.
        connect_timeout: seconds for connect, banner and authentication, per hop.
        dead_after: seconds without an answer to keepalives before the host is dead.
        command_timeout: default seconds a command may run.
        transfer: ``openssh`` or ``paramiko``: what carries :meth:`send`'s bulk data
            (``ferry_transfer: auto``: OpenSSH for a direct key login, else paramiko).
        become: sudo settings when ``ansible_become`` is true (and the become user
            differs from the login user), else None.
        warnings: notes about ignored options, one line each.
    """

    host: str
    address: str
    port: int = 22
    user: str = "root"
    key_files: tuple[Path, ...] = ()
    use_agent: bool = True
    password: SecretStr | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts").expanduser()
    jumps: tuple[Hop, ...] = ()
    proxy_command: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    dead_after: float = DEFAULT_DEAD_AFTER
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    transfer: str = "paramiko"
    become: Become | None = None
    warnings: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """``user@address:port``, for messages."""
        return f"{self.user}@{self.address}:{self.port}"

    @classmethod
    def from_vars(cls, host: str, variables: dict[str, Any], base_dir: Path | None = None,
                  become_password: str | None = None, has_openssh: bool = True) -> "ConnectionSpec":
        """Build and validate the spec of inventory host ``host``.

        Args:
            host: inventory name.
            variables: the host's variables (only the connection variables are read).
            base_dir: relative paths (key, known_hosts, ``-F``) are relative to it
                (the inventory's directory); default the current directory.
            become_password: from ``--ask-become-pass``; used when the host has no
                ``ansible_become_password``.
            has_openssh: an ``ssh`` client is installed (``ferry_transfer: auto``
                picks it for bulk data when the host allows).

        Raises:
            FerryError: one line naming the host, the variable and the rule.
        """
        v = _check_vars(host, variables)
        base = base_dir or Path.cwd()

        def path(value: str) -> Path:
            p = Path(os.path.expanduser(value))
            return p if p.is_absolute() else base / p

        args = parse_ssh_args(host, "ansible_ssh_common_args", v.common_args)
        args = parse_ssh_args(host, "ansible_ssh_extra_args", v.extra_args, into=args)
        config = load_ssh_config(path(args.config_file) if args.config_file else None)
        alias = v.host or host
        cfg = _lookup(config, alias, host)
        opt = args.options

        def pick(key: str, default: Any) -> Any:
            """The ssh arguments' value of ``key``, else ssh_config's, else ``default``."""
            for candidate in (opt.get(key), cfg.get(key)):
                if candidate not in (None, ""):
                    return candidate
            return default

        def checked(name: str, value: Any, variable: str) -> Any:
            """``value`` (from the args or ssh_config) checked by the rule of ``variable``."""
            try:
                return getattr(_Vars.model_validate({variable: value}), name)
            except ValidationError:
                raise FerryError(f"{host}: {value!r} for {variable} (from ansible_ssh_*_args or ssh config): "
                                 f"{_Vars.model_fields[name].description}") from None

        # ansible_host is the name OpenSSH is given: a HostName (args, then ssh_config) maps it.
        address = checked("host", pick("hostname", alias), "ansible_host")
        port = v.port or checked("port", pick("port", 22), "ansible_port")
        user = v.user or checked("user", pick("user", getpass.getuser()), "ansible_user")
        connect_timeout = v.connect_timeout or checked(
            "connect_timeout", pick("connecttimeout", DEFAULT_CONNECT_TIMEOUT), "ferry_connect_timeout")
        # ferry_ssh_dead_after, else OpenSSH's ServerAliveInterval x ServerAliveCountMax, else 60 s.
        dead_after = v.dead_after
        if dead_after is None and str(pick("serveraliveinterval", "0")) != "0":
            dead_after = (checked("dead_after", pick("serveraliveinterval", 0), "ferry_ssh_dead_after")
                          * checked("dead_after", pick("serveralivecountmax", 3), "ferry_ssh_dead_after"))
        dead_after = dead_after or DEFAULT_DEAD_AFTER

        known = path(v.known_hosts) if v.known_hosts else (
            path(opt["userknownhostsfile"].split()[0]) if opt.get("userknownhostsfile") else
            Path(os.path.expanduser(cfg["userknownhostsfile"].split()[0])) if cfg.get("userknownhostsfile")
            else Path("~/.ssh/known_hosts").expanduser())
        if not known.is_file():
            raise FerryError(f"{host}: known_hosts file {known} not found (set ferry_known_hosts; add each "
                             f"host's key out of band)")

        # Keys: the inventory's key only; else -i / IdentityFile in the args; else ssh_config's
        # IdentityFile entries that exist (and the agent); else the agent and default keys.
        if v.key_file:
            keys = _as_keys(host, "ansible_ssh_private_key_file", [v.key_file], path, required=True)
            use_agent = False
        elif args.identity_files:
            keys = _as_keys(host, "IdentityFile (ansible_ssh_*_args)", args.identity_files, path, required=True)
            use_agent = False
        else:
            keys = _as_keys(host, "IdentityFile", list(cfg.get("identityfile", [])), path, required=False)
            use_agent = True

        # Hops: ProxyJump or ProxyCommand, from the args first, then ssh_config.
        jump_text, proxy = None, None
        for source in (opt, cfg):
            if source.get("proxyjump") or source.get("proxycommand"):
                jump_text, proxy = source.get("proxyjump"), source.get("proxycommand")
                break
        if jump_text and jump_text.lower() == "none":
            jump_text = None
        if proxy and proxy.lower() == "none":
            proxy = None
        if jump_text:
            proxy = None
        jumps: list[Hop] = []
        if jump_text:
            jumps, proxy = _resolve_jumps(host, jump_text, config, keys, path)
        elif proxy is not None and opt.get("proxycommand"):
            proxy = _expand_proxy(proxy, address, port, user)

        password = v.password
        transfer = v.transfer
        if transfer == "auto":
            # OpenSSH for a direct key login; through bastions or a ProxyCommand paramiko's
            # tunnel carried bulk data in 0.77-0.81x the time of the OpenSSH ProxyCommand
            # chain (benchmarks/ssh_bench.py), and a password login has no OpenSSH path.
            transfer = "openssh" if has_openssh and password is None and not jumps and not proxy \
                else "paramiko"
        elif transfer == "openssh" and password is not None and not keys:
            raise FerryError(f"{host}: ferry_transfer=openssh cannot log in with ansible_password "
                             f"(OpenSSH takes no password from Ferry): use auto or paramiko")

        for secret, name in ((v.become_password, "become_password"), (v.password, "password")):
            if secret is not None and any(c in secret.get_secret_value() for c in "\n\r\x00"):
                raise FerryError(f"{host}: {_variable_of(name, variables)}=(hidden): must be one line "
                                 f"(sudo reads it up to the first newline)")
        if become_password is not None and any(c in become_password for c in "\n\r\x00"):
            raise FerryError(f"{host}: the --ask-become-pass password must be one line")
        become = None
        if v.become and v.become_user != user:
            become = Become(v.become_user, v.become_password or (
                SecretStr(become_password) if become_password is not None else None), v.become_method)

        notes = tuple(f"{host}: {o} in ansible_ssh_*_args is not used by Ferry (ignored)"
                      for o in dict.fromkeys(args.ignored))
        return cls(host=host, address=address, port=int(port), user=str(user), key_files=keys,
                   use_agent=use_agent, password=password, known_hosts=known, jumps=tuple(jumps),
                   proxy_command=proxy, connect_timeout=float(connect_timeout), dead_after=float(dead_after),
                   command_timeout=float(v.command_timeout), transfer=transfer, become=become, warnings=notes)


def _expand_proxy(command: str, address: str, port: int, user: str) -> str:
    """``%h``, ``%p``, ``%r``, ``%%`` in a ProxyCommand from the arguments (paramiko
    expands those from ssh_config itself)."""
    table = {"h": address, "p": str(port), "r": user, "%": "%"}
    return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), command)


def _resolve_jumps(host: str, text: str, config: paramiko.SSHConfig, target_keys: tuple[Path, ...],
                   path: Callable[[str], Path], depth: int = 0
                   ) -> tuple[list[Hop], str | None]:
    """The hops of a ProxyJump value (``[user@]host[:port],...``), each looked up in the
    ssh config; the first hop's own ProxyJump/ProxyCommand from the config applies
    before it, as with OpenSSH's ``-J``. Returns ``(hops, proxy command to the first)``.

    A hop's keys: its ssh_config IdentityFile, else the target's keys (none: the agent
    and default keys). The target's password is never offered to a hop."""
    if depth > 8:
        raise FerryError(f"{host}: ProxyJump chain longer than 8 hops (a loop in ssh config?)")
    hops: list[Hop] = []
    proxy: str | None = None
    for n, word in enumerate(w.strip() for w in text.split(",")):
        m = _JUMP.match(word)
        if not m:
            raise FerryError(f"{host}: ProxyJump {word!r} is not [user@]host[:port]")
        alias = m.group("host").strip("[]")
        cfg = _lookup(config, alias, host)
        raw = {"ansible_host": cfg.get("hostname", alias),
               "ansible_user": m.group("user") or cfg.get("user") or getpass.getuser(),
               "ansible_port": m.group("port") or cfg.get("port", 22)}
        try:
            checked = _Vars.model_validate(raw)
        except ValidationError:
            raise FerryError(f"{host}: ProxyJump {word!r}: bad host, user or port") from None
        keys = _as_keys(host, f"IdentityFile of {alias}", list(cfg.get("identityfile", [])), path, required=False)
        if n == 0:
            pj, pc = cfg.get("proxyjump"), cfg.get("proxycommand")
            if pj and pj.lower() != "none":
                hops, proxy = _resolve_jumps(host, pj, config, target_keys, path, depth + 1)
            elif pc:
                proxy = pc
        hops.append(Hop(address=str(checked.host), port=int(checked.port or 22), user=str(checked.user),
                        key_files=keys or target_keys))
    return hops, proxy


def warn_once(spec: ConnectionSpec) -> None:
    """Log the spec's warnings (each once per process) on the ``ferry`` logger."""
    for line in spec.warnings:
        if line not in _WARNED:
            _WARNED.add(line)
            log.warning("warning: %s", line)


_WARNED: set[str] = set()
