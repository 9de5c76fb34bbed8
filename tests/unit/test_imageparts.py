"""Images as blobs on the controller, from a `docker save` archive made here (no engine):
the split, gzip, diff-ID checks, and reuse of blobs across bundles and versions."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from ferry.controller.hashcache import HashCache
from ferry.controller.imageparts import ReuseIndex, write_image
from ferry.errors import FerryError
from ferry.model.imagelayers import EngineImages, chain_ids, load_manifest, plan_load


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class FakeEngine:
    """Images as `docker save` (20.10) writes them; counts saves."""

    def __init__(self):
        self.images: dict[str, tuple[bytes, list[bytes]]] = {}
        self.saves: list[str] = []

    def add(self, ref: str, layers: list[bytes]) -> dict:
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]},
                             "config": {"Cmd": [ref]}}).encode()
        self.images[ref] = (config, layers)
        return {"id": "sha256:" + sha(config), "tags": [ref], "size": sum(map(len, layers)),
                "diff_ids": ["sha256:" + sha(l) for l in layers]}

    def save(self, ref: str, path: Path) -> None:
        self.saves.append(ref)
        config, layers = self.images[ref]
        members = {f"{sha(config)}.json": config}
        names = []
        for i, layer in enumerate(layers):
            names.append(f"{i:064x}/layer.tar")
            members[names[-1]] = layer
        members["manifest.json"] = json.dumps([{"Config": f"{sha(config)}.json", "RepoTags": [ref],
                                                "Layers": names}]).encode()
        path.write_bytes(layer_tar(members))


@pytest.fixture
def engine():
    e = FakeEngine()
    base = layer_tar({"etc/os-release": b"debian" * 1000})
    e.infos = {"app:1": e.add("app:1", [base, layer_tar({"app/v": b"1" * 5000})]),
               "app:2": e.add("app:2", [base, layer_tar({"app/v": b"2" * 5000})]),
               "db:1": e.add("db:1", [base])}
    e.base = base
    return e


def build(root: Path, refs, engine, cache, dist: Path, compress="gzip"):
    root.mkdir(parents=True)
    index = ReuseIndex.scan(dist)
    return [write_image(r, engine.infos[r], root, index, cache, compress, 6, save=engine.save) for r in refs]


def seal_v2(root: Path, parts, name="s", version="1"):
    from ferry.controller.bundle import seal
    images = [{"service": f"svc{i}", **p.entry} for i, p in enumerate(parts)]
    seal(root, {"format": 2, "stack": name, "version": version, "docker": {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64", "packages": {"docker.io": "20.10.24"}}, "images": images})


def test_an_image_becomes_config_and_gzip_layers_named_by_digest(tmp_path, engine):
    cache = HashCache(tmp_path / "c.json")
    root = tmp_path / "dist" / "s-1"
    (parts,) = build(root, ["app:1"], engine, cache, tmp_path / "dist")
    e = parts.entry
    config, layers = engine.images["app:1"]
    assert e["id"] == "sha256:" + sha(config) and (root / e["config"]).read_bytes() == config
    for entry, layer in zip(e["layers"], layers):
        blob = (root / entry["blob"]).read_bytes()
        assert entry["blob"] == f"blobs/sha256/{sha(blob)}" and entry["size"] == len(blob)
        assert gzip.decompress(blob) == layer and entry["diff_id"] == "sha256:" + sha(layer)
        assert entry["media"] == "gzip" and len(blob) < len(layer)
    assert parts.saved and parts.compressed[0] == 2
    seal_v2(root, [parts])                                   # a valid format-2 manifest


def test_uncompressed_layers_are_the_tar_itself(tmp_path, engine):
    (parts,) = build(tmp_path / "dist" / "s-1", ["db:1"], engine, HashCache(tmp_path / "c.json"),
                     tmp_path / "dist", compress="none")
    assert parts.entry["layers"][0]["media"] == "tar"
    assert (tmp_path / "dist" / "s-1" / parts.entry["layers"][0]["blob"]).read_bytes() == engine.base


def test_a_new_version_reuses_unchanged_images_and_layers(tmp_path, engine):
    dist = tmp_path / "dist"
    cache = HashCache(tmp_path / "c.json")
    v1 = build(dist / "s-1", ["app:1", "db:1"], engine, cache, dist)
    seal_v2(dist / "s-1", v1)
    engine.saves.clear()
    v2 = build(dist / "s-2", ["app:2", "db:1"], engine, cache, dist)
    assert engine.saves == ["app:2"]                        # db:1 unchanged: no docker save at all
    assert not v2[1].saved and v2[1].linked == 1            # its config (the base came with app:2)
    assert v2[0].compressed[0] == 1 and v2[0].linked == 1   # app:2: only its new layer compressed
    base_v1 = dist / "s-1" / v1[0].entry["layers"][0]["blob"]
    base_v2 = dist / "s-2" / v2[0].entry["layers"][0]["blob"]
    assert base_v1.stat().st_ino == base_v2.stat().st_ino   # the same blob, hard-linked


def test_blobs_of_another_dist_are_offered_after_the_own(tmp_path, engine):
    """``build_bundle(reuse_from=...)``: an image already in a bundle of another ``dist``
    is linked from there (no docker save); ``dist``'s own blob wins where both have one."""
    cache = HashCache(tmp_path / "c.json")
    other, own = tmp_path / "other", tmp_path / "own"
    seal_v2(other / "s-1", build(other / "s-1", ["app:1", "db:1"], engine, cache, other))
    seal_v2(own / "t-1", build(own / "t-1", ["db:1"], engine, cache, own), name="t")
    index = ReuseIndex.scan(own)
    index.add(ReuseIndex.scan(other))
    db_id, app_id = engine.infos["db:1"]["id"], engine.infos["app:1"]["id"]
    assert index.configs[db_id].is_relative_to(own) and index.configs[app_id].is_relative_to(other)
    engine.saves.clear()
    (root := own / "t-2").mkdir()
    parts = write_image("app:1", engine.infos["app:1"], root, index, cache, "gzip", 6, save=engine.save)
    assert engine.saves == [] and not parts.saved and parts.linked == 3      # config + both layers


def test_the_same_layer_is_the_same_blob_in_every_bundle_build_and_thread_count(tmp_path, monkeypatch):
    """Deterministic gzip: a layer saved and compressed again in another dist (no blob to
    reuse), at another time, with another number of threads, with or without pigz on the
    PATH, is byte for byte the same blob, so a host that holds it never gets it again
    under another name."""
    import random
    from ferry.controller import imageparts
    rnd = random.Random(12)
    big = layer_tar({f"usr/lib/f{i}": rnd.randbytes(150_000) + b"abc" * 200_000 for i in range(5)})
    assert len(big) > 3 * imageparts.GZIP_PIECE                 # several pieces, several threads
    e = FakeEngine()
    e.infos = {"big:1": e.add("big:1", [big])}
    blobs = []
    for n, (threads, now, path) in enumerate([(1, 1_000_000_000, os.environ.get("PATH", "")),
                                              (4, 2_000_000_000, ""), (None, 2_000_000_007, "/usr/bin:/bin")]):
        monkeypatch.setattr(os, "cpu_count", lambda t=threads: t)
        monkeypatch.setattr(time, "time", lambda t=now: t)
        monkeypatch.setenv("PATH", path)
        (parts,) = build(tmp_path / f"dist{n}" / "s-1", ["big:1"], e, HashCache(tmp_path / f"c{n}.json"),
                         tmp_path / f"dist{n}")
        assert parts.saved and parts.compressed[0] == 1           # compressed anew, not linked
        blobs.append((tmp_path / f"dist{n}" / "s-1" / parts.entry["layers"][0]["blob"]).read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]
    blob = blobs[0]
    assert blob[:10] == imageparts.GZIP_HEADER and blob[4:8] == b"\0\0\0\0"   # no time stamp, no name
    assert gzip.decompress(blob) == big and len(blob) < len(big) // 2


def test_a_save_that_does_not_match_the_inspected_image_is_refused(tmp_path, engine):
    info = dict(engine.infos["app:1"], id="sha256:" + "0" * 64)
    with pytest.raises(FerryError, match="its config is not image"):
        write_image("app:1", info, tmp_path / "b", ReuseIndex(), HashCache(tmp_path / "c.json"), save=engine.save)


# -- which parts a host needs ----------------------------------------------------------

def test_chain_ids_follow_the_oci_rule():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a, b]) == [a, "sha256:" + sha(f"{a} {b}".encode())]


def test_plan_load_sends_configs_and_only_layers_the_engine_lacks(engine, tmp_path):
    cache = HashCache(tmp_path / "c.json")
    parts = build(tmp_path / "dist" / "s-1", ["app:1", "app:2", "db:1"], engine, cache, tmp_path / "dist")
    images = [p.entry for p in parts]
    host = EngineImages()
    host.add(images[2]["id"], ["db:old"], engine.infos["db:1"]["diff_ids"])          # db:1, other tag
    lp = plan_load(images, host)
    assert [i["ref"] for i in lp.load] == ["app:1", "app:2"]
    assert lp.retag == [(images[2]["id"], "db:1")]
    assert lp.blobs == [images[0]["config"], images[0]["layers"][1]["blob"],
                        images[1]["config"], images[1]["layers"][1]["blob"]]     # base: in the engine
    assert lp.skipped_layers == 2
    fresh = plan_load(images, EngineImages())
    assert fresh.blobs.count(images[0]["layers"][0]["blob"]) == 1            # shared base: once
    assert load_manifest(lp.load)[0] == {"Config": images[0]["config"].rsplit("/", 1)[1], "RepoTags": ["app:1"],
                                         "Layers": [l["blob"].rsplit("/", 1)[1] for l in images[0]["layers"]]}


def test_same_diff_id_on_another_parent_is_not_the_same_layer():
    top = "sha256:" + "c" * 64
    image = {"id": "sha256:" + "1" * 64, "tags": ["x:1"], "config": "blobs/sha256/" + "1" * 64,
             "layers": [{"blob": "blobs/sha256/" + "a" * 64, "diff_id": "sha256:" + "a" * 64},
                        {"blob": "blobs/sha256/" + "c" * 64, "diff_id": top}]}
    host = EngineImages()
    host.add("sha256:" + "2" * 64, [], ["sha256:" + "b" * 64, top])     # same top diff, other base
    assert plan_load([image], host).blobs == [image["config"], image["layers"][0]["blob"],
                                              image["layers"][1]["blob"]]


def test_the_devkit_builds_only_the_stand_ins_the_stack_references(tmp_path, monkeypatch):
    """A recipe left under images/ that stack.yml no longer names is not built (it cost
    151 s of a 190 s `inv bundle`)."""
    import shutil as sh
    import devkit.images as images
    stack = tmp_path / "llm-chat"
    sh.copytree(Path(__file__).resolve().parents[2] / "stacks" / "llm-chat", stack)
    sh.copytree(stack / "images" / "backend", stack / "images" / "old-backend")
    recipe = stack / "images" / "old-backend" / "recipe.yml"
    recipe.write_text(recipe.read_text().replace("tag: llm-chat-backend:1.0.0", "tag: llm-chat-backend:0.9.0"))
    built = []
    monkeypatch.setattr(images, "build_image", lambda r, console=None, force=False: built.append(r.tag) or "sha256:x")
    assert set(images.build_stack_images(stack)) == {"llm-chat-backend:1.0.0", "llm-chat-frontend:1.0.0", "nginx:1.22"}
    assert sorted(built) == ["llm-chat-backend:1.0.0", "llm-chat-frontend:1.0.0", "nginx:1.22"]
