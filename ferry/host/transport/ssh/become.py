"""Become: every command as another user (root by default) through sudo.

With ``ansible_become`` the transport wraps every argument list (never a shell string)
before joining it once with :func:`shlex.join`:

- sudo needs no password (NOPASSWD): ``sudo -n -u USER -- ARGV`` (``-n``: fail rather
  than wait for a password);
- sudo needs one: ``sudo -S -p '' -k -u USER -- ARGV`` with the password as the first
  line of the command's stdin, ahead of the command's own input (``-S`` reads it from
  stdin, ``-p ''`` prints no prompt, ``-k`` makes sudo ask every time, so the line is
  always consumed by sudo and never reaches the command). The password is never in
  argv, a log or a message.

Which of the two: :func:`probe` runs ``sudo -n true`` once per connection and, when
sudo wants a password, checks it with ``sudo -S -k true`` before anything else runs,
so a missing or wrong password stops at connect time: nothing changed, no lock taken.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ....errors import HostError
from .spec import Become


def wrap(argv: Sequence[str], become: Become, with_password: bool) -> list[str]:
    """``argv`` run as ``become.user`` through sudo (see the module docstring)."""
    if with_password:
        return ["sudo", "-S", "-p", "", "-k", "-u", become.user, "--", *[str(a) for a in argv]]
    return ["sudo", "-n", "-u", become.user, "--", *[str(a) for a in argv]]


def stdin_prefix(become: Become) -> bytes:
    """The bytes fed ahead of a command's input when sudo reads a password."""
    assert become.password is not None
    return become.password.get_secret_value().encode() + b"\n"


def _explain(err: str, rc: int, login: str, become: Become) -> str:
    """One line for a sudo refusal (never echoing stdin)."""
    text = err.lower()
    target = f"as {become.user}" if become.user != "root" else "as root"
    if rc == 127 or "sudo: not found" in text or "sudo: command not found" in text:
        return f"sudo is not installed (ansible_become needs it to run commands {target})"
    if "incorrect password" in text or "sorry, try again" in text:
        return f"sudo {target}: incorrect password for '{login}' (ansible_become_password / --ask-become-pass)"
    if "not in the sudoers" in text or "may not run sudo" in text or "is not allowed to" in text:
        return f"sudo {target}: '{login}' is not allowed to (sudoers)"
    if "must have a tty" in text:
        return f"sudo {target}: sudoers requires a tty (Defaults requiretty) for '{login}'"
    if "password is required" in text:
        return (f"sudo {target}: a password is required for '{login}' "
                f"(set ansible_become_password or pass --ask-become-pass)")
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return f"sudo {target} failed: {lines[-1] if lines else f'exit status {rc}'}"


def probe(run: Callable[[list[str], bytes], tuple[int, str]], host: str, login: str, become: Become) -> bool:
    """Find out whether sudo needs a password on this connection, and check it.

    Args:
        run: runs an argument list unwrapped with the given stdin bytes; returns
            ``(exit status, stderr)``.
        host: inventory name (messages).
        login: the login user.
        become: the become settings.

    Returns:
        True when sudo needs the password (then it was checked), False for NOPASSWD.

    Raises:
        HostError: sudo missing, password required but not given, wrong password,
            user not in sudoers: one line saying which.
    """
    rc, err = run(["sudo", "-n", "-u", become.user, "--", "true"], b"")
    if rc == 0:
        return False
    if become.password is None or "password is required" not in err.lower():
        raise HostError(host, _explain(err, rc, login, become))
    rc, err = run(wrap(["true"], become, True), stdin_prefix(become))
    if rc != 0:
        raise HostError(host, _explain(err or "incorrect password", rc, login, become))
    return True
