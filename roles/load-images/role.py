"""load-images: load the bundle's images whose ID the host's Docker lacks.

Facts: the engine's images (IDs, tags and ``RootFS.Layers``, one command). An image
whose ID is present but lacks one of the manifest's tags is only re-tagged.

Format 2 (images as blobs): ONE ``docker load`` for every missing image, reading an
archive assembled on the host from the store, with no copy: its ``manifest.json`` is
written to a temporary directory and ``tar -cf -`` streams it and the store files
straight into ``docker load`` (:func:`ferry.host.containers.load_blobs`). The archive
holds the configs of the missing images and only the layers whose chain ID the engine
lacks (:func:`ferry.model.imagelayers.plan_load`); ``docker load`` takes the others
from the engine. Gzip-compressed layers are read as they are.

Format 1 (one ``docker save`` tarball per image): ``docker load -i`` of each missing
image's tarball through the bundle's symlink, as Ferry always did, so bundles built
before layers remain loadable.

Every image ID is checked afterwards.
"""

from __future__ import annotations

import json
import time

from ferry.errors import HostError
from ferry.host import containers
from ferry.model.imagelayers import load_manifest, plan_load
from ferry.roles import RoleContext, RoleResult


def _engine(ctx: RoleContext):
    """The engine's images: upload-bundle's fact when Docker was not (re)started since."""
    if ctx.state.engine is None or ctx.state.engine_changed:
        res = ctx.t.run(containers.engine_images(), check=not ctx.check)
        ctx.state.engine = containers.parse_engine_images(res.out if res.ok else "")
    return ctx.state.engine


def facts(ctx: RoleContext) -> list[list[str]]:
    """The read-only command :func:`run` reads first (gathered ahead by deploy; the same
    one upload-bundle reads, so asked once)."""
    return [containers.engine_images()]


def run(ctx: RoleContext) -> RoleResult:
    """Load and re-tag what is missing; see the module docstring."""
    images = ctx.bundle.manifest["images"]
    engine = _engine(ctx)
    if ctx.bundle.format == 1:
        seen: set[str] = set()
        to_load = [i for i in images if i["id"] not in engine.tags and not (i["id"] in seen or seen.add(i["id"]))]
        to_tag = sorted({(i["id"], ref) for i in images if i["id"] in engine.tags
                         for ref in i["tags"] if ref not in engine.tags[i["id"]]})
        blobs, skipped = [], 0
    else:
        lp = plan_load(images, engine)
        to_load, to_tag, blobs, skipped = lp.load, lp.retag, lp.blobs, lp.skipped_layers
    ctx.state.images_changed = bool(to_load or to_tag)
    if not to_load and not to_tag:
        return RoleResult(False, f"loaded 0 images (all {len(images)} present)", {"images_loaded": 0})
    if ctx.check:
        return RoleResult(True, f"would load {len(to_load)} images, re-tag {len(to_tag)}",
                          {"images_loaded": len(to_load)})
    started = time.monotonic()
    timeout = float(ctx.vars.get("load_images_timeout", 900))
    if to_load and ctx.bundle.format == 1:
        with ctx.ui.steps(f"{ctx.host} docker load", len(to_load)) as done:
            for image in to_load:
                ctx.t.run(containers.docker_load(f"{ctx.paths.bundle_dir}/{image['file']}"), timeout=timeout)
                done(image["ref"])
    elif to_load:
        manifest = json.dumps(load_manifest(to_load)).encode()
        res = ctx.t.run(containers.load_blobs(ctx.paths.store, [b.rsplit("/", 1)[-1] for b in blobs]),
                        input=manifest, timeout=timeout, check=False)
        if not res.ok:
            raise HostError(ctx.host, f"docker load of {', '.join(i['ref'] for i in to_load)} failed: "
                                      f"{res.last_error_line()}")
    for image_id, ref in to_tag:
        ctx.t.run(containers.docker_tag(image_id, ref))
    after = containers.parse_engine_images(ctx.t.run(containers.engine_images()).out)
    ctx.state.engine = after
    for image in images:
        if image["id"] not in after.tags:
            raise HostError(ctx.host, f"image {image['ref']} ({image['id'][:19]}) absent after docker load")
    names = ", ".join(i["ref"] for i in to_load) or "none"
    layers = f" ({len(blobs) - len(to_load)} layers sent, {skipped} taken from the engine)" if blobs else ""
    return RoleResult(True, f"loaded {len(to_load)} images ({names}){layers}, re-tagged {len(to_tag)} "
                            f"in {time.monotonic() - started:.1f}s", {"images_loaded": len(to_load)})
