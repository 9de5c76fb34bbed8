"""backup: install the stack's backup script on the host (``<stack_dir>/ferry-backup``).

The script is rendered from ``templates/ferry-backup.sh.j2`` for the host's *current*
release (its compose file says where each SQLite file is inside its container) and
written 0700 only when it differs from the installed one. ``inv backup``, ``inv
restore`` and the cron entry all run this one script; see :mod:`ferry.backup`.
"""

from __future__ import annotations

from ferry.backup import Target, install_script
from ferry.roles import RoleContext, RoleResult


def run(ctx: RoleContext) -> RoleResult:
    changed, summary = install_script(Target(ctx.t, ctx.stack, ctx.paths, ctx.vars), check=ctx.check)
    return RoleResult(changed, summary)
