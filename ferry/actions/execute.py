"""``exec``: run a command in a service's container of the current release.

The command's words reach the container as its argv, each quoted once on the way (no
shell in between unless the command is one, e.g. ``sh -c '...'``). Non-interactive:
no TTY, stdin closed (``docker compose exec -T``). Its stdout is streamed as it comes;
its stderr follows when it ends; the exit status is the command's. Not locked (it may
run while a deploy holds the lock, e.g. to look at a host), but audited: the service,
the program name (never its arguments: they may hold a secret) and the exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..host import audit, containers
from ..model import options
from ..model.stack import load_stack
from . import engines
from .common import LinePrefixer, RemoteProcess, compose_args, current_services, stack_hosts


def execute(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], service: str,
            command: list[str], write: Callable[[bytes], None], write_err: Callable[[bytes], None]) -> int:
    """Run ``command`` in ``service``'s container on each selected host, one after the
    other (several hosts: each line prefixed ``<host> | ``).

    Args:
        service: a service of the current release.
        command: argv (see :func:`ferry.model.options.command`).
        write, write_err: receive the command's stdout and stderr bytes.

    Returns:
        The exit status: the command's on one host; with several, the first non-zero.

    Raises:
        FerryError: no command, an unknown service or no current release on a host
            (checked on every host before the command runs anywhere).
    """
    command = options.command(command)
    stack = load_stack(stack_dir)
    engines.compose_only(inventory_path, pattern, stack, sets, "exec")
    status = 0
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        for s in sessions:
            options.services([service], current_services(s, stack.name), stack.name)
        several = len(sessions) > 1
        for s in sessions:
            proc = RemoteProcess(s, containers.compose_exec(*compose_args(s, stack.name), service, command))
            out = LinePrefixer(f"{s.name} | ".encode(), write) if several else write
            err = LinePrefixer(f"{s.name} | ".encode(), write_err) if several else write_err
            try:
                result = proc.run(out)
            except KeyboardInterrupt:
                proc.stop()
                raise
            if isinstance(out, LinePrefixer):
                out.flush()
            if result.stderr:
                err(result.stderr)
                if isinstance(err, LinePrefixer):
                    err.flush()
            audit.record(s.t, s.paths.root, audit.entry("exec", stack.name, "", None,
                                                        "ok" if result.ok else "failed",
                                                        f"{service}: {command[0]} (exit {result.rc})"))
            status = status or result.rc
    return status
