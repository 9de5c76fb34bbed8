"""load-images: ``docker load`` the bundle's images whose ID the host does not have.

Facts: ``docker images`` (IDs and tags). An image whose ID is present but lacks one of
the manifest's tags is only re-tagged. Every loaded ID is checked afterwards.
"""

from __future__ import annotations

import time

from ferry.errors import HostError
from ferry.host.containers import parse_images
from ferry.roles import RoleContext, RoleResult
from ferry.host import containers


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`run` reads first (gathered ahead by deploy)."""
    return [containers.docker_images()]


def run(ctx: RoleContext) -> RoleResult:
    """Load and re-tag what is missing; see the module docstring."""
    images = ctx.bundle.manifest["images"]
    res = ctx.t.run(containers.docker_images(), check=not ctx.check)
    have = parse_images(res.out) if res.ok else {}
    to_load = [i for i in images if i["id"] not in have]
    to_tag = [(i["id"], ref) for i in images if i["id"] in have
              for ref in i["tags"] if ref not in have[i["id"]]]
    ctx.state.images_changed = bool(to_load or to_tag)
    if not to_load and not to_tag:
        return RoleResult(False, f"loaded 0 images (all {len(images)} present)", {"images_loaded": 0})
    if ctx.check:
        return RoleResult(True, f"would load {len(to_load)} images, re-tag {len(to_tag)}",
                          {"images_loaded": len(to_load)})
    started = time.monotonic()
    timeout = float(ctx.vars.get("load_images_timeout", 900))
    if to_load:
        with ctx.ui.steps(f"{ctx.host} docker load", len(to_load)) as done:
            for image in to_load:
                ctx.t.run(containers.docker_load(f"{ctx.paths.bundle_dir}/{image['file']}"), timeout=timeout)
                done(image["ref"])
    for image_id, ref in to_tag:
        ctx.t.run(containers.docker_tag(image_id, ref))
    after = parse_images(ctx.t.run(containers.docker_images()).out)
    for image in images:
        if image["id"] not in after:
            raise HostError(ctx.host, f"image {image['ref']} ({image['id'][:19]}) absent after docker load")
    names = ", ".join(i["ref"] for i in to_load) or "none"
    return RoleResult(True, f"loaded {len(to_load)} images ({names}), re-tagged {len(to_tag)} "
                            f"in {time.monotonic() - started:.1f}s", {"images_loaded": len(to_load)})
