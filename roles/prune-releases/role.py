"""prune-releases: keep the newest ``releases_keep`` releases (and always ``current``);
remove older release directories, the images only they used, their bundle directories,
and store files no remaining bundle links to.

Images used by another stack's releases or by any container are never removed; only
store files named like a sha256 (Ferry's own) are ever deleted.
"""

from __future__ import annotations

import json
import posixpath
import re

from ferry.host.files import parse_lines, parse_links, parse_tar
from ferry.host.releases import read_releases
from ferry.model.releases import plan_prune
from ferry.roles import RoleContext, RoleResult
from ferry.host import files, shell

q = shell.q


def _protected_images(ctx: RoleContext) -> set[str]:
    """Image IDs used by containers, or by releases of the host's other stacks."""
    root, stack = ctx.paths.root, ctx.stack.name
    script = (f"cd {q(root)}/stacks 2>/dev/null || exit 0; set -- */releases/*/manifest.json; "
              f"for f; do case $f in {q(stack)}/*) shift;; *) [ -e \"$f\" ] || shift;; esac; done; "
              "[ $# -eq 0 ] || tar -cf - -- \"$@\"")
    ids: set[str] = set()
    for data in parse_tar(ctx.t.run(shell.sh(script)).stdout).values():
        ids |= {i["id"] for i in json.loads(data).get("images", [])}
    used = ctx.t.run(shell.sh("docker ps -aq --no-trunc | xargs -r docker inspect --format '{{.Image}}'"),
                     check=False).out
    return ids | set(parse_lines(used))


def run(ctx: RoleContext) -> RoleResult:
    """Apply release retention on the host; see the module docstring."""
    keep = int(ctx.vars.get("releases_keep", 5))
    history = read_releases(ctx.t, ctx.paths.stack_dir)
    plan = plan_prune(history, keep, _protected_images(ctx) if len(history.releases) > keep else set())
    if not plan.releases:
        return RoleResult(False, f"{len(history.releases)} releases kept (limit {keep})")
    if ctx.check:
        return RoleResult(True, f"would prune {len(plan.releases)} releases, {len(plan.images)} images")
    root = ctx.paths.root
    ctx.t.run(["rm", "-rf", "--", *(f"{ctx.paths.releases}/{r}" for r in plan.releases),
               *(f"{root}/bundles/{b}" for b in plan.bundles)])
    removed_images = []
    for image in plan.images:
        if ctx.t.run(["docker", "rmi", image], check=False).ok:
            removed_images.append(image)
    linked = {posixpath.basename(t) for t in parse_links(ctx.t.run(files.list_links(f"{root}/bundles")).out).values()}
    stored = set(parse_lines(ctx.t.run(files.list_dir(ctx.paths.store)).out))
    orphans = sorted(s for s in stored - linked if re.fullmatch(r"[0-9a-f]{64}", s))
    if orphans:
        ctx.t.run(["rm", "-f", "--", *(f"{ctx.paths.store}/{s}" for s in orphans)])
    return RoleResult(True, f"pruned {len(plan.releases)} releases, {len(removed_images)} images, "
                            f"{len(plan.bundles)} bundles, {len(orphans)} store files; kept {keep}",
                      {"pruned_releases": len(plan.releases), "pruned_images": len(removed_images)})

