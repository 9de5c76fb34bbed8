"""backup: the host-side backup program, its settings and schedule; and a backup run.

Installs ``files/ferry-backup`` (static, the same on every host) as
``<stack_dir>/ferry-backup`` (0700) and writes the settings of the current release,
``<stack_dir>/backup-settings/<release>.tsv`` (0600), from the plan of
:func:`ferry.model.backup.plan_backup` over Compose's normalized model of the release
(``docker compose config --format json`` on the host). Each is written only when it
differs (idempotent); the settings carry a fingerprint of everything the plan depends
on, so an unchanged release needs no ``compose config`` at all. A cron file written by
an older Ferry is rewritten in the current form (same schedule and counts).

Deploy runs this role after ``compose-up``, so scheduled backups always follow the
release that runs. ``inv backup`` runs it with a :class:`BackupRequest` in
``ctx.state.backup_request`` (:class:`ferry.model.backup.BackupRequest`): then, after installing, it runs the program under the
stack's lock that the action holds (``--locked-by``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath

from ferry.errors import HostError
from ferry.host import audit, backup as hb, files, lock
from ferry.host.shell import q, sh
from ferry.model.backup import (SETTINGS_FORMAT, BackupRequest, cron_text, parse_settings, plan_backup,
                                settings_text)
from ferry.model.compose import parse_model
from ferry.resources import data_dir
from ferry.roles import RoleContext, RoleResult

PLAN_REVISION = 1
"""Bumped when :func:`ferry.model.backup.plan_backup` changes what it decides."""


def program() -> bytes:
    """The host program's bytes (``files/ferry-backup``)."""
    return (data_dir("files") / "ferry-backup").read_bytes()


def fingerprint(ctx: RoleContext, release: str) -> str:
    """sha256 over everything the settings depend on besides the (immutable) release."""
    keys = sorted(k for k in ctx.vars if k.startswith("backup_")) + ["compose_wait_timeout", "ferry_root"]
    if ctx.vars.get("ferry_engine") == "swarm":
        keys.append("ferry_engine")              # compose hosts keep the fingerprint they had
    doc = {"format": SETTINGS_FORMAT, "plan": PLAN_REVISION, "release": release, "stack": ctx.stack.name,
           "backup": dataclasses.asdict(ctx.stack.backup), "images": ctx.stack.images,
           "data_dirs": ctx.stack.data_dirs, "vars": {k: str(ctx.vars.get(k)) for k in keys}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def current_release(ctx: RoleContext) -> str:
    """The release ``current`` points at (deploy knows it; otherwise asked of the host).

    Raises:
        HostError: the stack is not deployed on the host.
    """
    release = ctx.state.release or hb.parse_current_release(
        ctx.t.run(hb.current_release_command(ctx.paths)).out)
    if not release:
        raise HostError(ctx.host, f"'{ctx.stack.name}' is not deployed here (no {ctx.paths.current})")
    return release


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`install` reads first (gathered ahead by deploy)."""
    return [hb.installed_command(ctx.paths)]


def install(ctx: RoleContext) -> RoleResult:
    """Install the program, the current release's settings and (migrating) the cron file."""
    p = ctx.paths
    release = current_release(ctx)
    found = files.parse_tar(ctx.t.run(hb.installed_command(p)).stdout)
    script, settings = hb.script_path(p), hb.settings_path(p, release)
    fp = fingerprint(ctx, release)
    old_settings = found.get(settings.lstrip("/"))
    new_settings = old_settings
    if not old_settings or parse_settings(old_settings).get("fingerprint") != [[fp]]:
        release_dir = posixpath.join(p.releases, release)
        model = parse_model(hb.parse_compose_config(
            ctx.t.run(hb.compose_config_command(ctx.stack.name, release_dir)).out, ctx.host))
        plan = plan_backup(ctx.stack, model, release,
                           {"stack_dir": p.stack_dir, "data": p.data, "release_dir": release_dir,
                            "lock_dir": lock.lock_dir(p.root, ctx.stack.name), "audit_log": audit.audit_path(p.root)},
                           ctx.vars)
        new_settings = settings_text(plan) + f"fingerprint\t{fp}\n".encode()
        ctx.state.backup_plan = plan
    changes = []
    if found.get(script.lstrip("/")) != program():
        changes.append((files.write_file(script, 0o700), program(), "program"))
    if new_settings != old_settings:
        changes.append((files.write_file(settings, 0o600), new_settings, "settings"))
    cron_path = hb.cron_file(ctx.stack.name)
    old_cron = found.get(cron_path.lstrip("/"), b"").decode("utf-8", "replace")
    schedule = hb.parse_cron_entry(old_cron)
    if schedule.cron:
        text = cron_text(ctx.stack.name, schedule.cron, script, hb.log_file(ctx.vars, ctx.stack.name), schedule)
        if text != old_cron:
            changes.append((files.write_file(cron_path, 0o644), text.encode(), "cron file"))
    if not changes:
        return RoleResult(False, f"backup program up to date ({script}, settings of {release})")
    what = ", ".join(c[2] for c in changes)
    if ctx.check:
        return RoleResult(True, f"would install the backup {what}")
    for argv, data, _ in changes:
        ctx.t.run(argv, input=data)
    if new_settings != old_settings:
        # settings of releases that are gone (pruned) go with them
        d = posixpath.dirname(settings)
        ctx.t.run(sh(f"for f in {q(d)}/*.tsv; do r=$(basename \"$f\" .tsv); "
                     f"[ -d {q(p.releases)}/\"$r\" ] || rm -f \"$f\"; done"))
    return RoleResult(True, f"installed the backup {what} ({release})")


def run(ctx: RoleContext) -> RoleResult:
    """Install (see :func:`install`); with a :class:`BackupRequest` in
    ``ctx.state.backup_request``, then run a backup.

    Raises:
        HostError: not deployed; the program's error line (a stopped database, an
            undumpable database running, too little disk, the lock held...).
    """
    installed = install(ctx)
    request: BackupRequest | None = ctx.state.backup_request
    if request is None or ctx.check:
        return installed
    result = hb.run_program(ctx.t, hb.backup_command(hb.script_path(ctx.paths), request.keep_last,
                                                     request.keep_daily, request.keep_weekly, request.min_free,
                                                     request.locked_by), "backup failed")
    return RoleResult(True, f"backup {result.get('id')}", {**result, "installed": installed.summary})
