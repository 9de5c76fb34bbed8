"""upload-bundle and load-images against a fake host: facts in, exact commands out.

:class:`DockerHost` plays a host from its facts (store files, bundle links, the engine's
images with their layers, installed packages, Docker and Compose versions) and answers
every command these roles send by the builders' own text, so a test states the facts
and asserts exactly what went over the wire and what the host holds afterwards."""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest

from conftest import BLOB, CONFIG, DIFF, IMAGE_ID, sha
from ferry.errors import HostError
from ferry.host import containers, files
from ferry.host.facts import prefetched
from ferry.host.transport.fake import FakeTransport
from ferry.roles import load_role

BASE_FACTS = ("machine=x86_64\nkernel=6.1.0-18-amd64\nos=Debian GNU/Linux 12 (bookworm)\ndpkg_arch=amd64\n"
              "systemd=yes\ncgroup=hybrid\ntar=/usr/bin/tar\ngzip=/usr/bin/gzip\n")
FRESH = BASE_FACTS
READY = BASE_FACTS + ("dockerd=Docker version 20.10.24+dfsg1, build 5d6db84\ncompose=2.40.3\n"
                      "docker_active=active\ncontainerd_active=active\n")
OLD_ENGINE = READY.replace("20.10.24+dfsg1", "20.10.5+dfsg1")
STORE = "/opt/ferry/store"
BUNDLE_DIR = "/opt/ferry/bundles/llm-chat-1.0.0"


class DockerHost:
    """A host as facts; records what it received."""

    def __init__(self, facts=FRESH, packages=None, images=None, store=None):
        self.facts = facts
        self.packages = packages or {}                    # name -> version (installed)
        self.images = dict(images or {})                  # id -> (tags, diff_ids)
        self.store = dict(store or {})                    # sha -> bytes
        self.links: dict[str, str] = {}
        self.received: list[str] = []                     # sha256 streamed, in order
        self.loaded: list[dict] = []                      # docker load manifests
        self.checked: list[str] = []                      # store re-check scripts run

    def engine_lines(self) -> str:
        return "".join(f"{i}\t{json.dumps(sorted(t))}\t{json.dumps(d)}\n" for i, (t, d) in self.images.items())

    def __call__(self, argv, data):
        script = argv[-1] if argv[0] == "sh" else ""
        if script.startswith("d=$(mktemp -d) || exit 70"):      # a ferry.host.batch: answer each, framed
            out = b""
            words = shlex.split(script)
            commands = [words[k + 3] for k in range(len(words) - 3) if words[k:k + 3] == ["(", "sh", "-c"]]
            for i, command in enumerate(commands):
                rc, o, e = self(shlex.split(command), b"")
                o, e = (x.encode() if isinstance(x, str) else x for x in (o, e))
                out += f"==ferry-batch {i} {rc} {len(o)} {len(e)}\n".encode() + o + e
            return 0, out, ""
        if argv == files.list_dir(STORE):
            return 0, "\n".join(self.store), ""
        if argv == files.list_links(BUNDLE_DIR):
            return 0, "".join(f"{k} {v}\n" for k, v in self.links.items()), ""
        if argv == containers.engine_images():
            return 0, self.engine_lines(), ""
        if "v machine" in script:                         # install-docker-offline's one fact script
            return 0, self.facts + "".join(f"pkg={n} {v} ii \n" for n, v in self.packages.items()), ""
        if argv == files.receive_files(STORE, BUNDLE_DIR):
            return self.receive(data)
        if "HASH" not in script and script.startswith("if command -v openssl") and "damaged" in script:
            self.checked.append(script)
            out = ""
            words = shlex.split(script.split("set -- ", 1)[1].split(";", 1)[0])
            for s_, size in zip(words[::2], words[1::2]):
                if s_ not in self.store:
                    out += f"{s_} missing\n"
                elif hashlib.sha256(self.store[s_]).hexdigest() != s_ or len(self.store[s_]) != int(size):
                    del self.store[s_]
                    out += f"{s_} damaged\n"
            return 0, out, ""
        if "ln -sfn" in script or script.startswith("set -e; rm -f -- "):
            for part in script.split("; "):
                words = shlex.split(part)
                if words[:2] == ["ln", "-sfn"]:
                    self.links[words[3].removeprefix(BUNDLE_DIR + "/")] = words[2]
                if words[:3] == ["rm", "-f", "--"]:
                    for w in words[3:]:
                        self.links.pop(w.removeprefix(BUNDLE_DIR + "/"), None)
            return 0, "", ""
        if "docker load -q" in script:
            return self.load(argv, data)
        if argv[:2] == ["docker", "tag"]:
            tags, diffs = self.images[argv[2]]
            self.images[argv[2]] = (tags | {argv[3]}, diffs)
            return 0, "", ""
        raise AssertionError(f"unexpected command: {argv}")

    def receive(self, data: bytes):
        view = memoryview(data)
        while True:
            nl = bytes(view[:80]).index(b"\n")
            s, size = bytes(view[:nl]).decode().split()
            view = view[nl + 1:]
            if s == "END":
                for line in bytes(view).decode().splitlines():     # the bundle's links
                    words = line.split()
                    if words[0] == "LINK":
                        self.links[words[2]] = f"{STORE}/{words[1]}"
                    else:
                        self.links.pop(words[1], None)
                return 0, "", ""
            body = bytes(view[:int(size)])
            view = view[int(size):]
            if hashlib.sha256(body).hexdigest() != s:
                return 3, "", f"sha256 mismatch after transfer: {s}\n"
            self.store[s] = body
            self.received.append(s)

    def load(self, argv, data):
        manifest = json.loads(data)
        self.loaded.append(manifest)
        have = {c for _, d in self.images.values() for c in _chains(d)}
        for image in manifest:
            config = json.loads(self.store[image["Config"]])
            diffs = config["rootfs"]["diff_ids"]
            for blob, chain in zip(image["Layers"], _chains(diffs)):
                if chain not in have:
                    assert blob in self.store and blob in argv[-1], f"layer {blob} not in the archive"
                    have.add(chain)
            self.images["sha256:" + image["Config"]] = (set(image["RepoTags"]), diffs)
        return 0, "Loaded image: x\n", ""


def _chains(diffs):
    from ferry.model.imagelayers import chain_ids
    return chain_ids(diffs)


def blob(name):
    return sha(BLOB[name])


def streamed(t):
    return [c for c in t.calls if c.streamed]


def test_fresh_host_gets_everything_in_one_stream_and_every_link(bundle, make_ctx):
    host = DockerHost()
    t = FakeTransport(host)
    result = load_role("upload-bundle").run(make_ctx(t))
    assert len(streamed(t)) == 1
    assert set(host.received) == {f["sha256"] for f in bundle.all_files()}
    assert set(host.links) == {f["path"] for f in bundle.all_files()}
    assert all(v == f"{STORE}/{bundle_sha}" for k, v in host.links.items()
               for bundle_sha in [next(f["sha256"] for f in bundle.all_files() if f["path"] == k)])
    assert result.metrics["bytes"] == sum({f["sha256"]: f["size"] for f in bundle.all_files()}.values())


def test_host_running_the_bundles_docker_gets_no_installer_and_only_missing_layers(bundle, make_ctx):
    # the exact engine and Compose run; nginx is loaded; the backend's base layer is in
    # the engine through another image
    host = DockerHost(READY, packages={"docker.io": "20.10.24", "containerd": "1.6.20"}, images={
        IMAGE_ID["nginx"]: ({"nginx:1.22"}, [DIFF["nginx"]]),
        "sha256:" + "c" * 64: ({"other:1"}, [DIFF["base"]]),
    })
    t = FakeTransport(host)
    result = load_role("upload-bundle").run(make_ctx(t))
    sent = {next(f["path"] for f in bundle.all_files() if f["sha256"] == s) for s in host.received}
    images = {f"blobs/sha256/{sha(CONFIG['backend'])}", f"blobs/sha256/{blob('app')}"}
    assert {p for p in sent if p.startswith(("blobs/", "docker/"))} == images
    assert {p for p in sent if not p.startswith(("blobs/", "docker/"))} == \
        {f["path"] for f in bundle.all_files() if not f["path"].startswith(("blobs/", "docker/"))}
    assert "installer not needed" in result.summary and "already in Docker" in result.summary
    assert not any(p.startswith("docker/") for p in host.links)      # nothing to link to


def test_an_older_engine_gets_the_installer(bundle, make_ctx):
    host = DockerHost(OLD_ENGINE, packages={"docker.io": "20.10.5", "containerd": "1.6.20"})
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    sent = {next(f["path"] for f in bundle.all_files() if f["sha256"] == s) for s in host.received}
    assert {p for p in sent if p.startswith("docker/")} == {"docker/debs/docker.io_20.10.24_amd64.deb"}


def test_a_damaged_store_file_is_rechecked_and_sent_again(bundle, make_ctx):
    host = DockerHost()
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    host.store[blob("app")] = b"bit rot"                         # damaged on the host's disk
    host.links.clear()
    host.checked.clear()
    t = FakeTransport(host)
    load_role("upload-bundle").run(make_ctx(t))
    assert host.received[-1] == blob("app") and host.store[blob("app")] == BLOB["app"]
    assert len(streamed(t)) == 1 and len(host.checked) == 2           # the batch's check, then the layer's
    assert blob("app") in host.checked[1] and blob("app") not in host.checked[0]


def test_no_op_when_the_host_holds_and_links_everything(bundle, make_ctx):
    host = DockerHost()
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    host.images = {IMAGE_ID["backend"]: ({"llm-chat-backend:1.0.0"}, [DIFF["base"], DIFF["app"]]),
                   IMAGE_ID["nginx"]: ({"nginx:1.22"}, [DIFF["nginx"]])}
    host.facts, host.packages = READY, {"docker.io": "20.10.24", "containerd": "1.6.20"}
    t = FakeTransport(host, unbatch=True)
    ctx = make_ctx(prefetched(t))
    role, installer = load_role("upload-bundle"), load_role("install-docker-offline")
    ctx.t.gather(role.facts(ctx) + installer.facts(ctx))      # as deploy does, with every role's
    result = role.run(ctx)
    assert not result.changed and result.metrics["bytes"] == 0 and not streamed(t)
    # one round trip: store, links, engine images, the re-check of the files every host
    # uses and the installer's fact script, gathered ahead; nothing else
    assert len(t.calls) == 1 and len(t.calls[0].batch) == 5
    rechecked = set(shlex.split(host.checked[-1].split("set -- ", 1)[1].split(";", 1)[0])[::2])
    assert rechecked == {f["sha256"] for f in bundle.all_files()
                         if not f["path"].startswith(("docker/", "blobs/"))}   # no image, no installer


def test_check_mode_sends_and_links_nothing(bundle, make_ctx):
    host = DockerHost()
    t = FakeTransport(host)
    result = load_role("upload-bundle").run(make_ctx(t, check=True))
    assert result.changed and "would upload" in result.summary
    assert not streamed(t) and not host.links and not host.store


def test_upload_names_the_file_the_host_rejected(bundle, make_ctx):
    victim = blob("nginx")

    fake = DockerHost()

    def host(argv, data):
        if argv == files.receive_files(STORE, BUNDLE_DIR):
            return 3, "", f"sha256 mismatch after transfer: {victim}\n"
        return fake(argv, data)
    with pytest.raises(HostError, match=rf"blobs/sha256/{victim}.*mismatch"):
        load_role("upload-bundle").run(make_ctx(FakeTransport(host)))


# -- load-images -------------------------------------------------------------------------

def test_load_streams_one_archive_of_missing_configs_and_layers_from_the_store(bundle, make_ctx):
    host = DockerHost(READY, images={"sha256:" + "c" * 64: ({"other:1"}, [DIFF["base"]]),
                                     IMAGE_ID["nginx"]: ({"nginx:old"}, [DIFF["nginx"]])})
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    t = FakeTransport(host)
    result = load_role("load-images").run(make_ctx(t))
    loads = [c for c in t.calls if "docker load -q" in c.argv[-1]]
    assert [c.argv for c in loads] == [containers.load_blobs(STORE, [sha(CONFIG["backend"]), blob("app")])]
    assert json.loads(loads[0].input) == [{"Config": sha(CONFIG["backend"]), "RepoTags": ["llm-chat-backend:1.0.0"],
                                           "Layers": [blob("base"), blob("app")]}]
    assert ["docker", "tag", IMAGE_ID["nginx"], "nginx:1.22"] in t.commands()
    assert IMAGE_ID["backend"] in host.images and result.metrics["images_loaded"] == 1
    assert "1 taken from the engine" in result.summary


def test_load_is_a_noop_when_every_image_is_there(bundle, make_ctx):
    host = DockerHost(READY, images={IMAGE_ID["backend"]: ({"llm-chat-backend:1.0.0"}, [DIFF["base"], DIFF["app"]]),
                                     IMAGE_ID["nginx"]: ({"nginx:1.22"}, [DIFF["nginx"]])})
    t = FakeTransport(host)
    result = load_role("load-images").run(make_ctx(t))
    assert not result.changed and t.commands() == [containers.engine_images()]


def test_format_1_bundles_still_load_their_tarballs(bundle_v1, make_ctx):
    host = DockerHost(READY)

    def play(argv, data):
        if argv[:2] == ["docker", "load"]:
            image = "backend" if "backend" in argv[-1] else "nginx"
            host.images[IMAGE_ID[image]] = ({f"{image}"}, [])
            return 0, "", ""
        return host(argv, data)
    t = FakeTransport(play)
    result = load_role("load-images").run(make_ctx(t, of=bundle_v1))
    assert [c for c in t.commands() if c[:2] == ["docker", "load"]] == [
        ["docker", "load", "-q", "-i", "/opt/ferry/bundles/llm-chat-0.9.0/images/llm-chat-backend_1.0.0.tar"],
        ["docker", "load", "-q", "-i", "/opt/ferry/bundles/llm-chat-0.9.0/images/nginx_1.22.tar"]]
    assert result.metrics["images_loaded"] == 2


def test_load_fails_when_an_id_does_not_appear(bundle, make_ctx):
    host = DockerHost(READY)
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    host.load = lambda argv, data: (0, "", "")                  # docker load "succeeds", loads nothing
    with pytest.raises(HostError, match="absent after docker load"):
        load_role("load-images").run(make_ctx(FakeTransport(host)))


def test_links_of_an_earlier_build_of_the_same_version_are_removed(bundle, make_ctx):
    host = DockerHost()
    host.links = {"images/llm-chat-backend_1.0.0.tar": f"{STORE}/{'d' * 64}"}    # format 1, same name
    load_role("upload-bundle").run(make_ctx(FakeTransport(host)))
    assert set(host.links) == {f["path"] for f in bundle.all_files()}
