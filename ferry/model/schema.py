"""JSON Schema checks of the controller's input files, with one-line errors (pure).

Ferry describes the shape of its input files with JSON Schema (draft 2020-12) and
checks them with the ``jsonschema`` library: ``stack.yml`` (``stack.schema.yml`` next
to this module), the declarations of ``defaults.yml`` (:mod:`ferry.model.vars`) and the
typed values of every host's variables. A violation is reported as one line naming
the file and the key, e.g. ``stacks/x/stack.yml: key 'templates[0].dest': ...``.

Schemas may carry annotations of Ferry's own (JSON Schema ignores unknown keywords):
``x-rule``, the rule a value breaks, in words (shown after the value); ``x-message``,
the whole message; ``x-secret``, the value must never be shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from ..errors import FerryError
from .yamlfile import parse_yaml

Validator = jsonschema.Draft202012Validator


def key_path(parts: Iterable[Any], prefix: str = "") -> str:
    """A dotted key path as messages show it: ``("templates", 0, "dest")`` ->
    ``templates[0].dest``; ``prefix`` is the top key (``uni_api_providers``)."""
    out = prefix
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for a one-line message: ``repr`` (newlines escaped), at most ``limit`` chars."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_validators: dict[int, tuple[dict[str, Any], Any]] = {}


def validator(schema: dict[str, Any]):
    """A validator for ``schema`` (with format checks, e.g. ``regex``), kept while the
    same schema object is used again: schemas are built once and never changed."""
    found = _validators.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_validators) > 1024:
            _validators.clear()
        found = _validators[id(schema)] = (schema, Validator(schema, format_checker=Validator.FORMAT_CHECKER))
    return found[1]


def first_error(instance: Any, schema: dict[str, Any]) -> ValidationError | None:
    """The most relevant violation of ``schema`` by ``instance`` (jsonschema's
    ``best_match``), or None when it conforms."""
    return best_match(validator(schema).iter_errors(instance))


def explain(error: ValidationError) -> tuple[list[Any], str]:
    """Where a violation is and the rule it breaks, in one line.

    Returns:
        ``(key path parts, text)``: an unknown or missing key is named in the path
        (``unknown key (known: ...)``, ``is required``); a value that breaks its rule
        gets the schema's ``x-message``, or the value and its ``x-rule``
        (``99999 must be a port``), the value hidden when the schema says ``x-secret``;
        else jsonschema's own message.
    """
    sub = error.schema if isinstance(error.schema, dict) else {}
    path = list(error.absolute_path)
    keyword = error.validator
    if keyword == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return path + [missing], "is required"
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(sub.get("properties", {}))
        extra = sorted(set(map(str, error.instance)) - set(known))
        return path + extra[:1], "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    if error.instance in ("", [], {}) and any(k in sub for k in ("minLength", "minItems", "minProperties")):
        return path, "is empty; a value is required"
    if sub.get("x-message"):
        return path, sub["x-message"]
    value = "(secret value hidden)" if sub.get("x-secret") else shown(error.instance)
    if sub.get("x-rule"):
        return path, f"{value} {sub['x-rule']}"
    if sub.get("x-secret"):
        return path, f"{value} does not match its declaration"
    return path, " ".join(error.message.split())


def check(instance: Any, schema: dict[str, Any], where: str, prefix: str = "", host: str = "") -> None:
    """Validate ``instance`` against ``schema``.

    Args:
        instance: parsed data (YAML/JSON).
        schema: a JSON Schema (draft 2020-12).
        where: the file (or ``--set``, ``inventory ...``) for the message.
        prefix: key path of ``instance`` inside its file (``""`` for the whole file).
        host: the inventory host the value is for, if any.

    Raises:
        FerryError: ``<where>: key '<path>'[ (host <host>)]: <rule>``, one line, for the
            most relevant violation.
    """
    error = first_error(instance, schema)
    if error is not None:
        parts, text = explain(error)
        raise FerryError(f"{where}: key '{key_path(parts, prefix)}'" + (f" (host {host})" if host else "")
                         + f": {text}")


def load_schema(path: Path) -> dict[str, Any]:
    """A schema file of the package (YAML, read with libyaml). Checked against the
    draft's meta-schema by the unit tests (``tests/unit/test_schema_files.py``), not at
    every start of the command (0.02 s).

    Raises:
        yaml.YAMLError: the file is not YAML (a bug in Ferry).
    """
    return parse_yaml(path.read_text(encoding="utf-8"))
