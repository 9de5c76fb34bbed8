"""Roles against a fake transport: decisions, idempotence, check mode, refusals."""

import io
import json
import tarfile

import pytest

from ferry.errors import HostError
from ferry.roles import load_role
from ferry.host.transport.fake import FakeTransport

MUTATING_SCRIPT = ("cat > ", "ln -sfn", "tar --no-same", "mv -T")
MUTATING_ARGV0 = ("systemctl", "install", "env", "apt-get")


def mutations(t):
    """Calls that change a host: package installs, unit changes, writes, loads, links."""
    return [c.argv for c in t.calls
            if c.streamed or c.argv[0] in MUTATING_ARGV0 or c.argv[:2] in (["docker", "load"], ["docker", "tag"])
            or (c.argv[0] == "sh" and any(m in c.argv[-1] for m in MUTATING_SCRIPT))]


# -- upload-bundle ---------------------------------------------------------------------

def test_upload_sends_only_missing_files_in_one_stream_and_links(bundle, make_ctx):
    files = bundle.all_files()
    have = {f["sha256"] for f in files if not f["path"].startswith("images/")}
    received = {}

    def host(argv, data):
        script = argv[-1]
        if "find" in script and "-type f" in script:
            return 0, "\n".join(have), ""
        if "find" in script and "-type l" in script:
            return 0, "", ""
        if "while read -r sha size" in script:      # the receiver: parse the stream
            view = memoryview(data)
            while True:
                nl = bytes(view[:80]).index(b"\n")
                sha, size = bytes(view[:nl]).decode().split()
                view = view[nl + 1:]
                if sha == "END":
                    return 0, "", ""
                received[sha] = bytes(view[:int(size)])
                view = view[int(size):]
        if "ln -sfn" in script:
            return 0, "", ""
        raise AssertionError(argv)
    t = FakeTransport(host)
    result = load_role("upload-bundle").run(make_ctx(t))
    assert len([c for c in t.calls if c.streamed]) == 1
    images = [f for f in files if f["path"].startswith("images/")]
    assert received == {f["sha256"]: (bundle.path / f["path"]).read_bytes() for f in images}
    assert result.changed and result.metrics["files"] == 2
    assert result.metrics["bytes"] == sum(f["size"] for f in images)


def test_upload_reports_the_file_the_host_rejected(bundle, make_ctx):
    files = bundle.all_files()
    victim = next(f for f in files if f["path"].startswith("images/nginx"))

    def host(argv, data):
        if "while read -r sha size" in argv[-1]:
            return 3, "", f"sha256 mismatch after transfer: {victim['sha256']}\n"
        return 0, "", ""
    with pytest.raises(HostError, match="images/nginx_1.22.tar.*mismatch"):
        load_role("upload-bundle").run(make_ctx(FakeTransport(host)))


def test_upload_is_a_noop_when_store_and_links_are_complete(bundle, make_ctx):
    files = bundle.all_files()
    links = "\n".join(f"{f['path']} /opt/ferry/store/{f['sha256']}" for f in files)

    def host(argv, data):
        return 0, ("\n".join(f["sha256"] for f in files) if "-type f" in argv[-1] else links), ""
    t = FakeTransport(host)
    result = load_role("upload-bundle").run(make_ctx(t))
    assert not result.changed and result.metrics["bytes"] == 0
    assert len(t.calls) == 2 and not mutations(t)


def test_upload_check_mode_sends_nothing(bundle, make_ctx):
    t = FakeTransport(lambda argv, data: (0, "", ""))
    result = load_role("upload-bundle").run(make_ctx(t, check=True))
    assert result.changed and "would upload" in result.summary
    assert not [c for c in t.calls if c.streamed] and not mutations(t)


# -- load-images -----------------------------------------------------------------------

def test_load_images_loads_only_missing_ids_and_retags(bundle, make_ctx):
    state = {"images": "sha256:" + "e" * 64 + "\tnginx:old\n"}

    def host(argv, data):
        if argv[:2] == ["docker", "images"]:
            return 0, state["images"], ""
        if argv[:2] == ["docker", "load"]:
            state["images"] += "sha256:" + "b" * 64 + "\tllm-chat-backend:1.0.0\n"
            return 0, "Loaded image", ""
        if argv[:2] == ["docker", "tag"]:
            return 0, "", ""
        raise AssertionError(argv)
    t = FakeTransport(host)
    result = load_role("load-images").run(make_ctx(t))
    loads = [c for c in t.commands() if c[:2] == ["docker", "load"]]
    assert loads == [["docker", "load", "-q", "-i",
                      "/opt/ferry/bundles/llm-chat-1.0.0/images/llm-chat-backend_1.0.0.tar"]]
    assert ["docker", "tag", "sha256:" + "e" * 64, "nginx:1.22"] in t.commands()
    assert result.metrics["images_loaded"] == 1


def test_load_images_fails_when_the_id_does_not_appear(bundle, make_ctx):
    t = FakeTransport(lambda argv, data: (0, "", ""))
    with pytest.raises(HostError, match="absent after docker load"):
        load_role("load-images").run(make_ctx(t))


# -- render-config ---------------------------------------------------------------------

class ConfigHost:
    """Plays a host's stack dir: serves current release files, records written tars."""

    def __init__(self):
        self.files = {}      # path relative to stack dir -> bytes
        self.current = None
        self.written = None  # the release directory render-config wrote last

    def activated(self, result):
        """Play compose-up's switch after render-config (which never switches itself)."""
        if self.written:
            self.current, self.written = self.written, None
        return result

    def tar_of(self, names):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for n in names:
                real = n.replace("current/", f"{self.current}/", 1) if self.current else n
                if real in self.files:
                    info = tarfile.TarInfo(n)
                    info.size = len(self.files[real])
                    tar.addfile(info, io.BytesIO(self.files[real]))
        return buf.getvalue()

    def __call__(self, argv, data):
        script = argv[-1]
        if "tar -chf" in script:
            names = [n for n in ["current/compose.yml", "current/.env", "current/nginx.conf",
                                 "current/release.json", "secrets.json"]]
            return 0, self.tar_of(names), ""
        if "tar --no-same-owner" in script:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar:
                    if m.name.startswith("releases/"):
                        self.written = "/".join(m.name.split("/")[:2])
                    self.files[m.name] = tar.extractfile(m).read()
                    self.files[m.name + ":mode"] = oct(m.mode).encode()
            return 0, "", ""
        raise AssertionError(argv)


def test_render_first_deploy_writes_release_with_secret_0600(bundle, make_ctx, out):
    host = ConfigHost()
    t = FakeTransport(host)
    result = load_role("render-config").run(make_ctx(t, llm_api_key="sk-verysecret"))
    assert result.changed and host.current is None        # written, not switched: compose-up does that
    host.activated(result)
    assert host.current.startswith("releases/")
    env = host.files[f"{host.current}/.env"]
    assert host.files[f"{host.current}/.env:mode"] == b"0o600"
    assert host.files[f"{host.current}/nginx.conf:mode"] == b"0o644"
    assert host.files["secrets.json:mode"] == b"0o600"
    secret_key = json.loads(host.files["secrets.json"])["SECRET_KEY"]
    assert len(secret_key) == 64 and secret_key.encode() in env
    assert "sk-verysecret" not in out.getvalue() and secret_key not in out.getvalue()


def test_render_second_time_is_noop_and_secret_is_kept(bundle, make_ctx):
    host = ConfigHost()
    host.activated(load_role("render-config").run(make_ctx(FakeTransport(host))))
    first = host.current
    key = json.loads(host.files["secrets.json"])["SECRET_KEY"]
    t = FakeTransport(host)
    result = load_role("render-config").run(make_ctx(t))
    assert not result.changed and host.current == first and len(t.calls) == 1
    json_after = json.loads(host.files["secrets.json"])["SECRET_KEY"]
    assert json_after == key


def test_render_var_change_shows_changed_key_not_value(bundle, make_ctx, out):
    host = ConfigHost()
    host.activated(load_role("render-config").run(make_ctx(FakeTransport(host))))
    result = load_role("render-config").run(make_ctx(FakeTransport(host), llm_model="qwen2-72b"))
    assert result.changed and result.metrics["files_changed"] == 1
    assert "changed keys: LLM_MODEL" in out.getvalue() and "qwen2-72b" not in out.getvalue()
    host.activated(result)
    assert b"LLM_MODEL='qwen2-72b'" in host.files[f"{host.current}/.env"]
