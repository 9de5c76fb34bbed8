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
import posixpath
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..errors import HostError
from .shell import q, sh



def lock_dir(root: str, stack: str) -> str:
    """``<root>/locks/<stack>``: the lock directory."""
    return posixpath.join(root, "locks", stack)


def acquire_command(path: str) -> list[str]:
    """Create ``path`` atomically and write stdin to ``path/info.json``; if it exists,
    exit 75 and print the holder's info.json. Also exit 75 while ``<path>.activating`` is
    flock-ed: a host-side ``ferry-activate`` (:mod:`ferry.host.activate`) is still
    bringing a release up after its controller went away. If it cannot be created
    (permission denied, read-only, full disk), exit 77 with mkdir's error on stderr and
    leave nothing behind."""
    busy = q(path + ".activating")
    info = q(path + "/info.json")
    return sh(f"mkdir -p {q(posixpath.dirname(path))} || exit 77; "
              f"if [ -e {busy} ] && command -v flock >/dev/null 2>&1 && ! flock -n {busy} true; then "
              "echo '{\"who\": \"ferry-activate on the host\", \"task\": \"activate\", "
              "\"message\": \"a release is still being brought up\"}'; exit 75; fi; "
              f"if err=$(mkdir {q(path)} 2>&1); then cat > {info} && exit 0; rm -rf -- {q(path)}; exit 77; fi; "
              f"if [ -d {q(path)} ]; then cat {info} 2>/dev/null || echo '{{}}'; exit 75; fi; "
              f'echo "$err" >&2; exit 77')


def release_command(path: str, token: str | None) -> list[str]:
    """Remove the lock if its token is ``token`` (or unconditionally with ``None``)."""
    if token is None:
        return ["rm", "-rf", "--", path]
    return sh(f"grep -q {q(token)} {q(path + '/info.json')} 2>/dev/null && rm -rf -- {q(path)} || true")


def status_command(path: str) -> list[str]:
    """The lock's info.json, or nothing when unlocked."""
    return sh(f"cat {q(path + '/info.json')} 2>/dev/null || true")


def describe(info: dict[str, Any], now: float | None = None) -> str:
    """``held by alice@laptop for 42s (deploy llm-chat 1.1.0, pid 123): "message"``."""
    age = (now or time.time()) - float(info.get("since", 0) or 0)
    what = " ".join(str(info.get(k, "")) for k in ("task", "stack", "version") if info.get(k))
    msg = f': "{info["message"]}"' if info.get("message") else ""
    return (f"held by {info.get('who', '?')} for {age:.0f}s ({what}, pid {info.get('pid', '?')}, "
            f"since {info.get('since_iso', '?')}){msg}")


@dataclass
class Lock:
    """A lock held on one host. Use :func:`acquire`, then :meth:`release`."""

    t: Any
    path: str
    token: str

    def release(self) -> None:
        """Release the lock (only if it is still ours: the token must match).

        Raises:
            HostError: the host could not be reached (the connection was lost).
        """
        self.t.run(release_command(self.path, self.token), check=False)


def acquire(t, root: str, stack: str, task: str, version: str, message: str = "",
            wait: float = 0.0, poll: float = 1.0) -> Lock:
    """Take the stack's lock on the host behind ``t``.

    Args:
        t: transport.
        root: ``ferry_root``.
        stack, task, version, message: recorded in the lock for whoever finds it held.
        wait: seconds to keep retrying while another run holds it (``--lock-wait``).
        poll: seconds between retries.

    Raises:
        HostError: still held after ``wait`` seconds (names the holder).
    """
    import os
    path = lock_dir(root, stack)
    token = secrets.token_hex(8)
    info = {"who": f"{getpass.getuser()}@{socket.gethostname()}", "pid": os.getpid(), "task": task,
            "stack": stack, "version": version, "message": message, "since": time.time(),
            "since_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": token}
    deadline = time.monotonic() + wait
    while True:
        res = t.run(acquire_command(path), input=json.dumps(info).encode(), check=False)
        if res.rc == 0:
            return Lock(t, path, token)
        if res.rc != 75:
            # not held: the lock cannot be created at all (e.g. permission denied for a
            # login user without become); say so rather than "locked"
            raise HostError(t.host, f"cannot take the deploy lock {path}: {res.last_error_line()}")
        if time.monotonic() >= deadline:
            try:
                holder = json.loads(res.out or "{}")
            except json.JSONDecodeError:
                holder = {}
            raise HostError(t.host, f"stack '{stack}' is locked: {describe(holder)}; "
                                    f"wait (--lock-wait SECONDS) or, if that run is dead, `inv lock.release`")
        time.sleep(poll)


def read(t, root: str, stack: str) -> dict[str, Any] | None:
    """The lock's info on the host, or None when unlocked."""
    out = t.run(status_command(lock_dir(root, stack))).out.strip()
    if not out:
        return None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return {"who": "?", "message": "unreadable info.json"}
