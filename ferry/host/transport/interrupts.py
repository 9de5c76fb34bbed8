"""Ctrl-C and SIGTERM, delivered where they cannot wedge an SSH connection.

Python raises a signal handler's exception in the main thread between any two bytecodes.
One that lands inside paramiko between a lock's ``acquire()`` and the ``try`` that
releases it (``Transport._send_user_message`` takes ``clear_to_send_lock`` so for every
channel open, command, data block and close) leaves that lock held: every later command
on the connection, the audit line and the lock's release included, then waits forever.

The ``ferry`` command (:func:`ferry.cli.user_errors`) routes SIGINT and SIGTERM through
:func:`deliver`. Inside :func:`sending` (the SSH transport's sends, channel opens and
closes, on the main thread) the exception is kept and raised when the outermost such
block ends, a fraction of a second later; anywhere else (waiting for a command's output,
for a host) it is raised at once, as before.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_depth = 0
_pending: BaseException | None = None


@contextlib.contextmanager
def sending() -> Iterator[None]:
    """A block of paramiko calls that take its locks (see the module docstring); on the
    main thread, an interrupt arriving inside it is raised when the outermost block ends.
    Other threads never receive signal exceptions: there it does nothing."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            exc, _pending = _pending, None
            raise exc


def deliver(exc: BaseException) -> None:
    """Raise ``exc`` (a ``KeyboardInterrupt``) now, or, inside :func:`sending`, when that
    block ends (the first one kept when several arrive). Called from signal handlers."""
    global _pending
    if _depth > 0:
        if _pending is None:
            _pending = exc
        return
    raise exc
