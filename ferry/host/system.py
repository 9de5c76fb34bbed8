"""The host system: package and service commands (the engine's facts are in
:mod:`ferry.host.engine`). Nothing here does I/O.
"""

from __future__ import annotations

from typing import Sequence


def apt_install_local(debs: Sequence[str]) -> list[str]:
    """Install local ``.deb`` files with apt (dependencies resolved among them), never
    reaching for a network source: the source lists are pointed at /dev/null."""
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
            "--no-install-recommends",
            "-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dpkg::Options::=--force-confold", *debs]


def install_file(src: str, dest: str, mode: int) -> list[str]:
    """Copy ``src`` to ``dest`` on the host with ``mode`` (``install -D``)."""
    return ["install", "-D", "-m", f"{mode:04o}", src, dest]


def systemctl(*args: str) -> list[str]:
    """``systemctl ARGS...`` (e.g. ``enable docker.service``)."""
    return ["systemctl", *args]


def unit_log(unit: str, lines: int) -> list[str]:
    """The last ``lines`` lines the unit's own processes wrote to the journal (not
    systemd's lines about the unit), messages only."""
    return ["journalctl", f"_SYSTEMD_UNIT={unit}", "-n", str(lines), "--no-pager", "-o", "cat"]
