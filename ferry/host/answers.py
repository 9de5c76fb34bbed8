"""What hosts answer is untrusted input too: a host whose ``docker`` prints garbage, a
file Ferry wrote that was cut short (a full disk) or edited by hand. The parsers of
host output read it through these helpers, so that an answer they cannot use is ONE
line naming what was being read, never a traceback (pure: no I/O).

An :class:`AnswerError` does not know the host (parsers see only text); the per-host
code that called the parser reports it as a :class:`ferry.errors.HostError`
(:func:`on_host`).
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import threading
from typing import Any, Iterator

from ..errors import FerryError, HostError


class AnswerError(FerryError):
    """A host's answer (command output or a file Ferry reads back) that is not what it
    must be. The message names what was read and shows the start of the answer."""


def snippet(data: bytes | str, limit: int = 60) -> str:
    """The first ``limit`` characters of ``data`` on one line (``repr``), for messages."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    text = data.strip()
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def json_doc(data: bytes | str, what: str, kind: type | tuple[type, ...] = (dict, list)) -> Any:
    """``data`` parsed as JSON whose top level is a ``kind`` (dict and list by default).

    Args:
        data: the host's answer (bytes or text).
        what: what was read, for the message (``docker inspect``, ``current/release.json``).
        kind: the type(s) the document must have.

    Raises:
        AnswerError: not JSON, or JSON of another type.
    """
    try:
        doc = json.loads(data)
    except (ValueError, TypeError, RecursionError):     # JSONDecodeError, undecodable bytes, [[[[...
        raise AnswerError(f"{what}: the host's answer is not JSON: {snippet(data)}") from None
    if not isinstance(doc, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnswerError(f"{what}: the host's answer is JSON but not a {names}: {snippet(data)}")
    return doc


def json_file(found: dict[str, bytes], name: str, default: Any = None) -> Any:
    """The JSON object in ``found[name]`` (a file read back from a host with
    :func:`ferry.host.files.read_tar`), or ``default`` (``{}``) when the file is absent or
    empty.

    Raises:
        AnswerError: the file is there but holds no JSON object (names the file).
    """
    data = found.get(name)
    if not data:
        return {} if default is None else default
    return json_doc(data, name, dict)


def tar_members(data: bytes, what: str) -> Iterator[tuple[str, bytes]]:
    """``(path, content)`` of the regular files in the tar stream ``data``.

    Raises:
        AnswerError: not a tar stream, or one cut short.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    yield member.name, f.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise AnswerError(f"{what}: the host's answer is not a whole tar stream ({exc})") from None


_last = threading.local()


def answered_by(host: str) -> None:
    """Record that ``host`` just answered a command on this thread (the transports call
    it), so that an :class:`AnswerError` escaping a run can be put on its host
    (:func:`last_host`): a parser reads the answer of the command just run."""
    _last.host = host


def last_host() -> str | None:
    """The host that last answered a command on this thread (None: none yet)."""
    return getattr(_last, "host", None)


@contextlib.contextmanager
def on_host(host: str) -> Iterator[None]:
    """Report an :class:`AnswerError` raised in the block as a :class:`HostError` of
    ``host`` (``host: what: the host's answer ...``)."""
    try:
        yield
    except HostError:
        raise
    except AnswerError as exc:
        raise HostError(host, str(exc)) from None
