"""Images as layers: which parts of a bundle's images a host needs (pure).

Docker identifies a layer on a host by its *chain ID*: the first layer's is its diff ID
(the sha256 of the uncompressed layer tar), each next one's is
``sha256(parent chain ID + " " + diff ID)`` (the OCI image spec's ChainID). An engine
that holds an image with ``RootFS.Layers`` ``[d1, d2, d3]`` therefore holds the layers
with chain IDs ``C(d1)``, ``C(d1,d2)`` and ``C(d1,d2,d3)``. ``docker load`` (20.10) reads
a layer's file only when the engine lacks that chain ID, and then the file must be in the
archive; so for each image the host lacks, the archive needs its config and exactly the
layers whose chain ID the host lacks (see ``/work/shared/notes/layer-transfer.md``).

Everything here works on format-2 manifest images (:mod:`ferry.model.manifest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """Chain IDs (``sha256:<hex>``) of every prefix of ``diff_ids`` (``sha256:<hex>`` each)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


@dataclass
class EngineImages:
    """What a host's Docker engine holds, from ``docker image inspect`` of every image.

    Attributes:
        tags: ``{image ID: {repo:tag, ...}}``.
        chains: chain IDs of every layer of every image.
    """

    tags: dict[str, set[str]] = field(default_factory=dict)
    chains: set[str] = field(default_factory=set)

    def add(self, image_id: str, tags: Iterable[str], diff_ids: Iterable[str]) -> None:
        """Record one image (its ID, tags and ``RootFS.Layers``)."""
        self.tags.setdefault(image_id, set()).update(t for t in tags if t and "<none>" not in t)
        self.chains.update(chain_ids(diff_ids))


@dataclass
class LoadPlan:
    """What one host needs of a bundle's images.

    Attributes:
        load: manifest images whose ID the engine lacks, in manifest order (one entry
            per image ID).
        retag: ``(image ID, ref)`` pairs: present images missing one of their tags.
        blobs: bundle paths the ``docker load`` archive needs (configs of ``load``, and
            their layers whose chain ID the engine lacks), each once, in order.
        skipped_layers: layers of ``load`` not needed because the engine has them.
    """

    load: list[dict[str, Any]]
    retag: list[tuple[str, str]]
    blobs: list[str]
    skipped_layers: int = 0


def plan_load(images: list[dict[str, Any]], engine: EngineImages) -> LoadPlan:
    """Decide, for a format-2 manifest's ``images`` and a host's :class:`EngineImages`,
    which images to load, which to re-tag, and which blobs the load archive needs.

    A layer shared by two images to load is carried once (``docker load`` registers it
    with the first image and finds it for the second)."""
    load, seen_ids, retag = [], set(), []
    for image in images:
        if image["id"] in engine.tags:
            retag += [(image["id"], ref) for ref in image["tags"] if ref not in engine.tags[image["id"]]]
        elif image["id"] not in seen_ids:
            seen_ids.add(image["id"])
            load.append(image)
    blobs: list[str] = []
    have = set(engine.chains)
    skipped = 0
    for image in load:
        if image["config"] not in blobs:
            blobs.append(image["config"])
        for layer, chain in zip(image["layers"], chain_ids(l["diff_id"] for l in image["layers"])):
            if chain in have:
                skipped += 1
                continue
            have.add(chain)
            if layer["blob"] not in blobs:
                blobs.append(layer["blob"])
    return LoadPlan(load, sorted(set(retag)), blobs, skipped)


def load_manifest(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``manifest.json`` of a ``docker load`` archive for ``images``: ``Config`` and
    ``Layers`` name blobs by their bare sha256 (the archive holds them at its top level,
    as the host's store names them), ``RepoTags`` the image's tags."""
    return [{"Config": image["config"].rsplit("/", 1)[-1], "RepoTags": list(image["tags"]),
             "Layers": [layer["blob"].rsplit("/", 1)[-1] for layer in image["layers"]]}
            for image in images]
