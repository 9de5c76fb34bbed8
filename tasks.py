"""Ferry's command line: Invoke tasks (``inv --list``).

Each task parses its options, calls the engine in ``ferry/`` and turns a
:class:`ferry.errors.FerryError` into one line on stderr with exit status 1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from ferry.errors import FerryError  # noqa: E402
from ferry.ui import UI  # noqa: E402

DIST = ROOT / "dist"
STACKS = ROOT / "stacks"


def user_errors(fn):
    """Report FerryError as ``error: <message>`` (exit 1), Ctrl-C as exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FerryError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
    return wrapper


def inventory_path(value: str | None) -> Path:
    """``-i`` value, else ``$FERRY_INVENTORY``, else the sandbox's inventory
    (``.sandbox/inventory.yml``; ``.sandbox-<name>/`` with ``FERRY_SANDBOX_NAME``)."""
    from ferry.sandbox import DEFAULT_STATE_DIR
    return Path(value or os.environ.get("FERRY_INVENTORY") or DEFAULT_STATE_DIR / "inventory.yml")


def locked(targets, task: str):
    """The deploy lock of the targets' stack on every target host (see ferry.lock)."""
    from ferry import lock
    return lock.holding([(t.t, t.paths.root) for t in targets], targets[0].stack.name if targets else "", task)


@contextlib.contextmanager
def audited(target, task: str):
    """Record ``task`` on the target host's audit log: ok, or failed with the error."""
    from ferry import audit
    note: list[str] = []
    try:
        yield note
    except FerryError as exc:
        audit.record(target.t, target.paths.root, audit.entry(task, target.stack.name, "", None, "failed",
                                                              " ".join(note + [str(exc)])))
        raise
    audit.record(target.t, target.paths.root, audit.entry(task, target.stack.name, "", None, "ok", " ".join(note)))


def stack_dir(name: str) -> Path:
    """``stacks/<name>``, or ``name`` itself when it is a directory with a stack.yml;
    otherwise a FerryError listing the known stacks."""
    if (Path(name) / "stack.yml").is_file():
        return Path(name)
    d = STACKS / name
    if not (d / "stack.yml").is_file():
        known = sorted(p.name for p in STACKS.iterdir() if (p / "stack.yml").is_file())
        raise FerryError(f"unknown stack '{name}' (known: {', '.join(known)})")
    return d


# -- sandbox ---------------------------------------------------------------------------

@task(help={"count": "number of hosts (first is group prod, the rest staging)",
            "fresh": "destroy existing sandbox hosts (and their Docker data) first"})
@user_errors
def sandbox_up(c, count=3, fresh=False):
    """Start throw-away target hosts (systemd+sshd, no Docker, no network) and write .sandbox/inventory.yml."""
    from ferry import sandbox
    ui = UI()
    sb = sandbox.up(count=int(count), fresh=fresh, console=ui.console)
    ui.table("sandbox hosts", ["host", "ip", "container"], [[h.name, h.ip, h.container] for h in sb.hosts])
    ui.info(f"inventory: {sb.inventory}")


@task
@user_errors
def sandbox_down(c):
    """Remove the sandbox hosts, their volumes and network."""
    from ferry import sandbox
    sandbox.down(console=UI().console)


@task
@user_errors
def sandbox_status(c):
    """Show the sandbox hosts, if any."""
    from ferry import sandbox
    ui = UI()
    sb = sandbox.status()
    if sb is None:
        ui.info("no sandbox (start one with `inv sandbox.up`)")
        return
    ui.table("sandbox hosts", ["host", "ip", "container"], [[h.name, h.ip, h.container] for h in sb.hosts])


# -- bundle, deploy, verify ------------------------------------------------------------

@task(help={"stack": "stack name (a folder under stacks/)", "version": "bundle version (default: stack.yml's)",
            "dist": "output directory"})
@user_errors
def bundle(c, stack="llm-chat", version=None, dist=str(DIST)):
    """Build the offline bundle of a stack: image tarballs, Docker installer, manifest, checksums."""
    from ferry.bundle import build_bundle
    from ferry.roles import role_defaults
    ui = UI()
    b = build_bundle(stack_dir(stack), Path(dist), version, ui,
                     docker_settings=role_defaults("install-docker-offline"))
    size = sum(f["size"] for f in b.files())
    ui.info(f"bundle {b.path}: {len(b.files())} files, {size / 1e6:.1f} MB, "
            f"{len(b.manifest['images'])} images, Docker {b.manifest['docker']['docker']}, "
            f"Compose {b.manifest['docker']['compose']}")


COMMON = {"host": "host or group name, or a comma list", "stack": "stack name (a folder under stacks/)",
          "inventory": "inventory file (default: $FERRY_INVENTORY or .sandbox/inventory.yml)",
          "set": "key=value overriding inventory variables (repeatable)"}
CHANGES = {"lock_wait": "seconds to wait while another run holds the deploy lock",
           "message": "why: recorded in the lock and the audit log"}


@task(iterable=["set"], help={
    **COMMON, **CHANGES, "bundle": "bundle directory (default: the newest in dist/ for the stack)",
    "check": "check mode: show what would change, change nothing",
    "serial": "roll out in batches of N hosts; the first batch is the canary (0: all at once)",
    "max_fail": "percent of hosts that may fail before the rollout stops (default 0)"})
@user_errors
def deploy(c, host, stack="llm-chat", inventory=None, bundle=None, set=None, check=False,
           serial=0, max_fail=0, lock_wait=0, message=""):
    """Deploy a stack's bundle: install Docker, upload, load images, render config, compose up, verify."""
    from ferry.deploy import deploy as run_deploy, prepare, summary_lines
    from ferry.inventory import parse_set_args
    ui = UI()
    plan = prepare(inventory_path(inventory), host, stack, Path(bundle) if bundle else None, DIST,
                   parse_set_args(set or []))
    ui.info(f"deploying {plan.bundle.name} to {', '.join(h.name for h in plan.hosts)}"
            + (" (check mode)" if check else ""))
    reports = run_deploy(plan, ui, check=check, serial=int(serial), max_fail=float(max_fail),
                         lock_wait=float(lock_wait), message=message)
    for line in summary_lines(reports):
        ui.info(line)
    if any(r.failed for r in reports):
        raise Exit("error: deploy failed", code=1)


@task(iterable=["set"], help={**COMMON, **CHANGES, "to": "release id (default: the one before current)"})
@user_errors
def rollback(c, host, stack="llm-chat", inventory=None, to=None, set=None, lock_wait=0, message=""):
    """Switch hosts back to an earlier release (default: the one before current), compose up, verify."""
    from ferry.inventory import parse_set_args
    from ferry.operations import rollback as run_rollback
    ui = UI()
    reports = run_rollback(inventory_path(inventory), host, stack_dir(stack), to, parse_set_args(set or []), ui,
                           lock_wait=float(lock_wait), message=message)
    failed = [r for r in reports if r.failed]
    for r in failed:
        ui.info(f"{r.host}: FAILED: {r.error}")
    if failed:
        raise Exit("error: rollback failed", code=1)


@task(iterable=["set"], help=COMMON)
@user_errors
def releases(c, host, stack="llm-chat", inventory=None, set=None):
    """List each host's releases: version, time, who deployed it, which is current."""
    from ferry.inventory import parse_set_args
    from ferry.operations import releases_table
    rows = releases_table(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or []))
    UI().table(f"releases of {stack}", ["host", "release", "version", "created", "by", ""], rows)


@task(iterable=["set"], help={**COMMON, "json": "print JSON for scripts"})
@user_errors
def status(c, host, stack="llm-chat", inventory=None, set=None, json_=False):
    """Show current release, services (state, health, ports), lock and disk use per host."""
    from ferry import lock
    from ferry.inventory import parse_set_args
    from ferry.operations import status as host_status
    from ferry.ui import human_bytes
    found = host_status(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or []))
    if json_:
        print(json.dumps(found, indent=2))
        return
    ui = UI()
    for h in found:
        ui.table(f"{h['host']}: {stack} release {h['release'] or '(none)'} (version {h['version'] or '-'}), "
                 f"{h['releases']} releases kept", ["service", "state", "health", "ports"],
                 [[n, v["state"], v["health"], ", ".join(v["ports"])] for n, v in h["services"].items()])
        disk = ", ".join(f"{k} {human_bytes(v) if isinstance(v, int) else v}" for k, v in h["disk"].items())
        ui.info(f"  disk: {disk}")
        ui.info("  lock: " + ("free" if not h["lock"] else lock.describe(h["lock"])))
        for line in h["backup"]["summary"]:
            ui.info(f"  backup {line}")


@task(iterable=["set"], help={**COMMON, "lines": "entries per host"})
@user_errors
def audit(c, host, stack="llm-chat", inventory=None, set=None, lines=20):
    """Show the last entries of each host's audit log (one line per state change)."""
    from ferry.inventory import parse_set_args
    from ferry.operations import audit_entries
    rows = [[h, r.get("time", ""), r.get("who", ""), r.get("task", ""), r.get("stack", ""), r.get("version", ""),
             r.get("release", ""), r.get("result", ""), r.get("detail", "")[:80]]
            for h, r in audit_entries(inventory_path(inventory), host, stack_dir(stack),
                                      parse_set_args(set or []), int(lines))]
    UI().table("audit log", ["host", "time", "who", "task", "stack", "version", "release", "result", "detail"], rows)


@task(iterable=["set"], help=COMMON)
@user_errors
def lock_status(c, host, stack="llm-chat", inventory=None, set=None):
    """Show who holds the stack's deploy lock on each host, since when, doing what."""
    from ferry import lock
    from ferry.inventory import parse_set_args
    from ferry.operations import lock_status as read_locks
    ui = UI()
    for name, info in read_locks(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])):
        ui.info(f"{name}: {stack} " + ("is not locked" if info is None else f"is locked: {lock.describe(info)}"))


@task(iterable=["set"], help=COMMON)
@user_errors
def lock_release(c, host, stack="llm-chat", inventory=None, set=None):
    """Remove a deploy lock left by a dead run (warns: a live run would then interleave)."""
    from ferry.inventory import parse_set_args
    from ferry.operations import lock_release as remove_locks
    remove_locks(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or []), UI())


@task(iterable=["set"], help={"host": "host or group name, or a comma list", "stack": "stack name",
                              "inventory": "inventory file", "set": "key=value overrides (repeatable)",
                              "json": "print the checks as JSON"})
@user_errors
def verify(c, host, stack="llm-chat", inventory=None, set=None, json_=False):
    """Verify a deployed stack with testinfra: containers healthy, ports answering, mounts in place."""
    from ferry.inventory import parse_set_args
    from ferry.operations import verify_hosts
    ui = UI()
    checks = verify_hosts(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or []))
    if json_:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        ui.table(f"verify {stack}", ["host", "check", "target", "result", "detail"],
                 [[c.host, c.kind, c.target, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail] for c in checks])
    if not checks or any(not c.ok for c in checks):
        raise Exit("error: verification failed", code=1)


# -- backup, restore, schedules --------------------------------------------------------

BACKUP_HELP = {"host": "host or group name, or a comma list", "stack": "stack name (or a stack directory)",
               "inventory": "inventory file", "set": "key=value overrides (repeatable)"}


def _install(ui, target) -> None:
    from ferry.backup import install_script
    changed, msg = install_script(target)
    ui.host_line(target.host, "backup", msg, changed)


@task(iterable=["set"], help={**BACKUP_HELP, "fetch": "copy the archive to this directory and check its sha256",
                              "keep_last": "then prune: keep the N newest", "keep_daily": "... and the newest of N days",
                              "keep_weekly": "... and the newest of N ISO weeks"})
@user_errors
def backup(c, host, stack="llm-chat", inventory=None, set=None, fetch=None, keep_last=0, keep_daily=0,
           keep_weekly=0):
    """Back up a deployed stack on its hosts with the host's own script (consistent per stack.yml's `backup`)."""
    import time
    from ferry import backup as b
    from ferry.inventory import parse_set_args
    ui = UI()
    with b.open_targets(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])) as targets, \
            locked(targets, "backup"):
        for target in targets:
            _install(ui, target)
            started = time.monotonic()
            with ui.console.status(f"{target.host}: backing up {target.stack.name} into {target.dir}"), \
                    audited(target, "backup") as note:
                result = b.run_backup(target, int(keep_last), int(keep_daily), int(keep_weekly))
                note.append(f"{result['id']}")
            ui.info(b.summary_line(target.host, result, time.monotonic() - started))
            if fetch:
                with ui.transfer(f"{target.host}: fetching {result['id']}", int(result["size"])) as advance:
                    local = b.fetch(target, result["id"], Path(fetch), advance)
                ui.info(f"{target.host}: fetched to {local} (sha256 checked)")


@task(iterable=["set"], help=BACKUP_HELP)
@user_errors
def backups(c, host, stack="llm-chat", inventory=None, set=None):
    """List a stack's backups on its hosts, the backup schedule and the last runs."""
    from ferry import backup as b
    from ferry.inventory import parse_set_args
    from ferry.ui import human_bytes
    ui = UI()
    with b.open_targets(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])) as targets:
        for target in targets:
            items = b.list_backups(target)
            ui.table(f"{target.host}: backups of {target.stack.name} in {target.dir}",
                     ["id", "size", "verified", "release", "source data", "created"],
                     [[i.id, human_bytes(i.size), "yes" if i.good else "[red]no[/]", i.release,
                       human_bytes(i.source_bytes), i.created] for i in items])
            for line in b.status_lines(b.schedule_status(target)):
                ui.info(f"{target.host}: {line}")


@task(iterable=["set"], help={**BACKUP_HELP, "backup": "backup ID or 'latest'",
                              "from_": "a local archive (fetched earlier) to upload and restore",
                              "no_safety_backup": "do not back up the current state first"})
@user_errors
def restore(c, host, stack="llm-chat", inventory=None, set=None, backup="latest", from_=None,
            no_safety_backup=False):
    """Restore a stack from a backup: verify every checksum, back up the current state, stop, restore, start, verify."""
    import time
    from ferry import backup as b
    from ferry.inventory import parse_set_args
    ui = UI()
    with b.open_targets(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])) as targets, \
            locked(targets, "restore"):
        for target in targets:
            _install(ui, target)
            bid = b.upload(target, Path(from_)) if from_ else b.resolve_id(target, backup)
            started = time.monotonic()
            with ui.console.status(f"{target.host}: restoring {bid}"), audited(target, "restore") as note:
                note.append(bid)
                result = b.restore(target, bid, safety=not no_safety_backup)
            ui.info(f"{target.host}: restored {bid} (release {result.get('release')}) in "
                    f"{time.monotonic() - started:.1f} s" + (f"; the state before is backup {result['safety']}"
                                                             if result.get("safety") else ""))
            checks = b.verify_stack(target)
            bad = [ch for ch in checks if not ch.ok]
            ui.info(f"{target.host}: verify: " + (f"{len(checks)} checks passed" if not bad else
                    "; ".join(f"{ch.kind} {ch.target}: {ch.detail}" for ch in bad)))
            if bad:
                raise Exit("error: the restored stack does not verify", code=1)


@task(iterable=["set"], help={**BACKUP_HELP, "cron": "five cron fields, e.g. '0 2 * * *'",
                              "keep": "keep-last N", "keep_daily": "keep-daily N", "keep_weekly": "keep-weekly N"})
@user_errors
def schedule_backup(c, host, cron, stack="llm-chat", inventory=None, set=None, keep=7, keep_daily=0, keep_weekly=0):
    """Install an /etc/cron.d entry running the host's backup script under flock, logging to a file."""
    from ferry import backup as b
    from ferry.inventory import parse_set_args
    ui = UI()
    with b.open_targets(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])) as targets:
        for target in targets:
            _install(ui, target)
            b.schedule(target, cron, int(keep), int(keep_daily), int(keep_weekly))
            ui.info(f"{target.host}: scheduled '{cron}' keep-last {keep} keep-daily {keep_daily} keep-weekly "
                    f"{keep_weekly} -> {b.cron_file(target.stack.name)}, log {b.log_file(target.vars, target.stack.name)}")


@task(iterable=["set"], help=BACKUP_HELP)
@user_errors
def unschedule_backup(c, host, stack="llm-chat", inventory=None, set=None):
    """Remove the scheduled backup's cron entry (archives are kept)."""
    from ferry import backup as b
    from ferry.inventory import parse_set_args
    ui = UI()
    with b.open_targets(inventory_path(inventory), host, stack_dir(stack), parse_set_args(set or [])) as targets:
        for target in targets:
            ui.info(f"{target.host}: " + ("schedule removed" if b.unschedule(target) else "no schedule"))


@task(help={"count": "sandbox hosts to start"})
@user_errors
def demo(c, count=3):
    """Quickstart: sandbox up, bundle llm-chat, deploy to prod, then curl its health from here."""
    import urllib.request
    from ferry.inventory import Inventory
    sandbox_up(c, count=count)
    bundle(c, stack="llm-chat")
    deploy(c, host="prod", stack="llm-chat")
    inv = Inventory(inventory_path(None))
    ip = inv.select("prod")[0].vars["ansible_host"]
    with urllib.request.urlopen(f"http://{ip}/api/health", timeout=10) as r:
        UI().info(f"curl http://{ip}/api/health -> {r.status} {r.read().decode().strip()}")


@task(help={"k": "only tests matching this pytest -k expression", "unit": "skip the end-to-end tier"})
def test(c, k=None, unit=False):
    """Run the test suite (pure, fake-transport and end-to-end tiers)."""
    argv = [sys.executable, "-m", "pytest", "-q"]
    if unit:
        argv += ["-m", "not e2e"]
    if k:
        argv += ["-k", k]
    rc = subprocess.call(argv, cwd=ROOT)
    if rc:
        raise Exit(code=rc)


locks = Collection("lock")
locks.add_task(lock_status, "status")
locks.add_task(lock_release, "release")

sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")
sandbox.add_task(sandbox_status, "status")

ns = Collection(bundle, deploy, verify, rollback, releases, status, audit, backup, backups, restore,
                schedule_backup, unschedule_backup, demo, test, sandbox, locks)
