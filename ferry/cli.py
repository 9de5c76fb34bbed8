"""Ferry's command line: the ``ferry`` command (``ferry --list``), and the product half of
the checkout's ``inv`` tasks.

Every task is thin: it parses options, finds the project (:mod:`ferry.controller.project`),
calls one action (:mod:`ferry.actions`) and turns a :class:`ferry.errors.FerryError`
into one line on stderr with exit status 1 (Ctrl-C: 130). Listings take ``--json``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

from invoke import Collection, Exit, Program, task

from . import __version__
from .errors import FerryError
from .ui import UI


def user_errors(fn):
    """Report FerryError as ``error: <message>`` (exit 1), Ctrl-C and SIGTERM as exit 130/143
    (both delivered through :func:`ferry.host.transport.interrupts.deliver`, so that
    neither lands inside an SSH send and wedges the connection the lock's release needs)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .host.transport.interrupts import deliver
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum, frame):
            # raised at once, or just after the SSH send under way (see the interrupts module)
            deliver(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())
        try:
            for s in previous:
                signal.signal(s, on_signal)
        except ValueError:          # not the main thread (tests): keep the defaults
            previous = {}
        try:
            return fn(*args, **kwargs)
        except FerryError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except Terminated:
            raise Exit("terminated", code=143) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every guard unwinds (locks, audit, releases)."""


def project():
    """The project of this run (see :func:`ferry.controller.project.find_project`)."""
    from .controller.project import find_project
    return find_project()


def _sets(values) -> dict:
    from .model.vars import parse_set_args
    return parse_set_args(values or [])


_ARGV: list[str] | None = None
"""The ``ferry`` command's argv (``None`` under ``inv``: then :data:`sys.argv`)."""


def _int(value, option: str) -> int:
    """An integer option, or one line naming it."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FerryError(f"{option}: {value!r} is not a whole number") from None


def _inventory(p, given, vault_password_files, ask_become_pass=False):
    """The run's inventory, resolved once, up front; its warnings (ansible-core's, and
    connection variables Ferry ignores) go to stderr through Ferry's UI, so that
    ``--json`` output stays clean. With ``ask_become_pass``, the sudo password is asked
    first (:func:`_ask_become`)."""
    from rich.console import Console
    from .controller.inventory import Inventory
    _ask_become(ask_become_pass)
    return Inventory(p.inventory(given), vault_password_files or (), warn=UI(Console(stderr=True, highlight=False)).warn)


def _ask_become(ask: bool) -> None:
    """``--ask-become-pass``: read the sudo password without echo from the terminal (as
    Ansible's ``-K``), or one line from stdin when there is no terminal (a pipe), before
    any host is contacted. It serves every host with ``ansible_become`` and no
    ``ansible_become_password`` of its own."""
    if ask:
        import getpass
        from .host.transport.ssh import set_become_password
        try:
            with open("/dev/tty"):
                terminal = True
        except OSError:
            terminal = False
        set_become_password(getpass.getpass("BECOME password: ") if terminal
                            else sys.stdin.readline().rstrip("\r\n"))


OPTIONS = {
    "serial": {"type": "int", "min": 0}, "max_fail": {"type": "float", "min": 0, "max": 100},
    "lock_wait": {"type": "float", "min": 0}, "lines": {"type": "int", "min": 1},
    "keep_last": {"type": "int", "min": 0}, "keep_daily": {"type": "int", "min": 0},
    "keep_weekly": {"type": "int", "min": 0}, "keep": {"type": "int", "min": 0},
    "timeout": {"type": "int", "min": 1},
}
"""Numeric options, declared like variables (:mod:`ferry.model.vars`). Their defaults
are strings so that Invoke hands the text over instead of failing with a traceback."""


def _option(name: str, value) -> int | float:
    """A numeric option converted and checked: ``--serial x`` -> one-line error."""
    from .model.vars import check_value
    return check_value(OPTIONS[name], value, "--" + name.replace("_", "-"))


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


COMMON = {"host": "Ansible host pattern: a host, a group, 'a,b', 'prod:&web', 'all'",
          "stack": "stack name (a folder under stacks/)",
          "inventory": "inventory file or directory, any format Ansible reads "
                       "(default: $FERRY_INVENTORY, or ferry.cfg's inventory)",
          "vault_password_file": "Ansible vault password file (repeatable; default: $ANSIBLE_VAULT_PASSWORD_FILE)",
          "set": "key=value overriding inventory variables (repeatable)"}
#: Help of ``--ask-become-pass``, on every task that connects to hosts.
BECOME = {"ask_become_pass": "ask for the sudo password (hosts with ansible_become and no ansible_become_password)"}
#: Options of the inventory-reading tasks that may be given several times.
INVENTORY_LISTS = ["set", "vault_password_file"]
CHANGES = {"lock_wait": "seconds to wait while another run holds the stack's lock",
           "message": "why: recorded in the lock and the audit log"}


# -- project ---------------------------------------------------------------------------

@task(help={"path": "directory to create the project in (default: the current one)"})
@user_errors
def init(c, path="."):
    """Write a starter project: ferry.cfg, inventories/hosts.ini, stacks/, .gitignore."""
    from .controller.scaffold import init_project
    ui = UI()
    for line in init_project(Path(path)):
        ui.info(line)


@task(help={"path": "the project's docker-compose.yml (or compose.yaml)",
            "env": "its .env (default: the .env next to it, if any)",
            "name": "stack name (default: the compose file's `name:` or its directory's name)",
            "force": "replace an existing stacks/NAME/"})
@user_errors
def stack_import(c, path, env=None, name=None, force=False):
    """Import an existing compose project as stacks/NAME/: compose file unchanged, stack.yml and defaults.yml derived."""
    from .controller.importer import import_stack
    ui = UI()
    p = project()
    result = import_stack(Path(path), Path(env) if env else None, name, p.root / "stacks", force=force)
    for line in result.lines:
        ui.info(line)


# -- inventory -------------------------------------------------------------------------

@task(name="inventory", iterable=INVENTORY_LISTS, help={
    **COMMON, "host": "Ansible host pattern of the hosts to show (default: all)",
    "stack": "stack whose defaults the inventory's Jinja may use (default: ferry.cfg's, or the only one)",
    "json": "print JSON in the shape of ansible-inventory --list"})
@user_errors
def show_inventory(c, host="all", stack=None, inventory=None, vault_password_file=None, set=None, json_=False):
    """Show the hosts, groups and variables a deploy will use, as Ansible resolves them (secrets masked)."""
    from .controller.inventory import inventory_table
    from .roles import all_role_defaults
    from .model.stack import load_stack
    from .model.vars import merge_vars
    p = project()
    inv = _inventory(p, inventory, vault_password_file)
    try:
        lower = merge_vars(all_role_defaults(), load_stack(p.stack_dir(stack)).defaults)
    except FerryError:
        if stack:
            raise
        lower = all_role_defaults()
    data = inv.listing(host, lower=lower, sets=_sets(set))
    if json_:
        _print_json(data)
        return
    UI().table(f"inventory {inv.path}", ["host", "groups", "variables"], inventory_table(data))


# -- bundle, deploy, verify ------------------------------------------------------------

BUNDLE_HELP = {"stack": "stack name (a folder under stacks/)", "version": "bundle version (default: stack.yml's)",
               "dist": "output directory (default: <project>/dist)",
               "sign": "SSH private key: sign the manifest (manifest.json.sig, namespace ferry-bundle)",
               "docker_static": "Docker's static tarball docker-<version>.tgz (from download.docker.com/linux/"
                                "static/stable/<arch>/) for hosts without dpkg",
               "compress": "layer compression: gzip (default) or none", "level": "gzip level 1-9 (default 6)"}


@task(help=BUNDLE_HELP)
@user_errors
def bundle(c, stack=None, version=None, dist=None, sign=None, docker_static=None, compress="gzip", level=6):
    """Build the offline bundle of a stack from local images: image parts, Docker installer, manifest."""
    from .controller.bundle import build_bundle
    from .roles import role_defaults
    ui = UI()
    p = project()
    b = build_bundle(p.stack_dir(stack), Path(dist) if dist else p.dist, version, ui,
                     docker_settings=role_defaults("install-docker-offline"),
                     sign=Path(sign) if sign else None,
                     docker_static=Path(docker_static) if docker_static else None,
                     compress=compress, level=_int(level, "--level"))
    report_bundle(ui, b, signed=bool(sign))


def report_bundle(ui: UI, b, signed: bool = False) -> None:
    """The line ``inv bundle`` ends with: files, size, images, the Docker payload."""
    size = sum(f["size"] for f in b.files())
    docker = b.manifest["docker"]
    static = f", static Docker {docker['static']['version']}" if docker.get("static") else ""
    ui.info(f"bundle {b.path}: {len(b.files())} files, {size / 1e6:.1f} MB, "
            f"{len(b.manifest['images'])} images, Docker {docker['docker']} (debs){static}, "
            f"Compose {docker['compose']}" + (", signed" if signed else ""))


@task(iterable=INVENTORY_LISTS, help={
    **COMMON, **BECOME, **CHANGES, "bundle": "bundle directory (default: the newest in dist/ for the stack)",
    "check": "check mode: show what would change, change nothing",
    "serial": "roll out in batches of N hosts; the first batch is the canary (0: all at once)",
    "max_fail": "percent of hosts that may fail before the rollout stops (default 0)",
    "force": "take over the stack's Compose project even if it runs from another directory (ferry_root)"})
@user_errors
def deploy(c, host, stack=None, inventory=None, vault_password_file=None, bundle=None, set=None, check=False,
           serial="0", max_fail="0", lock_wait="0", message="", force=False, ask_become_pass=False):
    """Deploy a stack's bundle: install Docker, upload, load images, render config, compose up, verify."""
    serial = _option("serial", serial)
    max_fail = _option("max_fail", max_fail)
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.deploy import deploy as run_deploy, prepare, summary_lines
    ui = UI()
    sets = _sets(set)
    p = project()
    name = p.stack_name(stack)
    plan = prepare(_inventory(p, inventory, vault_password_file, ask_become_pass), host, name,
                   Path(bundle) if bundle else None, p.dist, sets, ui, known=p.declared_variables())
    for line in plan.warnings:
        ui.warn(line)
    ui.info(f"deploying {plan.bundle.name} to {', '.join(h.name for h in plan.hosts)}"
            + (" (check mode)" if check else ""))
    reports = run_deploy(plan, ui, check=check, serial=serial, max_fail=max_fail,
                         lock_wait=lock_wait, message=message, force=force)
    for line in summary_lines(reports):
        ui.info(line)
    if any(r.failed for r in reports):
        raise Exit("error: deploy failed", code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, **CHANGES, "to": "release id (default: the one before current)"})
@user_errors
def rollback(c, host, stack=None, inventory=None, vault_password_file=None, to=None, set=None, lock_wait="0", message="", ask_become_pass=False):
    """Switch hosts back to an earlier release (default: the one before current), compose up, verify."""
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.rollback import rollback as run_rollback
    ui = UI()
    p = project()
    reports = run_rollback(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), to, _sets(set), ui,
                           lock_wait=lock_wait, message=message)
    failed = [r for r in reports if r.failed]
    for r in reports:
        ui.info(f"{r.host}: FAILED: {r.error}" if r.failed else
                f"{r.host}: {r.release} runs ({r.round_trips} SSH round trips)")
    if failed:
        raise Exit("error: rollback failed", code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "json": "print JSON for scripts"})
@user_errors
def releases(c, host, stack=None, inventory=None, vault_password_file=None, set=None, json_=False, ask_become_pass=False):
    """List each host's releases: version, time, who deployed it, which is current."""
    from .actions.history import releases_table
    p = project()
    columns = ["host", "release", "version", "created", "by", "current"]
    rows = releases_table(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set))
    if json_:
        _print_json([dict(zip(columns, r[:5] + [r[5] == "current"])) for r in rows])
        return
    UI().table(f"releases of {p.stack_name(stack)}", columns, rows)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "json": "print JSON for scripts"})
@user_errors
def status(c, host, stack=None, inventory=None, vault_password_file=None, set=None, json_=False, ask_become_pass=False):
    """Show current release, services (state, health, ports), lock and disk use per host;
    exit 1 when a service is down, unhealthy or not running current's configuration."""
    from .actions.status import status as host_status
    from .host import lock
    from .ui import human_bytes
    p = project()
    found = host_status(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set))
    bad = [h for h in found if not h["healthy"]]
    if json_:
        _print_json(found)
        if bad:
            raise Exit(code=1)
        return
    ui = UI()
    name = p.stack_name(stack)
    for h in found:
        ui.table(f"{h['host']}: {name} release {h['release'] or '(none)'} (version {h['version'] or '-'}), "
                 f"{h['releases']} releases kept", ["service", "state", "health", "runs current", "ports"],
                 [[n, v["state"], v["health"], "yes" if v["in_sync"] else "[red]NO[/]", ", ".join(v["ports"])]
                  for n, v in h["services"].items()])
        ui.info(f"  {'healthy' if h['healthy'] else 'NOT HEALTHY: ' + '; '.join(h['problems'])}")
        disk = ", ".join(f"{k} {human_bytes(v) if isinstance(v, int) else v}" for k, v in h["disk"].items())
        ui.info(f"  disk: {disk}")
        ui.info("  lock: " + ("free" if not h["lock"] else lock.describe(h["lock"])))
        for line in h["backup"]["summary"]:
            ui.info(f"  backup {line}")
    if bad:
        raise Exit(f"error: {', '.join(h['host'] for h in bad)}: not healthy", code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "lines": "entries per host", "json": "print JSON for scripts"})
@user_errors
def audit(c, host, stack=None, inventory=None, vault_password_file=None, set=None, lines="20", json_=False, ask_become_pass=False):
    """Show the last entries of each host's audit log (one line per state change)."""
    lines = _option("lines", lines)
    from .actions.history import audit_entries
    p = project()
    entries = audit_entries(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), lines)
    if json_:
        _print_json([{"host": h, **r} for h, r in entries])
        return
    rows = [[h, r.get("time", ""), r.get("who", ""), r.get("task", ""), r.get("stack", ""), r.get("version", ""),
             r.get("release", ""), r.get("result", ""), r.get("detail", "")] for h, r in entries]
    UI().table("audit log", ["host", "time", "who", "task", "stack", "version", "release", "result", "detail"], rows)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "json": "print JSON for scripts"})
@user_errors
def lock_status(c, host, stack=None, inventory=None, vault_password_file=None, set=None, json_=False, ask_become_pass=False):
    """Show who holds the stack's lock on each host, since when, doing what."""
    from .actions.locks import lock_status as read_locks
    from .host import lock
    p = project()
    found = read_locks(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set))
    if json_:
        _print_json([{"host": name, "locked": info is not None,
                      "holder": {k: v for k, v in (info or {}).items() if k != "token"} or None}
                     for name, info in found])
        return
    ui = UI()
    name = p.stack_name(stack)
    for host_name, info in found:
        ui.info(f"{host_name}: {name} " + ("is not locked" if info is None else f"is locked: {lock.describe(info)}"))


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME})
@user_errors
def lock_release(c, host, stack=None, inventory=None, vault_password_file=None, set=None, ask_become_pass=False):
    """Remove a lock left by a dead run (warns: a live run would then interleave)."""
    from .actions.locks import lock_release as remove_locks
    p = project()
    remove_locks(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), UI())


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "json": "print the checks as JSON"})
@user_errors
def verify(c, host, stack=None, inventory=None, vault_password_file=None, set=None, json_=False, ask_become_pass=False):
    """Verify a deployed stack with testinfra: containers healthy, ports answering, mounts in place."""
    from .actions.status import verify_hosts
    p = project()
    checks = verify_hosts(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set))
    if json_:
        _print_json([ch.__dict__ for ch in checks])
    else:
        UI().table(f"verify {p.stack_name(stack)}", ["host", "check", "target", "result", "detail"],
                   [[ch.host, ch.kind, ch.target, "[green]ok[/]" if ch.ok else "[red]FAIL[/]", ch.detail]
                    for ch in checks])
    if not checks or any(not ch.ok for ch in checks):
        raise Exit("error: verification failed", code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, **CHANGES,
                              "purge_data": "also delete the data dir, named volumes, secrets and backups",
                              "yes": "do not ask for the stack name to confirm --purge-data"})
@user_errors
def remove(c, host, stack=None, inventory=None, vault_password_file=None, set=None, purge_data=False, yes=False, lock_wait="0", message="", ask_become_pass=False):
    """Remove a stack from hosts: its containers, networks and releases; data and backups are kept."""
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.remove import remove as run_remove
    ui = UI()
    p = project()
    name = p.stack_name(stack)
    if purge_data and not yes:
        if not sys.stdin.isatty():
            raise FerryError(f"--purge-data deletes the data and backups of '{name}' on {host}: "
                             "confirm with --yes (no terminal to ask)")
        answer = input(f"--purge-data deletes the data and backups of '{name}' on {host}. "
                       f"Type the stack name to confirm: ")
        if answer.strip() != name:
            raise FerryError(f"'{answer.strip()}' is not '{name}': nothing was removed")
    run_remove(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), ui, purge_data=purge_data,
               lock_wait=lock_wait, message=message)


# -- Docker Swarm ------------------------------------------------------------------------

@task(iterable=INVENTORY_LISTS, help={
    **COMMON, **CHANGES, "host": "the swarm's group (hosts with ferry_engine: swarm)",
    "bundle": "bundle whose Docker installer the nodes get (default: the newest in dist/ for the stack)",
    "check": "check mode: show what would change, change nothing"})
@user_errors
def swarm_setup(c, host, stack=None, inventory=None, vault_password_file=None, bundle=None, set=None, check=False,
                lock_wait=0, message=""):
    """Form the Docker Swarm of the selected hosts: Docker from the bundle, init/join, node roles and labels from the inventory (idempotent)."""
    from .actions.deploy import prepare
    from .actions.swarm import CLUSTER_ROLE, setup
    from .ui import human_bytes
    ui = UI()
    p = project()
    plan = prepare(_inventory(p, inventory, vault_password_file), host, p.stack_name(stack),
                   Path(bundle) if bundle else None, p.dist, _sets(set), ui)
    ui.info(f"swarm setup of {', '.join(h.name for h in plan.hosts)}" + (" (check mode)" if check else ""))
    reports = setup(plan, ui, check=check, lock_wait=float(lock_wait), message=message)
    for r in reports:
        changed = [name for name, res, _ in r.results if res.changed]
        swarm = next((res.summary for name, res, _ in r.results if name == CLUSTER_ROLE), "")
        ui.info(f"{r.host}: uploaded {human_bytes(r.metric('bytes'))}; swarm: {swarm}; "
                + (f"changed: {', '.join(changed)}" if changed else "nothing changed"))


@task(iterable=INVENTORY_LISTS, help={"host": "the swarm's group (hosts with ferry_engine: swarm)",
                                      "inventory": COMMON["inventory"],
                                      "vault_password_file": COMMON["vault_password_file"], "set": COMMON["set"],
                                      "json": "print JSON for scripts"})
@user_errors
def swarm_status(c, host, inventory=None, vault_password_file=None, set=None, json_=False):
    """Show the swarm's nodes: role, availability, state, managers' reachability, labels; exit 1 on a problem."""
    from .actions.swarm import nodes_status
    p = project()
    found = nodes_status(_inventory(p, inventory, vault_password_file), host, _sets(set))
    if json_:
        _print_json(found)
    else:
        ui = UI()
        ui.table(f"swarm nodes (as {found['manager'] or 'no manager'} lists them)",
                 ["node", "host", "address", "role", "availability", "state", "manager", "labels"],
                 [[n["hostname"] + (" (leader)" if n["leader"] else ""), n["host"] or "[red]not selected[/]",
                   n["addr"], n["role"], n["availability"], n["state"], n["manager"] or "-",
                   ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"] for n in found["nodes"]])
        for line in found["problems"]:
            ui.warn(line)
    if found["problems"]:
        raise Exit("" if json_ else f"error: {len(found['problems'])} problems", code=1)


# -- backup, restore, schedules --------------------------------------------------------

@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, **CHANGES, "fetch": "copy the archive to this directory and check its sha256",
                              "keep_last": "then prune: keep the N newest", "keep_daily": "... and the newest of N days",
                              "keep_weekly": "... and the newest of N ISO weeks"})
@user_errors
def backup(c, host, stack=None, inventory=None, vault_password_file=None, set=None, fetch=None, keep_last="0", keep_daily="0",
           keep_weekly="0", lock_wait="0", message="", ask_become_pass=False):
    """Back up a deployed stack on its hosts: every volume and data dir, databases dumped in their containers."""
    lock_wait = _option("lock_wait", lock_wait)
    keep_last = _option("keep_last", keep_last)
    keep_daily = _option("keep_daily", keep_daily)
    keep_weekly = _option("keep_weekly", keep_weekly)
    from .actions.backup import backup as run_backup
    p = project()
    run_backup(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), UI(), keep_last, keep_daily,
               keep_weekly, Path(fetch) if fetch else None, lock_wait, message)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "json": "print JSON for scripts",
                              "verify": "re-hash every member of every archive (reads them all)"})
@user_errors
def backups(c, host, stack=None, inventory=None, vault_password_file=None, set=None, json_=False, verify=False, ask_become_pass=False):
    """List a stack's backups, the schedule with its next run and the last runs; exit 1 if one is damaged or unverified."""
    from .actions.backup import list_backups, status_lines
    from .ui import human_bytes
    p = project()
    found = list_backups(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), bool(verify))
    if json_:
        _print_json([h.as_json() for h in found])
    else:
        ui = UI()
        for h in found:
            ui.table(f"{h.host}: backups of {p.stack_name(stack)} in {h.dir}" + (" (re-hashed)" if verify else ""),
                     ["id", "size", "state", "release", "source data", "created"],
                     [[i.id, human_bytes(i.size), ("re-hashed ok" if verify else "ok") if i.good else f"[red]{i.state}[/]",
                       i.release or "-", human_bytes(i.source_bytes), i.created] for i in h.backups])
            for line in status_lines(h.status, h.next_run):
                ui.info(f"{h.host}: {line}")
    problems = [f"{h.host}: {line}" for h in found for line in h.problems]
    if problems:
        raise Exit("error: " + "; ".join(problems), code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, **CHANGES, "backup": "backup ID or 'latest'",
                              "from_": "a local archive (fetched earlier) to upload and restore",
                              "no_safety_backup": "do not back up the current state first"})
@user_errors
def restore(c, host, stack=None, inventory=None, vault_password_file=None, set=None, backup="latest", from_=None,
            no_safety_backup=False, lock_wait="0", message="", ask_become_pass=False):
    """Restore a stack from a backup: verify every checksum, back up the current state, stop, restore, start offline, verify."""
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.restore import restore as run_restore
    p = project()
    results = run_restore(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), UI(), backup,
                          Path(from_) if from_ else None, not no_safety_backup, lock_wait, message)
    if any(not ch.ok for r in results for ch in r["checks"]):
        raise Exit("error: the restored stack does not verify", code=1)


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME, "cron": "five cron fields, e.g. '0 2 * * *', or @daily",
                              "keep": "keep-last N", "keep_daily": "keep-daily N", "keep_weekly": "keep-weekly N"})
@user_errors
def schedule_backup(c, host, cron, stack=None, inventory=None, vault_password_file=None, set=None, keep="7", keep_daily="0", keep_weekly="0", ask_become_pass=False):
    """Install an /etc/cron.d entry running the host's backup program (under the stack's lock), logging to a file."""
    keep_daily = _option("keep_daily", keep_daily)
    keep_weekly = _option("keep_weekly", keep_weekly)
    keep = _option("keep", keep)
    from .actions.backup import schedule
    from .host.backup import cron_file
    ui = UI()
    p = project()
    for host_name, _, nxt in schedule(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), ui, cron,
                                      keep, keep_daily, keep_weekly):
        ui.info(f"{host_name}: scheduled '{cron}' keep-last {keep} keep-daily {keep_daily} keep-weekly "
                f"{keep_weekly} -> {cron_file(p.stack_name(stack))}; next run {nxt} (host time)")


@task(iterable=INVENTORY_LISTS, help={**COMMON, **BECOME})
@user_errors
def unschedule_backup(c, host, stack=None, inventory=None, vault_password_file=None, set=None, ask_become_pass=False):
    """Remove the scheduled backup's cron entry (archives are kept)."""
    from .actions.backup import unschedule
    ui = UI()
    p = project()
    for host_name, removed in unschedule(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set)):
        ui.info(f"{host_name}: " + ("schedule removed" if removed else "no schedule"))


# -- day 2: logs, exec, restart/stop/start, prune, uninstall ----------------------------

def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _err(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


@task(iterable=[*INVENTORY_LISTS, "service"], help={
    **COMMON, **BECOME, "service": "only this service (repeatable; default: all)",
    "follow": "keep streaming new lines until Ctrl-C", "since": "from this time on: 10m, 2h, 2026-11-22T02:00:00Z",
    "tail": "lines per container from the end (a number or 'all')"})
@user_errors
def logs(c, host, stack=None, inventory=None, vault_password_file=None, set=None, service=None, follow=False, since=None, tail=None, ask_become_pass=False):
    """Show the Compose logs of the stack's current release (several hosts: lines prefixed with the host)."""
    from .actions.logs import logs as stream_logs
    p = project()
    try:
        stream_logs(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), _out, service or [], follow,
                    since, tail)
    except BrokenPipeError:          # `ferry logs ... | head`: the reader left
        sys.stderr.close()


def argv_after_ddash(argv: list[str] | None = None) -> list[str]:
    """The words after the first ``--`` of the command line, exactly as the shell gave
    them (Invoke's own remainder joins them with spaces, losing word boundaries)."""
    argv = list(sys.argv if argv is None else argv)
    return argv[argv.index("--") + 1:] if "--" in argv else []


@task(name="exec", iterable=INVENTORY_LISTS, help={
    **COMMON, **BECOME, "service": "the service whose container runs the command (required)"})
@user_errors
def exec_(c, host, service, stack=None, inventory=None, vault_password_file=None, set=None, ask_become_pass=False):
    """Run a command in a service's container: ferry exec --host H --service S -- CMD [ARG...] (no TTY, stdin closed; exit status passed through)."""
    from .actions.execute import execute
    p = project()
    rc = execute(_inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), service, argv_after_ddash(_ARGV),
                 _out, _err)
    if rc:
        raise Exit(code=rc)


def _lifecycle(action: str, host, stack, inventory, vault_password_file, set, service, lock_wait, message, timeout, ask_become_pass=False) -> None:
    lock_wait = _option("lock_wait", lock_wait)
    timeout = _option("timeout", timeout) if timeout not in (None, "") else None
    from .actions.services import lifecycle
    p = project()
    lifecycle(action, _inventory(p, inventory, vault_password_file, ask_become_pass), host, p.stack_dir(stack), _sets(set), UI(), service or [],
              lock_wait, message, timeout)


SERVICES = {"service": "only this service (repeatable; default: all)",
            "timeout": "seconds a container gets to stop before it is killed (default 10)"}


@task(iterable=[*INVENTORY_LISTS, "service"], help={**COMMON, **BECOME, **CHANGES, **SERVICES})
@user_errors
def restart(c, host, stack=None, inventory=None, vault_password_file=None, set=None, service=None, lock_wait="0", message="", timeout=None, ask_become_pass=False):
    """Restart the services of the current release, one host after the other, and wait until they are healthy."""
    _lifecycle("restart", host, stack, inventory, vault_password_file, set, service, lock_wait, message, timeout, ask_become_pass)


@task(iterable=[*INVENTORY_LISTS, "service"], help={**COMMON, **BECOME, **CHANGES, **SERVICES})
@user_errors
def stop(c, host, stack=None, inventory=None, vault_password_file=None, set=None, service=None, lock_wait="0", message="", timeout=None, ask_become_pass=False):
    """Stop the services of the current release (containers kept; `start` or `deploy` brings them back)."""
    _lifecycle("stop", host, stack, inventory, vault_password_file, set, service, lock_wait, message, timeout, ask_become_pass)


@task(iterable=[*INVENTORY_LISTS, "service"], help={**COMMON, **BECOME, **CHANGES, "service": SERVICES["service"]})
@user_errors
def start(c, host, stack=None, inventory=None, vault_password_file=None, set=None, service=None, lock_wait="0", message="", ask_become_pass=False):
    """Start the stopped services of the current release and wait until they are healthy."""
    _lifecycle("start", host, stack, inventory, vault_password_file, set, service, lock_wait, message, None, ask_become_pass)


@task(iterable=INVENTORY_LISTS, help={"host": COMMON["host"], "inventory": COMMON["inventory"],
    "vault_password_file": COMMON["vault_password_file"], "set": COMMON["set"], **BECOME,
                              **CHANGES, "check": "check mode: show what would be removed, remove nothing"})
@user_errors
def prune(c, host, inventory=None, vault_password_file=None, set=None, check=False, lock_wait="0", message="", ask_become_pass=False):
    """Remove the images, bundles and store files that no release of any stack on the host uses."""
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.prune import prune as run_prune
    p = project()
    run_prune(_inventory(p, inventory, vault_password_file, ask_become_pass), host, _sets(set), UI(), check, lock_wait, message)


def confirm(what: list[str], hosts: str, yes: bool) -> None:
    """Ask before a destructive option (``--purge-*``): ``--yes``, or type ``yes`` at a
    terminal. Raises FerryError when neither."""
    if not what or yes:
        return
    question = f"{' and '.join(what)} on {hosts} cannot be undone"
    if not sys.stdin.isatty():
        raise FerryError(f"{question}: confirm with --yes")
    answer = input(f"{question}. Type 'yes' to go on: ")
    if answer.strip() != "yes":
        raise FerryError("not confirmed: nothing was changed")


@task(iterable=INVENTORY_LISTS, help={
    "host": COMMON["host"], "inventory": COMMON["inventory"],
    "vault_password_file": COMMON["vault_password_file"], "set": COMMON["set"], **BECOME, **CHANGES,
    "force": "bring running stacks down instead of refusing", "purge_docker": "also remove Docker (asks first)",
    "purge_data": "also remove the stacks' data, secrets, volumes and backups (asks first)",
    "yes": "answer the --purge-* confirmation", "check": "check mode: show what would go, change nothing",
    "audit_dir": "where the hosts' audit logs are copied (default: <project>/audit)"})
@user_errors
def uninstall(c, host, inventory=None, vault_password_file=None, set=None, force=False, purge_docker=False, purge_data=False, yes=False,
              check=False, lock_wait="0", message="", audit_dir=None, ask_become_pass=False):
    """Take Ferry's files off hosts; Docker and the stacks' data stay unless --purge-docker/--purge-data."""
    lock_wait = _option("lock_wait", lock_wait)
    from .actions.uninstall import uninstall as run_uninstall
    p = project()
    if not check:
        confirm([w for w, on in (("removing Docker", purge_docker), ("deleting the stacks' data", purge_data)) if on],
                host, yes)
    run_uninstall(_inventory(p, inventory, vault_password_file, ask_become_pass), host, _sets(set), UI(), Path(audit_dir) if audit_dir else p.root / "audit",
                  force, purge_docker, purge_data, check, lock_wait, message)


def namespace(*extra: Collection | object) -> Collection:
    """The product's task collection, plus ``extra`` tasks/collections (the checkout's
    ``tasks.py`` adds the devkit's ``sandbox.*``, ``demo`` and ``test``); an extra task
    with a product task's name replaces it (the devkit's ``bundle`` builds stand-ins first)."""
    locks = Collection("lock")
    locks.add_task(lock_status, "status")
    locks.add_task(lock_release, "release")
    replaced = {t.name for t in extra if not isinstance(t, Collection)}
    stacks = Collection("stack")
    stacks.add_task(stack_import, "import")
    swarm = Collection("swarm")
    swarm.add_task(swarm_setup, "setup")
    swarm.add_task(swarm_status, "status")
    ns = Collection(*[t for t in (init, show_inventory, bundle, deploy, verify, rollback, releases, status, audit, remove, backup,
                                  backups, restore, schedule_backup, unschedule_backup, logs, exec_, restart, stop,
                                  start, prune, uninstall) if t.name not in replaced],
                    locks, stacks, swarm)
    for item in extra:
        if isinstance(item, Collection):
            ns.add_collection(item)
        else:
            ns.add_task(item)
    return ns


def main(argv: list[str] | None = None) -> None:
    """The ``ferry`` console command: ``ferry [--project DIR] TASK [OPTIONS]``.

    Args:
        argv: the command line, program name first; None: ``sys.argv``, and the
            process ends when the command does (see :func:`_exit_now`).

    Raises:
        SystemExit: with ``argv`` given, the command's exit status (Invoke's ``Exit``).
    """
    global _ARGV
    console = argv is None
    argv = list(sys.argv if argv is None else argv)
    _ARGV = list(argv)
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "--project" and i + 1 < len(argv):
            os.environ["FERRY_PROJECT"] = argv[i + 1]
            del argv[i:i + 2]
            break
        if arg.startswith("--project="):
            os.environ["FERRY_PROJECT"] = arg.split("=", 1)[1]
            del argv[i]
            break
        if not arg.startswith("-"):
            break
    program = Program(namespace=namespace(), name="ferry", binary="ferry", version=__version__)
    if not console:
        program.run(argv)
        return
    try:
        program.run(argv)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    _exit_now(code)


def _exit_now(code: object) -> None:
    """End the ``ferry`` process with ``code`` (``sys.exit``'s meaning: None is 0, a
    string is printed to stderr and means 1): the ``atexit`` handlers run and the
    standard streams are flushed, but the interpreter's teardown of its 600-odd modules
    is skipped (measured: 0.08-0.1 s of every command). Only the console command ends
    so; a caller of :func:`main` with ``argv`` gets its ``SystemExit`` as usual."""
    import atexit
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):     # a closed pipe: nothing more can be said
                pass
        os._exit(code)
