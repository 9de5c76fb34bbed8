"""Several shell commands in one SSH round trip, each answer framed so that it comes back
exactly (exit status, stdout and stderr as bytes).

The script runs the commands one after the other (each with stdin from /dev/null), or
all at once (``parallel``: each in the background, then ``wait``), keeping each one's
output in a private temporary directory, and prints for each, in order::

    ==ferry-batch <index> <rc> <stdout bytes> <stderr bytes>\\n<stdout><stderr>

:func:`parse` reads that back by byte counts, so any output (binary, no trailing
newline, text that looks like a header) is returned unchanged.

A *gate* is a command run first, alone, with its own stdin (e.g. taking a lock, whose
``info.json`` it reads): the other commands run only when it exits 0 (then they run
under the lock it took). Its answer is answer 0.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

from ..errors import FerryError
from .shell import q, sh

HEADER = b"==ferry-batch "
_MARK = ": ferry-batch"
_GATE = ": ferry-batch-gate"
"""First words of each command's line in the script (what :func:`unpack` looks for)."""


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


def _frame(i: int) -> str:
    return (f'printf \'==ferry-batch {i} %s %s %s\\n\' "$(cat "$d/r{i}")" "$(wc -c <"$d/o{i}")" '
            f'"$(wc -c <"$d/e{i}")"; cat "$d/o{i}" "$d/e{i}"')


def _line(i: int, cmd: str, stdin: str | None = None, background: bool = False, gate: bool = False) -> str:
    feed, redirect = (f"printf '%s' {q(stdin)} | ", "") if stdin else ("", " </dev/null")
    mark = _GATE if gate else _MARK
    run = f'{mark} {i}; ( {feed}( sh -c {q(cmd)} ){redirect} >"$d/o{i}" 2>"$d/e{i}"; echo $? >"$d/r{i}" )'
    return run + (" &" if background else "")


def script(commands: Sequence[str], gate: str | None = None, gate_input: str = "",
           parallel: bool = False) -> list[str]:
    """``sh -c`` running ``commands`` (shell command lines, already quoted).

    Args:
        commands: the command lines; their answers follow the gate's, in this order.
        gate: a command line run first, alone; the others run only when it exits 0.
        gate_input: text (no NUL byte) fed to the gate's stdin.
        parallel: run ``commands`` all at once (read-only facts that do not depend on
            each other); answers still come back in order.

    Raises:
        FerryError: no command given, or ``gate_input`` holds a NUL byte.
    """
    if not commands and gate is None:
        raise FerryError("batch: no commands")
    if "\0" in gate_input:
        raise FerryError("batch: the gate's input cannot hold a NUL byte")
    parts = ['d=$(mktemp -d) || exit 70', 'trap \'rm -rf "$d"\' EXIT']
    offset = 0
    if gate is not None:
        parts.append(_line(0, gate, gate_input, gate=True))
        parts.append(_frame(0))
        parts.append('[ "$(cat "$d/r0")" = 0 ] || exit 0')
        offset = 1
    for i, cmd in enumerate(commands, offset):
        parts.append(_line(i, cmd, background=parallel))
        if not parallel:
            parts.append(_frame(i))
    if parallel and commands:
        parts.append("wait")
        parts.extend(_frame(i) for i in range(offset, offset + len(commands)))
    return sh("\n".join(parts))


def parse(data: bytes, count: int, gated: bool = False) -> list[Answer]:
    """The ``count`` answers of :func:`script`'s output (the gate's included). With
    ``gated``, a gate that failed is the only answer (a list of one).

    Raises:
        FerryError: the output is cut short or not framed (the script did not run).
    """
    out: list[Answer] = []
    pos = 0
    while len(out) < count:
        if gated and len(out) == 1 and out[0].rc != 0:
            break
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


def frame(answers: Sequence[Answer]) -> bytes:
    """The output :func:`script` prints for ``answers`` (what :func:`parse` reads), for
    test hosts that answer each command of a batch themselves."""
    return b"".join(HEADER + f"{i} {a.rc} {len(a.stdout)} {len(a.stderr)}\n".encode() + a.stdout + a.stderr
                    for i, a in enumerate(answers))


@dataclass(frozen=True)
class Unpacked:
    """What a :func:`script` runs: the gate (None: no gate) and its input, the commands."""

    gate: str | None
    gate_input: str
    commands: list[str]
    parallel: bool


def unpack(argv: Sequence[str]) -> Unpacked | None:
    """What the batch ``argv`` (from :func:`script`) runs, or None when ``argv`` is not a
    batch; for test hosts that answer each command themselves (see
    :class:`ferry.host.transport.fake.FakeTransport`)."""
    if len(argv) != 3 or list(argv[:2]) != ["sh", "-c"] or not argv[2].startswith("d=$(mktemp -d) || exit 70\n"):
        return None
    gate, gate_input, commands, parallel = None, "", [], False
    for line in argv[2].split("\n" + _MARK)[1:]:
        words = shlex.split(line.split(' >"$d/o', 1)[0].split("; ( ", 1)[1].replace("( sh -c", "sh -c"))
        stdin = ""
        if words[0] == "printf":
            stdin, words = words[2], words[4:]
        if line.startswith(_GATE[len(_MARK):] + " "):
            gate, gate_input = words[2], stdin
        else:
            commands.append(words[2])
            parallel = parallel or line.rstrip().endswith("&")
    return Unpacked(gate, gate_input, commands, parallel)
