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
