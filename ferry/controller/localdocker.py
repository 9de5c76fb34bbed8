"""The Docker engine on the controller (this machine), driven through the ``docker`` CLI.

Used to build stand-in images, save them into bundles and run sandbox hosts. Every
call passes an argument list (never a shell string).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from ..errors import FerryError

DOCKERD_LOG = Path("/var/log/ferry-dockerd.log")


def docker(*args: str, check: bool = True, input: bytes | None = None,
           capture: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``docker ARGS...`` locally.

    Args:
        *args: docker CLI arguments, e.g. ``("image", "inspect", "nginx:1.22")``.
        check: raise :class:`FerryError` with docker's stderr when the exit status is not 0.
        input: bytes fed to stdin.
        capture: capture stdout/stderr (bytes) instead of inheriting them.
        timeout: seconds before the call is abandoned.

    Returns:
        The completed process (``stdout``/``stderr`` are bytes when captured).
    """
    if shutil.which("docker") is None:
        raise FerryError("docker CLI not found on the controller (install docker.io)")
    proc = subprocess.run(["docker", *args], input=input, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise FerryError(f"docker {' '.join(args[:2])} failed: {err[-1] if err else proc.returncode}")
    return proc


def engine_running() -> bool:
    """True when ``docker info`` answers (an engine is reachable from the CLI)."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def ensure_engine(wait: float = 60.0) -> None:
    """Start a local ``dockerd`` in the background if no engine answers.

    This machine has no systemd as PID 1, so ``dockerd`` is started directly, detached
    from Ferry's process group, logging to :data:`DOCKERD_LOG`.

    Args:
        wait: seconds to wait for the engine to answer.

    Raises:
        FerryError: no ``dockerd`` binary, or it did not come up within ``wait``.
    """
    if engine_running():
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise FerryError("no Docker engine on the controller: install the Debian package docker.io")
    log = open(DOCKERD_LOG, "ab")
    subprocess.Popen([dockerd], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                     start_new_session=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if engine_running():
            return
        time.sleep(0.5)
    raise FerryError(f"dockerd did not answer within {wait:.0f}s; see {DOCKERD_LOG}")
