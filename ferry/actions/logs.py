"""``logs``: the current release's Compose logs, streamed from each host (read only).

``docker compose logs --no-color`` runs on the host (its stderr merged into the
stream, so the lines keep their order) and its output reaches the controller's stdout
block by block as it arrives; with several hosts each line is prefixed with the host
name. ``follow`` keeps streaming until Ctrl-C, which stops the command on every host
(the SSH channel closing would not) and ends cleanly.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import FerryError, HostError
from ..host import containers
from ..model import options
from ..model.stack import load_stack
from . import engines
from .common import LinePrefixer, RemoteProcess, compose_args, current_services, stack_hosts


def logs(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], write: Callable[[bytes], None],
         services: list[str] | None = None, follow: bool = False, since: str | None = None,
         tail: str | int | None = None) -> None:
    """Stream the logs of ``services`` (default: all) of the stack's current release.

    Args:
        write: receives output bytes (one host: as they come; several: whole lines
            prefixed ``<host> | ``).
        follow: keep streaming until Ctrl-C (then return normally).
        since: ``--since`` (see :func:`ferry.model.options.since`).
        tail: ``--tail`` lines per container, or ``all``.

    Raises:
        FerryError: a bad option, an unknown service, no current release on a host, or
            ``docker compose logs`` failing there (its message).
    """
    since, tail = options.since(since), options.tail(tail)
    stack = load_stack(stack_dir)
    engines.compose_only(inventory_path, pattern, stack, sets, "logs")
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions:
        procs = []
        for s in sessions:
            wanted = options.services(services or [], current_services(s, stack.name), stack.name)
            argv = containers.compose_logs(*compose_args(s, stack.name), wanted, follow, since, tail)
            procs.append(RemoteProcess(s, argv, merge_stderr=True))
        several = len(procs) > 1
        sinks = [LinePrefixer(f"{p.s.name} | ".encode(), write) if several else write for p in procs]
        errors: list[FerryError] = []

        def one(proc: RemoteProcess, sink) -> None:
            try:
                result = proc.run(sink)
                if isinstance(sink, LinePrefixer):
                    sink.flush()
                if not result.ok and not proc.stopped:
                    errors.append(HostError(proc.s.name, f"docker compose logs failed: {result.last_error_line()}"))
            except FerryError as exc:
                errors.append(exc)
            except BrokenPipeError:       # the reader went away (e.g. `| head`): stop quietly
                proc.stop()

        try:
            if follow:
                threads = [threading.Thread(target=one, args=(p, k), daemon=True) for p, k in zip(procs, sinks)]
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(0.2)
            else:
                for p, k in zip(procs, sinks):
                    one(p, k)
        except KeyboardInterrupt:
            for p in procs:
                p.stop()
            if follow:
                for t in threads:
                    t.join(10)
            return
        if errors:
            raise errors[0]
