"""Several shell commands in one SSH round trip, each answer framed so that it comes back
exactly (exit status, stdout and stderr as bytes).

The script runs the commands one after the other (each with stdin from /dev/null),
keeping each one's output in a private temporary directory, and prints for each::

    ==ferry-batch <index> <rc> <stdout bytes> <stderr bytes>\\n<stdout><stderr>

:func:`parse` reads that back by byte counts, so any output (binary, no trailing
newline, text that looks like a header) is returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import FerryError
from .shell import q, sh

HEADER = b"==ferry-batch "


@dataclass(frozen=True)
class Answer:
    """One command's outcome."""

    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        """stdout as text (UTF-8, undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


def script(commands: Sequence[str]) -> list[str]:
    """``sh -c`` running ``commands`` (shell command lines, already quoted) in order.

    Raises:
        FerryError: no command given.
    """
    if not commands:
        raise FerryError("batch: no commands")
    parts = ['d=$(mktemp -d) || exit 70', 'trap \'rm -rf "$d"\' EXIT']
    for i, cmd in enumerate(commands):
        parts.append(f'( sh -c {q(cmd)} ) </dev/null >"$d/o" 2>"$d/e"; rc=$?; '
                     f'printf \'==ferry-batch {i} %s %s %s\\n\' "$rc" "$(wc -c <"$d/o")" "$(wc -c <"$d/e")"; '
                     'cat "$d/o" "$d/e"')
    return sh("\n".join(parts))


def parse(data: bytes, count: int) -> list[Answer]:
    """The ``count`` answers of :func:`script`'s output.

    Raises:
        FerryError: the output is cut short or not framed (the script did not run).
    """
    out: list[Answer] = []
    pos = 0
    while len(out) < count:
        if not data.startswith(HEADER, pos):
            raise FerryError(f"batch: answer {len(out)} of {count} missing")
        nl = data.find(b"\n", pos)
        fields = data[pos + len(HEADER):nl].split() if nl > 0 else []
        if len(fields) != 4 or not all(f.isdigit() for f in fields):
            raise FerryError(f"batch: answer {len(out)} of {count} missing (cut short)")
        index, rc, n_out, n_err = (int(x) for x in fields)
        if index != len(out):
            raise FerryError(f"batch: answer {index} where {len(out)} was expected")
        start = nl + 1
        stdout = data[start:start + n_out]
        stderr = data[start + n_out:start + n_out + n_err]
        if len(stdout) + len(stderr) != n_out + n_err:
            raise FerryError(f"batch: answer {index} cut short")
        out.append(Answer(rc, stdout, stderr))
        pos = start + n_out + n_err
    return out
