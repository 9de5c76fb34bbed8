"""What the benchmarks share: commands timed from process start to end, interleaved
rounds, and the ratio table (min and median of each side).

Every figure is a ratio of two commands run in the same process, on the same host, one
after the other in each round (the order alternating), timed the same way: from the
start of the command's process to its end (:func:`timed`). These machines are noisy and
shared: the ratios of interleaved runs mean something, the absolute seconds do not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
CIPHER = "aes128-gcm@openssh.com"
"""The cipher of every comparator (Ferry's paramiko prefers it too)."""


def ferry(*args: str) -> list[str]:
    """The ``ferry`` command line (this checkout's virtualenv), for :func:`timed`."""
    return [str(Path(sys.executable).with_name("ferry")), *args]


def timed(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT,
          check: bool = True) -> tuple[float, str]:
    """Run ``argv`` to its end; return (seconds from process start to end, its output:
    stdout then stderr).

    Raises:
        SystemExit: it failed and ``check`` (its last lines are shown).
    """
    started = time.monotonic()
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
    seconds = time.monotonic() - started
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}):\n{out[-3000:]}")
    return seconds, out


def interleave(rounds: int, sides: dict[str, Callable[[], float]],
               between: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Run each side once per round, the order rotating every round (A B, B A, ...);
    ``between`` after each run (untimed: e.g. put the host back). Returns each side's
    seconds, in order."""
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            out[name].append(sides[name]())
            if between:
                between()
    return out


def figure(ui, title: str, ours: tuple[str, list[float]], theirs: tuple[str, list[float]], target: str,
           higher_is_better: bool = False, note: str = "") -> tuple[float, float]:
    """Print a table: each side's seconds (every round, min, median), and the ratio of
    the medians and of the minimums (ours / theirs for times; theirs / ours when
    ``higher_is_better``, a throughput). Returns (median ratio, min ratio)."""
    (a_name, a), (b_name, b) = ours, theirs
    med = (statistics.median(b) / statistics.median(a)) if higher_is_better else \
        (statistics.median(a) / statistics.median(b))
    low = (min(b) / min(a)) if higher_is_better else (min(a) / min(b))
    rows = [[a_name, " ".join(f"{x:.2f}" for x in a), f"{min(a):.2f}", f"{statistics.median(a):.2f}"],
            [b_name, " ".join(f"{x:.2f}" for x in b), f"{min(b):.2f}", f"{statistics.median(b):.2f}"],
            ["ratio" + (" (throughput)" if higher_is_better else ""), f"target {target}", f"{low:.2f}",
             f"{med:.2f}"]]
    ui.table(title + (f" - {note}" if note else ""), ["", "seconds per round", "min", "median"], rows)
    return med, low


def load() -> str:
    """The machine's load average and cores, for the record (``load 52.1 on 2 cores``)."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
