"""End to end: images travel as layers, signed, onto a fresh host; a new version that
changes one layer sends that layer and nothing else of its images.

Host: sandbox-5 (fresh: no Docker). Bytes on the wire are the host's own network
counters (``eth0`` of the sandbox network, read with ``docker exec``): everything the
controller sent it, SSH framing and every command of the deploy included.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time

import pytest
from rich.console import Console

from devkit.images import build_bundle as dev_build_bundle, derive_image_with_files
from devkit.sandbox import wire_bytes
from ferry.controller.bundle import build_bundle
from ferry.model.imagelayers import chain_ids
from ferry.roles import role_defaults
from ferry.ui import UI
from stack_e2e import STACKS, Hosts, container_of, deploy_stack, http, inventory_with_signers, signing_keys

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-5", fresh=True)]
HOST = "sandbox-5"
NEW_TAG = "llm-chat-backend:1.1.0-onelayer"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def signed(sandbox, tmp_path_factory):
    """``(keys, inventory with ferry_bundle_signers, dist)``."""
    d = tmp_path_factory.mktemp("layers")
    (d / "keys").mkdir()
    (d / "inv").mkdir()
    keys = signing_keys(d / "keys")
    return keys, inventory_with_signers(sandbox, d / "inv", keys["signers"]), d / "dist"


@pytest.fixture(scope="module")
def first(sandbox, hosts, signed):
    """The signed v1 bundle deployed to the fresh host: ``(bundle dir, Deployed, bytes
    received by the host, docker before)``."""
    keys, inventory, dist = signed
    v1 = dev_build_bundle(STACKS / "llm-chat", dist, None, UI(Console(file=io.StringIO())),
                          role_defaults("install-docker-offline"), sign=keys["release"]).path
    before = hosts.sh(HOST, "command -v docker || echo no-docker")
    rx0 = wire_bytes(container_of(sandbox, HOST))[0]
    done = deploy_stack(inventory, HOST, "llm-chat", v1)
    rx = wire_bytes(container_of(sandbox, HOST))[0] - rx0
    print(f"\nfirst deploy: uploaded {done.reports[0].metric('bytes')} B, host received {rx} B, {done.seconds:.1f}s")
    return v1, done, rx, before


def test_a_signed_first_deploy_on_a_fresh_host_loads_images_from_their_layers(first, hosts):
    v1, done, rx, before = first
    assert "no-docker" in before
    done.assert_green()
    manifest = json.loads((v1 / "manifest.json").read_text())
    # the engine holds each image's layers under the chain IDs Ferry computed
    layerdb = set(hosts.sh(HOST, "ls /var/lib/docker/image/overlay2/layerdb/sha256/").split())
    for image in manifest["images"]:
        chains = {c.split(":")[1] for c in chain_ids(l["diff_id"] for l in image["layers"])}
        assert chains <= layerdb, image["ref"]
        assert image["id"] in hosts.sh(HOST, "docker images -q --no-trunc")
    # the store holds the compressed blobs as they were built; the signature came along
    sizes = dict(line.split() for line in hosts.sh(HOST, "cd /opt/ferry/store && stat -c '%n %s' *").splitlines())
    for image in manifest["images"]:
        for layer in image["layers"]:
            assert layer["media"] == "gzip" and int(sizes[layer["blob"].rsplit("/", 1)[1]]) == layer["size"]
    assert hosts.sh(HOST, f"test -s /opt/ferry/bundles/{v1.name}/manifest.json.sig && echo yes").strip() == "yes"
    uploaded = done.reports[0].metric("bytes")
    assert uploaded <= rx <= uploaded * 1.02 + 2_000_000


def test_one_changed_layer_is_all_that_travels(sandbox, hosts, signed, first, tmp_path):
    keys, inventory, dist = signed
    v1 = first[0]
    payload = os.urandom(10_000)                                   # incompressible: ~10 kB gzip'd
    derive_image_with_files("llm-chat-backend:1.0.0", NEW_TAG, {"/app/patch.bin": payload})
    stack = tmp_path / "llm-chat"
    shutil.copytree(STACKS / "llm-chat", stack, ignore=shutil.ignore_patterns("images"))
    text = (stack / "stack.yml").read_text()
    (stack / "stack.yml").write_text(re.sub(r'(?m)^version:.*$', 'version: "1.1.0"', text)
                                     .replace("backend: llm-chat-backend:1.0.0", f"backend: {NEW_TAG}"))
    out = io.StringIO()
    started = time.monotonic()
    v2 = build_bundle(stack, dist, None, UI(Console(file=out, width=200)), role_defaults("install-docker-offline"),
                      sign=keys["release"]).path
    log = out.getvalue()
    print(f"\nbundle v2 in {time.monotonic() - started:.1f}s:\n{log}")
    assert "llm-chat-frontend:1.0.0 (96 MB): unchanged" in log and "nginx:1.22 (76 MB): unchanged" in log
    assert re.search(rf"{re.escape(NEW_TAG)} .*saved, 1 layers compressed", log)   # only the new layer

    m1, m2 = (json.loads((b / "manifest.json").read_text()) for b in (v1, v2))
    old = {f["sha256"] for f in m1["files"]}
    backend = next(i for i in m2["images"] if i["service"] == "backend")
    new_layer = backend["layers"][-1]
    assert len(backend["layers"]) == 2 and new_layer["blob"].rsplit("/", 1)[1] not in old
    # unchanged blobs are the same files as v1's (hard links), not copies
    for f in m2["files"]:
        if f["path"].startswith("blobs/") and f["sha256"] in old:
            assert (v2 / f["path"]).stat().st_ino == (v1 / f["path"]).stat().st_ino

    rx0 = wire_bytes(container_of(sandbox, HOST))[0]
    done = deploy_stack(inventory, HOST, "llm-chat", v2).assert_green()
    rx = wire_bytes(container_of(sandbox, HOST))[0] - rx0
    upload = next(r for name, r, _ in done.reports[0].results if name == "upload-bundle")
    by_sha = {f["sha256"]: f for f in m2["files"]}
    expected = {backend["config"], new_layer["blob"], "stack/stack.yml"}
    sent_listed = {f["path"] for f in m2["files"] if f["sha256"] not in old}
    assert sent_listed == expected                               # of the listed files, only these were new
    extra = sum((v2 / n).stat().st_size for n in ("manifest.json", "checksums.sha256", "manifest.json.sig"))
    assert upload.metrics["bytes"] == sum(by_sha[s]["size"] for s in by_sha if s not in old) + extra
    print(f"one-layer change: layer {new_layer['size']} B (gzip), uploaded {upload.metrics['bytes']} B, "
          f"host received {rx} B for the whole deploy ({rx / new_layer['size']:.1f}x the layer)")
    assert rx <= upload.metrics["bytes"] + 256_000           # the rest of the deploy: commands and answers
    # the new layer is in the running backend
    got = hosts.sh(HOST, "docker exec llm-chat-backend-1 python3 -c "
                         "\"import hashlib;print(hashlib.sha256(open('/app/patch.bin','rb').read()).hexdigest())\"")
    assert got.strip() == __import__("hashlib").sha256(payload).hexdigest()
    assert http(f"http://{hosts.ip(HOST)}/api/health")[0] == 200
