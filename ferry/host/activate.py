"""Making a release the running one: ``files/ferry-activate`` (a POSIX sh script run on the
host as one unit) and the parser of its answer.

The script switches ``current`` and runs ``docker compose up --wait``; if that fails it
switches back to the previous release and brings it up again, or, on a first deploy,
removes only the containers it created. It ignores HUP/INT/TERM/PIPE and writes its
output to a file, so the controller going away (Ctrl-C, kill, SSH loss) cannot stop it
half way: afterwards ``current`` names what runs. See the script's header for details.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import HostError
from ..resources import data_dir

RESULTS = ("ok", "reverted", "stopped", "failed")


@functools.lru_cache(maxsize=1)
def script() -> str:
    """The text of ``files/ferry-activate``."""
    return (data_dir("files") / "ferry-activate").read_text(encoding="utf-8")


def activate(root: str, stack: str, release: str, previous: str | None, wait_seconds: int,
             log_lines: int = 20) -> list[str]:
    """Run ``ferry-activate`` on the host: make ``release`` of ``stack`` the running one.

    Args:
        root: ``ferry_root`` (absolute).
        stack: stack name (the Compose project).
        release: release id under ``<root>/stacks/<stack>/releases/``.
        previous: the release to return to if ``release`` fails, or None (first deploy).
        wait_seconds: how long ``up --wait`` may wait for health.
        log_lines: log lines of each service printed when ``release`` fails, before
            anything is reverted.

    Every value is a positional parameter of ``sh -c SCRIPT``: no shell re-parses it.
    """
    return ["sh", "-c", script(), "ferry-activate", root, stack, release, previous or "", str(int(wait_seconds)), str(int(log_lines))]


@dataclass
class Activation:
    """Parsed answer of :func:`activate`.

    Attributes:
        result: ``ok`` (release up and healthy), ``reverted`` (it failed; the previous
            release runs again), ``stopped`` (it failed on a first deploy; the containers
            it created were removed) or ``failed`` (nothing to return to, or the
            previous one failed too).
        log: Compose's output.
    """

    result: str
    log: str

    @property
    def ok(self) -> bool:
        """True when the release is up and healthy."""
        return self.result == "ok"


def parse_activation(out: str) -> Activation:
    """Parse :func:`activate`'s stdout: its log, then ``ferry-activate: RESULT``.

    A missing result line (the script was cut off) reads as ``failed``."""
    m = None
    for m in re.finditer(r"^ferry-activate: (\w+)\s*$", out, flags=re.M):
        pass
    if m is None or m.group(1) not in RESULTS:
        return Activation("failed", out)
    return Activation(m.group(1), out[:m.start()])


class ActivationFailed(HostError):
    """A release did not come up healthy on a host; ``result`` says what the host did
    about it: ``reverted`` (the previous release runs again), ``stopped`` (first deploy:
    the containers it created were removed) or ``failed``.

    Args:
        host: inventory name.
        message: one line.
        result: :attr:`Activation.result`.
    """

    def __init__(self, host: str, message: str, result: str):
        self.result = result
        super().__init__(host, message)
