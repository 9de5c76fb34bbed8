"""Variables: ``--set`` parsing and the precedence merge of variable layers (pure)."""

from __future__ import annotations

from typing import Any, Iterable

import yaml

from ..errors import FerryError


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` arguments; values are YAML scalars (``3`` is an int).

    Args:
        items: strings like ``llm_model=gpt-4o``.

    Raises:
        FerryError: an item has no ``=`` or an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FerryError(f"--set '{item}': expected key=value")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        out[key] = value if isinstance(parsed, (dict, list)) or parsed is None else parsed
    return out


def merge_vars(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge variable layers, lowest precedence first (a plain key-by-key override, as
    Ansible's default ``hash_behaviour=replace``)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out
