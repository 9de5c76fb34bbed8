"""prune-releases: keep the newest ``releases_keep`` releases (and always ``current``);
remove older release directories, the images only they used, their bundle directories,
and store files no remaining bundle links to.

Images used by another stack's releases or by any container are never removed; only
store files named like a sha256 (Ferry's own) are ever deleted.

The facts (:func:`host_facts`) and the removal (:func:`remove`) are shared with the
day-2 ``prune`` command (:mod:`ferry.actions.prune`), which keeps every release and
removes what none of them uses; the decisions are :func:`ferry.model.releases.plan_prune`
and :func:`ferry.model.releases.plan_host_prune`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ferry.host import containers, files
from ferry.host.releases import HostReleases, read_host, read_releases, read_releases_command
from ferry.model.releases import plan_prune, unused_store_files
from ferry.roles import RoleContext, RoleResult


@dataclass
class HostFacts:
    """What retention needs to know about a host.

    Attributes:
        releases: every stack's releases and every bundle's manifest.
        images: ``{image ID: tags}`` of the images present (``docker images``).
        container_images: image IDs of all containers, running or not.
        links: ``{bundle directory name: store file names it links to}``.
        stored: ``{store file name: size in bytes}``.
    """

    releases: HostReleases
    images: dict[str, set[str]]
    container_images: set[str]
    links: dict[str, set[str]]
    stored: dict[str, int]


def bundle_links(t, root: str) -> dict[str, set[str]]:
    """``{bundle directory name: names of the store files its symlinks point at}``."""
    out: dict[str, set[str]] = {}
    for rel, target in files.parse_links(t.run(files.list_links(f"{root}/bundles")).out).items():
        out.setdefault(rel.split("/", 1)[0], set()).add(posixpath.basename(target))
    return out


def host_facts(t, root: str) -> HostFacts:
    """Read :class:`HostFacts` from the host behind ``t`` (``root``: ``ferry_root``)."""
    releases = read_host(t, root)
    images = containers.parse_images(t.run(containers.docker_images()).out)
    used = set(files.parse_lines(t.run(containers.container_images(), check=False).out))
    links = bundle_links(t, root)
    stored = files.parse_sizes(t.run(files.list_dir_sizes(f"{root}/store")).out)
    return HostFacts(releases, images, used, links, stored)


def remove(t, root: str, paths: list[str], images: list[str], tags: dict[str, set[str]],
           store_files: list[str]) -> list[str]:
    """Remove directories ``paths`` (releases, bundles), then ``images`` (each by its
    ``tags``, see :func:`ferry.host.containers.remove_image`), then ``store_files``.

    Returns:
        The image IDs Docker removed (it refuses one a container uses).
    """
    if paths:
        t.run(["rm", "-rf", "--", *paths])
    removed = [i for i in images if t.run(containers.remove_image(i, tags.get(i)), check=False).ok]
    if store_files:
        t.run(["rm", "-f", "--", *(f"{root}/store/{s}" for s in store_files)])
    return removed


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`run` reads first (gathered ahead by deploy)."""
    return [read_releases_command(ctx.paths.stack_dir)]


def run(ctx: RoleContext) -> RoleResult:
    """Apply release retention on the host; see the module docstring."""
    keep = int(ctx.vars.get("releases_keep", 5))
    history = read_releases(ctx.t, ctx.paths.stack_dir)
    plan = plan_prune(history, keep)
    if not plan.releases:
        return RoleResult(False, f"{len(history.releases)} releases kept (limit {keep})")
    root = ctx.paths.root
    facts = host_facts(ctx.t, root)
    others = facts.releases.releases_except(ctx.stack.name)
    plan = plan_prune(history, keep, set().union(*(r.image_ids for r in others)) | facts.container_images)
    images = [i for i in plan.images if i in facts.images]
    if ctx.check:
        return RoleResult(True, f"would prune {len(plan.releases)} releases, {len(images)} images")
    kept_links = {b: links for b, links in facts.links.items() if b not in plan.bundles}
    orphans = unused_store_files(facts.stored, set().union(*kept_links.values()))
    removed = remove(ctx.t, root, [*(f"{ctx.paths.releases}/{r}" for r in plan.releases),
                                   *(f"{root}/bundles/{b}" for b in plan.bundles)],
                     images, facts.images, orphans)
    return RoleResult(True, f"pruned {len(plan.releases)} releases, {len(removed)} images, "
                            f"{len(plan.bundles)} bundles, {len(orphans)} store files; kept {keep}",
                      {"pruned_releases": len(plan.releases), "pruned_images": len(removed)})
