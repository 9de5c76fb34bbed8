"""restore: put a stack back as a backup holds it.

With a :class:`ferry.model.backup.RestoreRequest` in ``ctx.state.restore_request``: installs the backup
program and settings (the ``backup`` role's :func:`install`), uploads a local archive
(``--from``: checked against its ``.sha256``, verified on the host, adopted under its
manifest's ID) or resolves ``latest``/an ID, then runs ``ferry-backup restore`` under
the stack's lock the action holds. The program verifies every member before it changes
anything, takes a ``-prerestore`` backup of the current state, stops the stack, puts
back config, data dirs, volumes, SQLite files and Redis RDBs, starts the dumped
databases, loads their dumps, and starts the stack; every ``compose up`` there runs
with ``--pull never``, whatever the compose file's ``pull_policy`` says (the host is
offline). Verification (testinfra) is the action's, as after a deploy.
"""

from __future__ import annotations

from ferry.host import backup as hb
from ferry.model.backup import RestoreRequest
from ferry.roles import RoleContext, RoleResult, load_role


def run(ctx: RoleContext) -> RoleResult:
    """Restore per ``ctx.state.restore_request`` (module docstring).

    Returns:
        ``metrics``: the program's summary (``restored``, ``release``, ``safety``,
        ``seconds``).

    Raises:
        HostError: the program's error line, e.g. ``... member data/db.tar.gz is damaged``
            (refused before anything changed), or an unknown backup ID.
    """
    request: RestoreRequest = ctx.state.restore_request or RestoreRequest()
    installed = load_role("backup").install(ctx)
    script = hb.script_path(ctx.paths)
    where = hb.backup_dir(ctx.vars, ctx.stack.name)
    if ctx.check:
        return RoleResult(True, f"would restore {request.local or request.backup}")
    if request.local is not None:
        backup_id = hb.upload(ctx.t, script, where, request.local, request.locked_by)
    else:
        backup_id = hb.resolve_id(ctx.t, script, request.backup, where)
    result = hb.run_program(ctx.t, hb.restore_command(script, backup_id, request.safety, request.locked_by),
                            "restore failed")
    result.setdefault("restored", backup_id)
    return RoleResult(True, f"restored {backup_id} (release {result.get('release')})",
                      {**result, "installed": installed.summary})
