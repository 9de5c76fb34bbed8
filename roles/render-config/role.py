"""render-config: render the stack's templates and, when anything changed, write a new
immutable release directory (``compose-up`` then makes it the running one: it switches
``current`` and brings it up as one unit on the host).

Facts: one tar stream of the current release's files, its ``release.json`` and the
host's generated secrets. Generated secrets (``generated_secrets`` in stack.yml) are
made once per host with :func:`secrets.token_hex` and kept in ``secrets.json`` (0600).
Files marked ``secret`` are written 0600; their diffs show changed *keys* only (dotted
paths for JSON and YAML files, names for ``.env`` files). Static files (``files`` in
stack.yml) travel in the release with the rendered ones.
The new release, the secrets and the data dirs are written in one round trip (a tar
extracted on the host). ``current`` is not touched here: a run interrupted between
render-config and compose-up leaves ``current`` naming what runs.

The rendered files are resolved with Compose on the controller
(:mod:`ferry.controller.composecli`) and checked on that model before anything is
written. A bind source written relative to the release (``./data``) that no release
file provides is data: the release holds a symlink ``data -> <stack_dir>/data/data``,
so the data lives outside releases and survives releases, rollbacks and upgrades.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import io
import json
import secrets as pysecrets
import socket
import tarfile
import time

from ferry.model.configdiff import config_values
from ferry.host.answers import json_file
from ferry.host.files import parse_tar
from ferry.roles import RoleContext, RoleResult
from ferry.controller import composecli
from ferry.model.render import render_release, template_context
from ferry.host import files, shell

q = shell.q


def _diff(name: str, old: bytes | None, new: bytes, secret: bool, max_lines: int) -> list[str]:
    if secret:
        before = config_values(name, old or b"")
        after = config_values(name, new)
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return [f"  {name} (secret, 0600): changed keys: {', '.join(keys) or '(formatting only)'}"]
    lines = list(difflib.unified_diff((old or b"").decode("utf-8", "replace").splitlines(),
                                      new.decode("utf-8", "replace").splitlines(),
                                      f"current/{name}", f"new/{name}", lineterm="", n=1))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"]
    return ["  " + l for l in lines]


def _tar(entries: dict[str, tuple[bytes, int]], links: dict[str, str] | None = None) -> bytes:
    """A tar of ``entries`` (``{path: (bytes, mode)}``) and symlinks (``{path: target}``)."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (data, mode) in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, now, 0, 0
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, now
            tar.addfile(info)
    return buf.getvalue()


def release_id(version: str, now: float | None = None) -> str:
    """``YYYYmmddTHHMMSS.mmmZ-<version>``: sorts by time, says what it holds, and two
    deploys in the same second still get two directories (releases are immutable)."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z-{version}"


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`run` reads first (gathered ahead by deploy): the
    current release's files, its ``release.json``, the secrets and ``up.json``."""
    wanted = [f"current/{d}" for d in ctx.stack.release_files()] + ["current/release.json", "secrets.json", "up.json"]
    return [files.read_tar(ctx.paths.stack_dir, wanted)]


def run(ctx: RoleContext) -> RoleResult:
    """Render, diff, and write a new release when anything changed; see the module docstring."""
    stack, p = ctx.stack, ctx.paths
    found = parse_tar(ctx.t.run(facts(ctx)[0]).stdout)
    ctx.state.last_up = json_file(found, "up.json")
    kept = json_file(found, "secrets.json")
    new_secrets = {k: pysecrets.token_hex(32) for k in stack.generated_secrets if k not in kept}
    context = template_context(ctx.vars, stack, p.for_templates(), {**kept, **new_secrets}, ctx.host)
    release = render_release(stack, context, ctx.host, composecli.resolver(ctx.bundle.path))
    rendered = release.files
    for w in release.warnings:
        ctx.ui.warn(f"{ctx.host}: Compose: {w}")
    ctx.state.rendered, ctx.state.model = rendered, release.model
    current = json_file(found, "current/release.json")
    ctx.state.previous_release = current.get("id")
    manifest_sha = hashlib.sha256((ctx.bundle.path / "manifest.json").read_bytes()).hexdigest()
    changed = [d for d in rendered if found.get(f"current/{d}") != rendered[d]]
    bundle_changed = current.get("bundle_manifest_sha256") != manifest_sha
    if not changed and not bundle_changed and not new_secrets:
        ctx.state.release = current.get("id")
        return RoleResult(False, f"config unchanged (release {current.get('id')})", {"files_changed": 0})
    secret_files = stack.secret_files()
    max_lines = int(ctx.vars.get("render_diff_max_lines", 40))
    for d in changed:
        for line in _diff(d, found.get(f"current/{d}"), rendered[d], d in secret_files, max_lines):
            ctx.ui.info(line)
    why = ", ".join(changed + (["new bundle " + ctx.bundle.name] if bundle_changed else [])) or "new secrets"
    if ctx.check:
        return RoleResult(True, f"would write a release: {why}", {"files_changed": len(changed)})
    rid = release_id(ctx.bundle.version)
    rel = f"releases/{rid}"
    meta = {"id": rid, "stack": stack.name, "version": ctx.bundle.version, "bundle": ctx.bundle.name,
               "bundle_manifest_sha256": manifest_sha,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "by": f"{getpass.getuser()}@{socket.gethostname()}",
               "files": {d: hashlib.sha256(b).hexdigest() for d, b in rendered.items()}}
    entries = {f"{rel}/{d}": (b, stack.file_mode(d)) for d, b in rendered.items()}
    entries[f"{rel}/release.json"] = (json.dumps(meta, indent=2).encode() + b"\n", 0o644)
    if new_secrets:
        entries["secrets.json"] = (json.dumps({**kept, **new_secrets}, indent=2).encode(), 0o600)
    links = {f"{rel}/{d}": f"{p.data}/{d}" for d in release.data_paths}
    data_dirs = " ".join(q(f"{p.data}/{d}") for d in [*stack.data_dirs, *release.data_paths])
    script = (f"set -e; mkdir -p {q(p.releases)} {q(p.data)} {data_dirs}; cd {q(p.stack_dir)}; "
              f"if [ -e {q(rel)} ]; then echo {q('release ' + rid + ' exists already')} >&2; exit 17; fi; "
              f"tar --no-same-owner -xf -; chmod 0755 {q(rel)}; "
              f"cp {q(p.bundle_dir + '/manifest.json')} {q(rel + '/manifest.json')}")
    ctx.t.run(shell.sh(script), input=_tar(entries, links))
    ctx.state.release = rid
    ctx.state.release_changed = True
    extra = f"; generated {', '.join(sorted(new_secrets))}" if new_secrets else ""
    return RoleResult(True, f"release {rid}: {why}{extra}", {"files_changed": len(changed), "release": rid})
