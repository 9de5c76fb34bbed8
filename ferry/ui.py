"""Terminal output with rich: progress for long work, one line per role, summaries.

Secrets never reach this module: callers pass masked diffs and names, not values.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text


class UI:
    """Ferry's console.

    Args:
        console: a rich Console (default: stdout, colour when it is a terminal).
    """

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def for_parallel(self, host: str) -> "UI":
        """A UI for one host of a parallel batch: same console, progress as lines
        (rich allows one live display at a time)."""
        return ParallelUI(self.console, host)

    def info(self, msg: str) -> None:
        """Print one line as is (no rich markup, never wrapped: logs stay copy-pastable)."""
        self.console.print(msg, markup=False, soft_wrap=True)

    def host_line(self, host: str, role: str, msg: str, changed: bool) -> None:
        """``host  role  changed|ok  msg`` for one finished role."""
        state = "[yellow]changed[/]" if changed else "[green]ok     [/]"
        self.console.print(f"{state} [bold]{host}[/] {role}: ", end="")
        self.console.print(msg, markup=False, soft_wrap=True)

    def warn(self, msg: str) -> None:
        """Print one line prefixed with ``warning:``."""
        self.console.print("[yellow]warning:[/] ", end="")
        self.console.print(msg, markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def transfer(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Progress bar in bytes with MB/s and ETA; yields ``advance(nbytes)``.

        Refreshed from the caller's thread at most 5 times a second: rich's own refresh
        thread competes for the GIL with the transfer and cost 25% of upload rate."""
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=False),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                      transient=False, auto_refresh=False) as progress:
            task = progress.add_task(description, total=total)
            last = [0.0]

            def advance(n: int) -> None:
                progress.advance(task, n)
                now = time.monotonic()
                if now - last[0] >= 0.2:
                    last[0] = now
                    progress.refresh()
            yield advance
            progress.refresh()

    @contextlib.contextmanager
    def steps(self, description: str, total: int) -> Iterator[Callable[[str], None]]:
        """Progress in items (e.g. images loaded); yields ``done(label)``."""
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as progress:
            task = progress.add_task(description, total=total)

            def done(label: str) -> None:
                progress.update(task, advance=1, description=f"{description}: {label}")
            yield done

    KEEP = ("host", "id", "release", "service")
    """Columns whose cells are never broken: ids that ``rollback``, ``restore`` and
    ``--host``/``--service`` take, copied from the table."""

    def table(self, title: str, columns: list[str], rows: list[list[str]], keep: tuple[str, ...] = KEEP) -> None:
        """Print a rich table with ``columns`` and string ``rows``. Cells of the ``keep``
        columns stay on one line, whole (the release and backup ids are what
        ``rollback`` and ``restore`` take); the other cells are folded onto several
        lines when the terminal (or a pipe's 80 columns) is too narrow. When even that
        does not make room, the table is printed wider than the terminal rather than
        cut."""
        t = Table(title=title, show_lines=False)
        need = 1
        for i, c in enumerate(columns):
            natural = max([cell_len(c), *(cell_len(Text.from_markup(str(r[i])).plain) for r in rows)])
            if c in keep:
                t.add_column(c, no_wrap=True, min_width=natural)
                need += natural + 3
            else:
                least = min(natural, max(6, cell_len(c)))
                t.add_column(c, overflow="fold", min_width=least)
                need += least + 3
        for r in rows:
            t.add_row(*r)
        self.console.print(t, width=max(self.console.width, need), crop=False)


def human_bytes(n: float) -> str:
    """``1.2 MB`` style (decimal units, as rich's transfer columns)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ParallelUI(UI):
    """Progress for one of several hosts running at once: a line at start and at end."""

    def __init__(self, console: Console, host: str):
        super().__init__(console)
        self.host = host

    @contextlib.contextmanager
    def transfer(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """One line when the transfer starts and one with the MB/s when it ends."""
        started = time.monotonic()
        self.info(f"{description}: {human_bytes(total)} ...")
        yield lambda n: None
        seconds = max(time.monotonic() - started, 1e-6)
        self.info(f"{description}: {human_bytes(total)} in {seconds:.1f}s ({total / seconds / 1e6:.0f} MB/s)")

    @contextlib.contextmanager
    def steps(self, description: str, total: int) -> Iterator[Callable[[str], None]]:
        """One line per finished item."""
        yield lambda label: self.info(f"{description}: {label} done")
