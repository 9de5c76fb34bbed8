"""render-config with a stack's static files (``files/`` in stack.yml), against the fake
transport: shipped in the release with their modes and LF line endings, read back so
that an unchanged deploy writes nothing, and diffed when they change."""

import io
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ferry.controller.bundle import load_bundle
from ferry.controller.inventory import merge_vars
from ferry.model.paths import HostPaths
from ferry.roles import RoleContext, all_role_defaults, load_role
from ferry.host.transport.fake import FakeTransport
from ferry.ui import UI
from test_roles_fake import ConfigHost

XIAOZHI = Path(__file__).resolve().parents[2] / "stacks" / "xiaozhi-esp32-server"
PLUGIN = "plugins_func/functions/get_weather.py"


class StackDirHost(ConfigHost):
    """ConfigHost that answers the read_tar fact with exactly the files asked for."""

    def __call__(self, argv, data):
        script = argv[-1]
        if "tar -chf" in script:
            return 0, self.tar_of(shlex.split(script.split("for f in ", 1)[1].split("; do", 1)[0])), ""
        return super().__call__(argv, data)

    def release_file(self, rel):
        """``(bytes, mode)`` of a file of the current release."""
        path = f"{self.current}/{rel}"
        return self.files[path], int(self.files[path + ":mode"], 8)


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "xiaozhi-esp32-server-1.0.0"
    shutil.copytree(XIAOZHI, root / "stack", ignore=shutil.ignore_patterns("images"))
    plugin = root / "stack" / "files" / PLUGIN
    plugin.write_bytes(plugin.read_bytes().replace(b"\n", b"\r\n"))            # saved on Windows
    os.chmod(root / "stack" / "files" / "plugins_func" / "register.py", 0o755)
    (root / "manifest.json").write_text(json.dumps({"format": 1, "stack": "xiaozhi-esp32-server", "version": "1.0.0",
                                                    "files": [], "images": [],
                                                    "docker": {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64", "packages": {"docker.io": "20.10.24"}}}))
    return load_bundle(root)


def run(bundle, host, out=None):
    stack = bundle.stack()
    ui = UI(Console(file=out or io.StringIO(), width=200))
    ctx = RoleContext("fake-1", FakeTransport(host), merge_vars(all_role_defaults(), stack.defaults,
                                                                  {"ansible_host": "10.0.0.3"}),
                      bundle, stack, HostPaths("/opt/ferry", stack.name, bundle.name), ui)
    return host.activated(load_role("render-config").run(ctx))


def test_static_files_travel_in_the_release_with_lf_and_modes(bundle):
    host = StackDirHost()
    assert run(bundle, host).changed
    data, mode = host.release_file(PLUGIN)
    assert b"\r" not in data and b"def get_weather" in data and mode == 0o644
    assert host.release_file("plugins_func/register.py")[1] == 0o755
    assert host.release_file("data/.config.yaml")[1] == 0o600
    assert host.release_file("core/providers/intent/intent_llm/intent_llm.py")[0].startswith(b'"""Intent provider')


def test_unchanged_static_files_write_nothing_and_a_change_is_diffed(bundle):
    host = StackDirHost()
    run(bundle, host)
    first = host.current
    again = run(bundle, host)
    assert not again.changed and host.current == first
    plugin = bundle.path / "stack" / "files" / PLUGIN
    plugin.write_bytes(plugin.read_bytes().replace("晴".encode(), "雨".encode()))
    out = io.StringIO()
    changed = run(bundle, host, out)
    # the plugin, and compose.yml whose digest label for the server changed with it
    assert changed.changed and changed.metrics["files_changed"] == 2
    assert changed.summary.endswith(f"compose.yml, {PLUGIN}")
    assert "雨" in out.getvalue() and "雨".encode() in host.release_file(PLUGIN)[0]
