"""The audit log on each host: one JSON line per state change.

``<ferry_root>/audit.log``, appended (``O_APPEND``, one short write per line) by every
task that changes state. Fields: ``time`` (UTC ISO 8601), ``who`` (user@controller),
``task`` (deploy, rollback, lock.release...), ``stack``, ``version``, ``release``,
``result`` (ok, failed, rolled-back...), ``detail``.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
import time
from typing import Any, Sequence

from ferry.host import shell


def audit_path(root: str) -> str:
    """``<root>/audit.log``."""
    return posixpath.join(root, "audit.log")


def entry(task: str, stack: str, version: str, release: str | None, result: str, detail: str = "") -> dict[str, Any]:
    """One audit record (pure; the time is now, the user is this controller's)."""
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": f"{getpass.getuser()}@{socket.gethostname()}", "task": task, "stack": stack,
            "version": version, "release": release or "", "result": result, "detail": detail}


def append_command(root: str) -> list[str]:
    """Append stdin (one line) to the audit log."""
    path = audit_path(root)
    return shell.sh(f"mkdir -p {shell.q(root)}; cat >> {shell.q(path)}")


def append_then_command(root: str, then: Sequence[Sequence[str]]) -> list[str]:
    """:func:`append_command`, then each command of ``then`` (e.g. the lock's release,
    :func:`ferry.host.lock.release_command`) whatever the append did: one round trip.
    The exit status is the append's."""
    path = audit_path(root)
    rest = "".join(f"; {shell.join(c)}" for c in then)
    return shell.sh(f"mkdir -p {shell.q(root)}; cat >> {shell.q(path)}; rc=$?{rest}; exit $rc")


def record(t, root: str, rec: dict[str, Any], check: bool = False) -> None:
    """Append ``rec`` to the host's audit log.

    Args:
        check: raise :class:`ferry.errors.HostError` when it could not be written
            (default: a failure to log is not fatal).
    """
    t.run(append_command(root), input=(json.dumps(rec, ensure_ascii=False) + "\n").encode(), check=check)


def tail_command(root: str, lines: int) -> list[str]:
    """The last ``lines`` lines of the audit log (nothing if there is none)."""
    return shell.sh(f"tail -n {int(lines)} {shell.q(audit_path(root))} 2>/dev/null || true")


def parse(text: str) -> list[dict[str, Any]]:
    """Audit records from log lines; a line that is not a JSON object is kept as ``detail``."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rec = None
        out.append(rec if isinstance(rec, dict) else {"detail": line})
    return out
