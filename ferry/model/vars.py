"""Variables: typed declarations (``defaults.yml``), ``--set`` parsing, the precedence
merge, and the check of every host's merged variables on the controller (pure).

Every variable a role or a stack uses is declared once, in its ``defaults.yml``
(``roles/defaults.yml``, ``roles/<role>/defaults.yml``, ``stacks/<stack>/defaults.yml``),
as a mapping::

    # Host port nginx publishes (the entry point users open).
    http_port: {type: port, default: 80, help: "Host port nginx publishes."}
    # Model name the backend asks for; an empty value is refused.
    llm_model: {type: string, default: gpt-4o-mini, required: true, help: "..."}
    # No default: the inventory (or --set) must give it.
    wechatmp_token: {type: secret, help: "Token of the official account."}

Keys of a declaration (the shape is checked with JSON Schema, :data:`DECLARATION`):

- ``type``: ``int``, ``float``, ``port`` (an integer 1-65535), ``bool``, ``string``,
  ``identifier`` (letters, digits, ``.``, ``_``, ``-``; no ``/``), ``path`` (absolute,
  letters, digits and ``. _ - + @ /`` only, no ``..``), ``enum`` (one of ``choices``),
  ``secret`` (a string never shown), ``list`` (elements per ``items``), ``map``
  (fixed ``keys``, or any keys with ``values``);
- ``help``: what it is for (one line; the comment above it may say more);
- ``default``: its value when nothing sets it; **without** a default the variable is
  required: the inventory or ``--set`` must give it;
- ``required: true``: an empty value (``""``, ``[]``, ``{}``) is refused too;
- ``min``/``max`` (int, float), ``pattern`` (string, secret: a regular expression the
  whole value must match), ``choices`` (enum);
- ``items`` (list) and ``keys``/``values`` (map): declarations of the elements, without
  ``help``/``default``; a key of ``keys`` may say ``required: true``.

A stack may change the default of a variable a role declares without declaring it
again: ``compose_wait_timeout: {default: 180, help: "..."}`` (no ``type``).

Values from text (``--set``, INI inventories) are converted to the declared type first,
as Ansible's argument specs do: ``"8080"`` is a port, ``"yes"`` a bool, ``[a, b]`` a list
(parsed as YAML); a string-typed ``--set`` value is taken literally. A value that does
not fit is refused on the controller, before any connection, in one line naming where
it came from (file, group, ``--set``), the key, the host and the rule.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import FerryError
from . import schema as sch
from .yamlfile import load_yaml_file, parse_yaml

TYPES = ("int", "float", "port", "bool", "string", "identifier", "path", "enum", "secret", "list", "map")
"""The declared types of variables (see the module docstring)."""

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"
"""An identifier: a file or Compose name part; no ``/``, no leading ``.`` or ``-``."""

ABSOLUTE_PATH = r"^(?!.*(^|/)\.\.?(/|$))/[A-Za-z0-9._@+/-]*\Z"
"""An absolute path of letters, digits and ``. _ - + @ /``, no ``.`` or ``..`` part:
nothing a shell, YAML or a Compose volume string (``:``) reads specially. (Patterns end
with ``\\Z``, not ``$``: Python's ``$`` also matches before a final newline.)"""

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_STRINGS = ("string", "identifier", "path", "secret")
_TEXT_PARSED = ("int", "float", "port", "bool", "list", "map")
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")

_INNER = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(TYPES), "x-message": "must be one of: " + ", ".join(TYPES)},
        "required": {"type": "boolean"},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "pattern": {"type": "string", "format": "regex"},
        "choices": {"type": "array", "minItems": 1, "items": {"type": ["string", "integer", "number", "boolean"]}},
        "items": {"$ref": "#/$defs/inner"},
        "keys": {"type": "object", "additionalProperties": {"$ref": "#/$defs/inner"}},
        "values": {"$ref": "#/$defs/inner"},
        "help": {"type": "string"},
    },
    "allOf": [
        {"if": {"properties": {"type": {"const": "enum"}}},
         "then": {"required": ["choices"]},
         "else": {"not": {"required": ["choices"]}, "x-message": "'choices' is only for type enum"}},
        *({"if": {"required": [key]},
           "then": {"properties": {"type": {"enum": types, "x-message": f"'{key}' is only for type {' or '.join(types)}"}}}}
          for key, types in (("min", ["int", "float"]), ("max", ["int", "float"]), ("pattern", ["string", "secret"]),
                             ("items", ["list"]), ("keys", ["map"]), ("values", ["map"]))),
        {"not": {"required": ["keys", "values"]}, "x-message": "give either 'keys' or 'values', not both"},
    ],
}

DECLARATION: dict[str, Any] = {
    "$defs": {"inner": _INNER},
    "type": "object",
    "additionalProperties": False,
    "properties": {**_INNER["properties"], "default": {}, "help": {"type": "string", "minLength": 1}},
    "required": ["type", "help"],
    "allOf": _INNER["allOf"],
}
"""JSON Schema of one declaration in ``defaults.yml`` (module docstring)."""

OVERRIDE: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["default"],
    "properties": {"default": {}, "help": {"type": "string"}},
}
"""JSON Schema of a stack's new default for a role's variable (no ``type``)."""


_MISSING = object()


@dataclass
class Declaration:
    """One declared variable.

    Attributes:
        name: variable name.
        spec: the declaration mapping as written (``type``, ``help``, ``default``...).
        source: the ``defaults.yml`` declaring it (for messages).
        default_source: the file its default comes from (a stack may override it).
    """

    name: str
    spec: dict[str, Any]
    source: str
    default_source: str = ""

    @property
    def type(self) -> str:
        """The declared type (:data:`TYPES`)."""
        return self.spec["type"]

    @property
    def help(self) -> str:
        """What the variable is for."""
        return self.spec.get("help", "")

    @property
    def has_default(self) -> bool:
        """False for a required variable the inventory must give."""
        return "default" in self.spec

    @property
    def secret(self) -> bool:
        """The value (or part of it) is secret: never shown in messages."""
        return _has_secret(self.spec)

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema a value of this variable must satisfy (built once)."""
        return value_schema(self.spec)


def _has_secret(spec: Mapping[str, Any]) -> bool:
    if spec.get("type") == "secret":
        return True
    inner = [spec.get("items"), spec.get("values"), *(spec.get("keys") or {}).values()]
    return any(isinstance(s, dict) and _has_secret(s) for s in inner)


def rule(spec: Mapping[str, Any]) -> str:
    """The rule of a declaration in words, e.g. ``must be a port (an integer 1-65535)``."""
    t = spec["type"]
    lo, hi = spec.get("min"), spec.get("max")
    bounds = (f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else
              f" >= {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else "")
    if t == "int":
        return "must be an integer" + bounds
    if t == "float":
        return "must be a number" + bounds
    if t == "port":
        return "must be a port (an integer 1-65535)"
    if t == "bool":
        return "must be true or false"
    if t == "identifier":
        return "must be an identifier (letters, digits, '.', '_', '-'; starting with a letter or digit)"
    if t == "path":
        return ("must be an absolute path of letters, digits and '._-+@/' only "
                "(no spaces, ':', '#', '$', quotes, newlines or '..')")
    if t == "enum":
        return "must be one of: " + ", ".join(str(c) for c in spec["choices"])
    if t in ("string", "secret"):
        return "must be a string" + (f" matching {spec['pattern']}" if spec.get("pattern") else "")
    if t == "list":
        return "must be a list" + (f" whose elements {rule(spec['items'])}" if spec.get("items") else "")
    return "must be a mapping"


def value_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Compile a declaration into the JSON Schema of its values.

    The schema carries ``x-rule`` (the rule in words) and ``x-secret`` annotations for
    one-line messages (:func:`ferry.model.schema.explain`).
    """
    t = spec["type"]
    out: dict[str, Any]
    if t in ("int", "port"):
        out = {"type": "integer"}
    elif t == "float":
        out = {"type": "number"}
    elif t == "bool":
        out = {"type": "boolean"}
    elif t == "identifier":
        out = {"type": "string", "pattern": IDENTIFIER, "maxLength": 128}
    elif t == "path":
        out = {"type": "string", "pattern": ABSOLUTE_PATH, "maxLength": 1024}
    elif t == "enum":
        out = {"enum": list(spec["choices"])}
    elif t in ("string", "secret"):
        out = {"type": "string"}
        if spec.get("pattern"):
            out["pattern"] = "^(?:" + spec["pattern"] + ")\\Z"
    elif t == "list":
        out = {"type": "array"}
        if spec.get("items"):
            out["items"] = value_schema(spec["items"])
    else:
        out = {"type": "object"}
        if spec.get("keys"):
            out["properties"] = {k: value_schema(v) for k, v in spec["keys"].items()}
            out["additionalProperties"] = False
            out["required"] = sorted(k for k, v in spec["keys"].items() if v.get("required"))
        elif spec.get("values"):
            out["additionalProperties"] = value_schema(spec["values"])
    if t == "port":
        out.update(minimum=1, maximum=65535)
    if spec.get("min") is not None:
        out["minimum"] = spec["min"]
    if spec.get("max") is not None:
        out["maximum"] = spec["max"]
    if spec.get("required"):
        out.update({"string": {"minLength": 1}, "array": {"minItems": 1}, "object": {"minProperties": 1}}.get(
            out.get("type", ""), {}))
    out["x-rule"] = rule(spec)
    if _has_secret(spec):
        out["x-secret"] = True
    return out


def coerce(spec: Mapping[str, Any], value: Any, text: bool = False) -> Any:
    """``value`` converted to the declared type where that is lossless, as Ansible's
    argument specs do; anything else is returned unchanged (and refused by the schema).

    Args:
        spec: the declaration.
        value: the value as found.
        text: the value is command-line text (``--set``): non-string types parse it as
            YAML (``[a, b]`` is a list), string types take it literally.
    """
    t = spec["type"]
    if isinstance(value, str) and text and t in _TEXT_PARSED:
        try:
            value = parse_yaml(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)           # inf, nan (YAML .inf): no number a user means; the schema refuses the text
    if t in ("int", "port") and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        if t in ("int", "port") and _INT.fullmatch(value):
            return int(value)
        if t == "float" and _FLOAT.fullmatch(value) and math.isfinite(float(value)):
            return float(value)
        if t == "bool" and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
    if t in _STRINGS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if t == "enum" and value not in spec["choices"]:
        return next((c for c in spec["choices"] if str(c) == str(value)), value)
    if t == "list" and isinstance(value, list) and spec.get("items"):
        return [coerce(spec["items"], v) for v in value]
    if t == "map" and isinstance(value, dict):
        keys, values = spec.get("keys") or {}, spec.get("values")
        return {k: coerce(keys[k], v) if k in keys else coerce(values, v) if values else v
                for k, v in value.items()}
    return value


@dataclass
class Layer:
    """One source of variable values, lowest precedence first in a list of layers.

    Attributes:
        name: where the values come from, for messages (``--set``, the inventory file).
        values: ``{variable: value}``.
        origins: a finer source per variable (``inventory.yml group prod``), if known.
        text: the values are command-line text (see :func:`coerce`).
    """

    name: str
    values: Mapping[str, Any]
    origins: Mapping[str, str] = field(default_factory=dict)
    text: bool = False

    def origin(self, key: str) -> str:
        """Where ``key``'s value in this layer comes from."""
        return self.origins.get(key) or self.name


class Declarations:
    """The declared variables of some roles and a stack, by name.

    Args:
        items: declarations (typed: a ``type`` key).

    Attributes:
        items: ``{name: Declaration}``, in declaration order.
        overrides: new defaults for variables declared elsewhere (a stack's default for
            a role variable): ``{name: (default, file)}``, applied by ``+``.
    """

    def __init__(self, items: Iterable[Declaration] = ()):
        self.items: dict[str, Declaration] = {}
        self.overrides: dict[str, tuple[Any, str]] = {}
        for d in items:
            self.add(d)

    def add(self, d: Declaration) -> None:
        """Add one typed declaration.

        Raises:
            FerryError: the variable is declared already (names both files).
        """
        known = self.items.get(d.name)
        if known is not None:
            raise FerryError(f"{d.source}: key '{d.name}': already declared in {known.source} (declare it once; "
                             f"give only a new default here: {d.name}: {{default: ...}})")
        self.items[d.name] = d

    def override(self, name: str, default: Any, source: str) -> None:
        """Give declared variable ``name`` a new default, from file ``source``; kept in
        :attr:`overrides` while ``name`` is not declared here.

        Raises:
            FerryError: the default breaks the variable's declaration.
        """
        known = self.items.get(name)
        if known is None:
            self.overrides[name] = (default, source)
            return
        spec = {**known.spec, "default": default}
        sch.check(coerce(spec, default), value_schema(spec), source, f"{name}.default")
        self.items[name] = Declaration(name, spec, known.source, source)

    def __add__(self, other: "Declarations") -> "Declarations":
        out = Declarations(self.items.values())
        out.overrides = dict(self.overrides)
        for d in other.items.values():
            out.add(d)
        for name, (default, source) in {**out.overrides, **other.overrides}.items():
            out.overrides.pop(name, None)
            out.override(name, default, source)
        return out

    def complete(self) -> "Declarations":
        """Self, once every override found its declaration.

        Raises:
            FerryError: a new default for a variable nothing declares (names the file).
        """
        for name, (_, source) in self.overrides.items():
            raise FerryError(f"{source}: key '{name}': no 'type': only a variable a role declares may be given "
                             "a new default without one")
        return self

    def __contains__(self, name: str) -> bool:
        return name in self.items

    def names(self) -> set[str]:
        """Every declared name."""
        return set(self.items)

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of the variables that have one (and the new defaults
        of :attr:`overrides`)."""
        out = {n: d.spec["default"] for n, d in self.items.items() if d.has_default}
        return {**out, **{n: v for n, (v, _) in self.overrides.items()}}

    def check(self, layers: Iterable[Layer], host: str) -> dict[str, Any]:
        """Merge defaults and ``layers`` (lowest first, key by key as Ansible's
        ``hash_behaviour=replace``) and check every declared variable.

        Args:
            layers: inventory, ``--set``... (not the defaults: they come from here).
            host: inventory name, for messages.

        Returns:
            The merged variables, declared ones converted to their type (:func:`coerce`);
            undeclared variables are kept as they are (see :meth:`unknown`).

        Raises:
            FerryError: one line ``<origin>: key '<name>' (host <host>): <rule>`` for
                the first variable (in declaration order) whose value breaks its rule,
                or a required variable with no value.
        """
        merged: dict[str, Any] = self.defaults()
        origin = {n: d.default_source or d.source for n, d in self.items.items()}
        textual: set[str] = set()
        for layer in layers:
            for key, value in layer.values.items():
                merged[key] = value
                origin[key] = layer.origin(key)
                textual.discard(key)
                if layer.text:
                    textual.add(key)
        for name, d in self.items.items():
            if name not in merged:
                raise FerryError(f"{d.source}: key '{name}' (host {host}): has no default and no value; "
                                 f"set it in the inventory or with --set {name}=... ({d.help})")
            value = coerce(d.spec, merged[name], name in textual)
            sch.check(value, d.schema, origin[name], name, host)
            merged[name] = value
        return merged

    def unknown(self, names: Iterable[str], also_known: Iterable[str] = ()) -> list[str]:
        """The names no declaration knows (typos), sorted; ``ansible_*`` (Ansible's own
        variables, e.g. connection settings) and ``also_known`` are not reported."""
        known = self.names() | set(also_known)
        return sorted(n for n in set(names) if n not in known and not n.startswith("ansible_"))

    def suggest(self, name: str) -> str | None:
        """The declared name closest to ``name`` (a likely fix for a typo), or None."""
        close = difflib.get_close_matches(name, sorted(self.items), n=1, cutoff=0.75)
        return close[0] if close else None


def load_declarations(path: Path) -> Declarations:
    """Read one ``defaults.yml`` (format in the module docstring); a missing file
    declares nothing.

    Raises:
        FerryError: malformed YAML, a declaration of the wrong shape, or a default
            that breaks its own declaration: ``<file>: key '<name>.<field>': <rule>``.
    """
    if not path.is_file():
        return Declarations()
    data = load_yaml_file(path, "defaults")
    if data is None:
        return Declarations()
    if not isinstance(data, dict):
        raise FerryError(f"{path}: key '(top)': must map variable names to declarations")
    out = Declarations()
    for name, spec in data.items():
        name = str(name)
        if not VARIABLE_NAME.fullmatch(name):
            raise FerryError(f"{path}: key '{name}': a variable name is letters, digits and '_'")
        if not isinstance(spec, dict):
            raise FerryError(f"{path}: key '{name}': must be a declaration such as {{type: {guess_type(spec)}, "
                             f"default: {shown_default(spec)}, help: \"...\"}} (format: README \"Variables\")")
        if "type" not in spec:
            sch.check(spec, OVERRIDE, str(path), name)
            out.override(name, spec["default"], str(path))
            continue
        sch.check(spec, DECLARATION, str(path), name)
        if "default" in spec:
            sch.check(coerce(spec, spec["default"]), value_schema(spec), str(path), f"{name}.default")
        out.add(Declaration(name, dict(spec), str(path)))
    return out


def guess_type(value: Any) -> str:
    """The declared type a bare default suggests (for a hint in a message)."""
    for kind, t in ((bool, "bool"), (int, "int"), (float, "float"), (list, "list"), (dict, "map")):
        if isinstance(value, kind):
            return t
    return "string"


def shown_default(value: Any) -> str:
    """``value`` as it would be written in YAML flow style (for a hint in a message)."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix(" ...")


def check_value(spec: Mapping[str, Any], value: Any, where: str, text: bool = True) -> Any:
    """One value against a declaration (e.g. a command-line option): converted as
    :func:`coerce` does, then checked.

    Args:
        spec: a declaration (``{type: int, min: 0}``).
        value: the value (command-line text when ``text``).
        where: what to name in the message (``--serial``).

    Returns:
        The converted value.

    Raises:
        FerryError: ``<where>: <value> <rule>``, one line.
    """
    value = coerce(spec, value, text)
    error = sch.first_error(value, value_schema(spec))
    if error is not None:
        raise FerryError(f"{where}: {sch.explain(error)[1]}")
    return value


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """Parse ``--set key=value`` arguments into ``{key: text}``; the text is converted
    to the variable's declared type when variables are checked (:func:`coerce`).

    Args:
        items: strings like ``llm_model=gpt-4o``.

    Raises:
        FerryError: an item has no ``=``, its key is not a variable name, or its value
            is not UTF-8 (the shell's bytes arrive as lone surrogates).
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FerryError(f"--set {sch.shown(item)}: expected key=value")
        if not VARIABLE_NAME.fullmatch(key):
            raise FerryError(f"--set {sch.shown(item)}: {sch.shown(key)} is not a variable name (letters, digits, '_')")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FerryError(f"--set {key}: the value is not valid UTF-8 text") from None
        out[key] = value
    return out


def merge_vars(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge variable layers, lowest precedence first (a plain key-by-key override, as
    Ansible's default ``hash_behaviour=replace``); no checks (see :meth:`Declarations.check`)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out
