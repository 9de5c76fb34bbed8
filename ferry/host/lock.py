"""The stack's lock: one per stack per host, shared by deploy, rollback, backup (started
by the controller or by cron), restore and remove, so no two of them ever interleave.

Taken atomically with ``mkdir`` (it fails if the directory exists), then described in
``info.json`` (who, when, task, version, message, a random token). Released only by the
holder (token match), on success, failure and Ctrl-C; a lock left by a killed run is
explained by ``inv lock.status`` and cleared by ``inv lock.release``. The host-side
backup program (``files/ferry-backup``) takes the same lock with the same protocol
when cron runs it, and waits for it (``backup_lock_wait``) rather than interleave.
Every change on the controller takes it through :func:`ferry.host.session.guarded`.

Layout: ``<ferry_root>/locks/<stack>/info.json``.
"""

from __future__ import annotations

import getpass
import json
import math
import posixpath
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import HostError
from .shell import q, sh



def lock_dir(root: str, stack: str) -> str:
    """``<root>/locks/<stack>``: the lock directory."""
    return posixpath.join(root, "locks", stack)


def acquire_command(path: str) -> list[str]:
    """Create ``path`` atomically and write stdin to ``path/info.json``; if it exists,
    exit 75 and print the holder's info.json. Also exit 75 while ``<path>.activating`` is
    flock-ed: a host-side program whose controller went away still works for the stack
    (``ferry-activate`` bringing a release up, :mod:`ferry.host.activate`; ``ferry-backup``
    backing up or restoring for an ``inv backup``/``restore`` that was interrupted). If it cannot be created
    (permission denied, read-only, full disk), exit 77 with mkdir's error on stderr and
    leave nothing behind. Taken, it prints the first directory it had to create above
    the lock (``ferry_root`` on a new host), or nothing: :func:`release_command` can
    then leave the host as it found it."""
    busy = q(path + ".activating")
    info = q(path + "/info.json")
    parent = q(posixpath.dirname(path))
    return sh(f"top=; d={parent}; while [ ! -d \"$d\" ]; do top=$d; d=$(dirname \"$d\"); done; "
              f"mkdir -p {parent} || exit 77; "
              f"if [ -e {busy} ] && command -v flock >/dev/null 2>&1 && ! flock -n {busy} true; then "
              "echo '{\"who\": \"a Ferry program on the host\", \"task\": \"activate, backup or restore\", "
              "\"message\": \"ferry-activate or ferry-backup still works for a run whose controller went away\"}'; "
              "exit 75; fi; "
              f"if err=$(mkdir {q(path)} 2>&1); then cat > {info} && {{ printf '%s' \"$top\"; exit 0; }}; "
              f"rm -rf -- {q(path)}; exit 77; fi; "
              f"if [ -d {q(path)} ]; then cat {info} 2>/dev/null || echo '{{}}'; exit 75; fi; "
              f'echo "$err" >&2; exit 77')


def release_command(path: str, token: str | None, created: str | None = None) -> list[str]:
    """Remove the lock if its token is ``token`` (or unconditionally with ``None``).

    Args:
        created: the first directory taking the lock created (what
            :func:`acquire_command` printed): the empty directories from the lock's
            parent up to it are removed too (``rmdir``: never one that holds anything), so
            a run refused before any change leaves no trace. Ignored unless it is an
            ancestor of ``path``.
    """
    tidy = ""
    parent = posixpath.dirname(path)
    if created and posixpath.isabs(created) and (parent + "/").startswith(created.rstrip("/") + "/"):
        chain = [parent]
        while chain[-1] != created.rstrip("/") and chain[-1] != "/":
            chain.append(posixpath.dirname(chain[-1]))
        tidy = "; rmdir -- " + " ".join(q(d) for d in chain) + " 2>/dev/null"
    if token is None:
        return sh(f"rm -rf -- {q(path)}{tidy}; true") if tidy else ["rm", "-rf", "--", path]
    return sh(f"if grep -q {q(token)} {q(path + '/info.json')} 2>/dev/null; then rm -rf -- {q(path)}{tidy}; fi; true")


def status_command(path: str) -> list[str]:
    """The lock's info.json, or nothing when unlocked."""
    return sh(f"cat {q(path + '/info.json')} 2>/dev/null || true")


def describe(info: dict[str, Any], now: float | None = None) -> str:
    """``held by alice@laptop for 42s (deploy llm-chat 1.1.0, pid 123): "message"``; the
    info comes from the host (``info.json``): fields that are missing or not what Ferry
    writes read as unknown."""
    try:
        since = float(info.get("since"))
    except (TypeError, ValueError):
        since = None
    age = f"for {(now or time.time()) - since:.0f}s " if since is not None and math.isfinite(since) else ""
    what = " ".join(str(info.get(k, "")) for k in ("task", "stack", "version") if info.get(k)) or "unknown task"
    msg = f': "{info["message"]}"' if info.get("message") else ""
    return (f"held by {info.get('who', '?')} {age}({what}, pid {info.get('pid', '?')}, "
            f"since {info.get('since_iso', '?')}){msg}")


@dataclass
class Lock:
    """A lock held on one host. Use :func:`acquire`, then :meth:`release`."""

    t: Any
    path: str
    token: str
    created: str | None = None
    """The first directory taking the lock created (see :func:`acquire_command`)."""

    def release(self, tidy: bool = False) -> None:
        """Release the lock (only if it is still ours: the token must match); with
        ``tidy``, also the empty directories taking it created (a refused run).

        Raises:
            HostError: the host could not be reached (the connection was lost).
        """
        self.t.run(release_command(self.path, self.token, self.created if tidy else None), check=False)


def acquire(t, root: str, stack: str, task: str, version: str, message: str = "",
            wait: float = 0.0, poll: float = 1.0, facts: Sequence[Sequence[str]] = (),
            token: str | None = None) -> Lock:
    """Take the stack's lock on the host behind ``t``.

    Args:
        t: transport; a :class:`ferry.host.facts.Prefetched` one when ``facts`` are given.
        root: ``ferry_root``.
        stack, task, version, message: recorded in the lock for whoever finds it held.
        wait: seconds to keep retrying while another run holds it (``--lock-wait``).
        poll: seconds between retries.
        facts: read-only commands gathered in the same round trip, once the lock is
            taken (:meth:`ferry.host.facts.Prefetched.gather`): they are read under it.
        token: the lock's token (default: a new random one). A caller that chose it can
            release the lock by it even when Ctrl-C cut the round trip that took it
            (the host has the lock, the controller never heard so).

    Raises:
        HostError: still held after ``wait`` seconds (names the holder).
    """
    import os
    path = lock_dir(root, stack)
    token = token or new_token()
    info = {"who": f"{getpass.getuser()}@{socket.gethostname()}", "pid": os.getpid(), "task": task,
            "stack": stack, "version": version, "message": message, "since": time.time(),
            "since_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": token}
    deadline = time.monotonic() + wait
    while True:
        if facts:
            res = t.gather(facts, gate=acquire_command(path), gate_input=json.dumps(info).encode())
        else:
            res = t.run(acquire_command(path), input=json.dumps(info).encode(), check=False)
        if res.rc == 0:
            return Lock(t, path, token, res.out.strip() or None)
        if res.rc != 75:
            # not held: the lock cannot be created at all (e.g. permission denied for a
            # login user without become); say so rather than "locked"
            raise HostError(t.host, f"cannot take the deploy lock {path}: {res.last_error_line()}")
        if time.monotonic() >= deadline:
            holder = parse_info(res.out)
            raise HostError(t.host, f"stack '{stack}' is locked: {describe(holder)}; "
                                    f"wait (--lock-wait SECONDS) or, if that run is dead, `inv lock.release`")
        time.sleep(poll)


def new_token() -> str:
    """A random lock token: 16 hex digits."""
    return secrets.token_hex(8)


def read(t, root: str, stack: str) -> dict[str, Any] | None:
    """The lock's info on the host, or None when unlocked."""
    out = t.run(status_command(lock_dir(root, stack))).out.strip()
    if not out:
        return None
    return parse_info(out)


def parse_info(text: str) -> dict[str, Any]:
    """A lock's ``info.json`` as found on the host; one that is not a JSON object (a run
    killed while writing it, a hand edit) reads as an unknown holder."""
    try:
        info = json.loads(text or "{}")
    except (ValueError, RecursionError):
        info = None
    return info if isinstance(info, dict) else {"who": "?", "message": "unreadable info.json"}
