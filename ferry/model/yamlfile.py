"""Reading YAML files of the controller (stacks, defaults, inventories) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import FerryError


SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""PyYAML's safe loader, in C (libyaml) when PyYAML was built with it: same results, ~10x faster."""


def parse_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` with :data:`SafeLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=SafeLoader)


def load_yaml_file(path: Path, what: str = "YAML") -> Any:
    """Parse a YAML file, turning syntax errors into one-line :class:`FerryError`.

    Args:
        path: the file.
        what: a word for the message ("inventory", "stack").

    Raises:
        FerryError: missing file, or malformed YAML (message has ``file:line:column``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FerryError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError as exc:
        raise FerryError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FerryError(f"{path}{where}: malformed {what} YAML: {problem}") from None
