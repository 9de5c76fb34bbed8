"""Shell words for the host boundary: quoting, and ``sh -c`` for the rare command that
needs shell features.

Commands are argument lists. Where a builder needs ``&&``, redirection or a loop, it
returns ``["sh", "-c", SCRIPT]`` and quotes every interpolated word with :func:`q`
(:func:`shlex.quote`), once. The transport joins argument lists with :func:`join`.
"""

from __future__ import annotations

import shlex
from typing import Sequence

q = shlex.quote
"""Quote one shell word (:func:`shlex.quote`)."""


def sh(script: str) -> list[str]:
    """``["sh", "-c", script]``: the caller has quoted every interpolated word."""
    return ["sh", "-c", script]


def join(argv: Sequence[str]) -> str:
    """The shell command line for ``argv``: every word quoted with :func:`shlex.quote`."""
    return shlex.join([str(a) for a in argv])
