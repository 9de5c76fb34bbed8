"""Options of the day-2 commands (``logs``, ``exec``, ``restart``...), checked on the
controller before any host is contacted. Pure: strings in, checked values out; a bad
value raises :class:`ferry.errors.FerryError` naming the option.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import FerryError

_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
_UNIX = re.compile(r"\d{9,}(\.\d+)?")


def since(value: str | None) -> str | None:
    """``--since``: a relative duration (``10m``, ``1h30m``, Go syntax), a date or time
    (``2026-11-22``, ``2026-11-22T02:58:44Z``) or a Unix timestamp, as ``docker compose
    logs --since`` takes them.

    Raises:
        FerryError: anything else.
    """
    if value is None or value == "":
        return None
    value = str(value).strip()
    if _DURATION.fullmatch(value) or _DATE.fullmatch(value) or _UNIX.fullmatch(value):
        return value
    raise FerryError(f"--since {value!r}: expected a duration such as 10m or 2h, a date such as "
                     f"2026-11-22T02:58:44Z, or a Unix timestamp")


def tail(value: str | int | None) -> str | None:
    """``--tail``: a number of lines (>= 0) or ``all``.

    Raises:
        FerryError: anything else.
    """
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text == "all" or (text.isdigit() and text.isascii()):
        return text
    raise FerryError(f"--tail {value!r}: expected a number of lines or 'all'")


def services(wanted: Iterable[str], known: Iterable[str], stack: str) -> list[str]:
    """The ``--service`` names, each a service of the stack's current release.

    Args:
        wanted: names given (none: every service).
        known: the services of the current release's compose file.
        stack: stack name, for the message.

    Raises:
        FerryError: a name that is not a service (the known ones are listed).
    """
    known = sorted(known)
    out = []
    for name in wanted:
        if name not in known:
            raise FerryError(f"--service {name!r}: {stack} has no such service (services: {', '.join(known)})")
        if name not in out:
            out.append(name)
    return out


def command(argv: list[str]) -> list[str]:
    """The command of ``exec`` (the words after ``--``): at least one word, no NUL byte
    (a shell word cannot hold one).

    Raises:
        FerryError: no command, or a NUL byte.
    """
    if not argv:
        raise FerryError("exec needs a command after '--', e.g. ferry exec --host prod --service backend -- ls -l /app")
    for word in argv:
        if "\0" in word:
            raise FerryError("exec: a command word holds a NUL byte")
    return list(argv)
