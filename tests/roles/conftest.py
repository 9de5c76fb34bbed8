"""Fixtures for role tests: a small real bundle on disk, a captured console, contexts."""

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ferry.controller.bundle import load_bundle, seal
from ferry.controller.inventory import merge_vars
from ferry.model.paths import HostPaths
from ferry.roles import RoleContext, all_role_defaults
from ferry.ui import UI

LLM_CHAT = Path(__file__).resolve().parents[2] / "stacks" / "llm-chat"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: uncompressed layer tars (their sha256 are the diff IDs) and their stored blobs
BASE, APP, NGINX = b"base layer" * 200, b"app layer" * 50, b"nginx layer" * 300
BLOB = {name: b"gz:" + data for name, data in (("base", BASE), ("app", APP), ("nginx", NGINX))}
DIFF = {"base": "sha256:" + sha(BASE), "app": "sha256:" + sha(APP), "nginx": "sha256:" + sha(NGINX)}
CONFIG = {"backend": json.dumps({"rootfs": {"diff_ids": [DIFF["base"], DIFF["app"]]}}).encode(),
          "nginx": json.dumps({"rootfs": {"diff_ids": [DIFF["nginx"]]}}).encode()}
IMAGE_ID = {k: "sha256:" + sha(v) for k, v in CONFIG.items()}


def _stack_and_docker(root: Path) -> None:
    files = {
        "docker/debs/docker.io_20.10.24_amd64.deb": b"deb",
        "docker/debs/containerd_1.6.20_amd64.deb": b"deb2",
        "docker/docker-compose": b"ELF",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    shutil.copytree(LLM_CHAT, root / "stack", ignore=shutil.ignore_patterns("images"))


DOCKER = {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64",
          "packages": {"docker.io": "20.10.24", "containerd": "1.6.20"}}


@pytest.fixture
def bundle(tmp_path):
    """A format-2 llm-chat bundle: backend (layers base + app) and nginx (one layer),
    blobs "gzip" (stand-in bytes), a small Docker payload."""
    root = tmp_path / "llm-chat-1.0.0"
    _stack_and_docker(root)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in [*BLOB.values(), *CONFIG.values()]:
        (blobs / sha(data)).write_bytes(data)

    def layer(name):
        return {"blob": f"blobs/sha256/{sha(BLOB[name])}", "diff_id": DIFF[name], "media": "gzip",
                "size": len(BLOB[name])}
    images = [{"service": "backend", "ref": "llm-chat-backend:1.0.0", "id": IMAGE_ID["backend"],
               "tags": ["llm-chat-backend:1.0.0"], "size": 1, "config": f"blobs/sha256/{sha(CONFIG['backend'])}",
               "layers": [layer("base"), layer("app")]},
              {"service": "nginx", "ref": "nginx:1.22", "id": IMAGE_ID["nginx"], "tags": ["nginx:1.22"], "size": 1,
               "config": f"blobs/sha256/{sha(CONFIG['nginx'])}", "layers": [layer("nginx")]}]
    seal(root, {"format": 2, "stack": "llm-chat", "version": "1.0.0", "created": "x", "created_by": "t",
                "docker": DOCKER, "images": images})
    return load_bundle(root)


@pytest.fixture
def bundle_v1(tmp_path):
    """The same stack as a format-1 bundle (one docker save tarball per image)."""
    root = tmp_path / "llm-chat-0.9.0"
    _stack_and_docker(root)
    (root / "images").mkdir()
    (root / "images" / "llm-chat-backend_1.0.0.tar").write_bytes(b"backend tar" * 100)
    (root / "images" / "nginx_1.22.tar").write_bytes(b"nginx tar" * 100)
    images = [{"service": "backend", "ref": "llm-chat-backend:1.0.0", "id": IMAGE_ID["backend"],
               "tags": ["llm-chat-backend:1.0.0"], "size": 1, "file": "images/llm-chat-backend_1.0.0.tar"},
              {"service": "nginx", "ref": "nginx:1.22", "id": IMAGE_ID["nginx"], "tags": ["nginx:1.22"],
               "size": 1, "file": "images/nginx_1.22.tar"}]
    seal(root, {"format": 1, "stack": "llm-chat", "version": "0.9.0", "created": "x", "created_by": "t",
                "docker": DOCKER, "images": images})
    return load_bundle(root)


@pytest.fixture
def out():
    return io.StringIO()


@pytest.fixture
def make_ctx(bundle, out):
    """``make(transport, check=False, of=None, **vars)``: a RoleContext for ``bundle``
    (or the bundle ``of``), variables overridden by ``vars``."""
    def make(transport, check=False, of=None, **over):
        b = of or bundle
        stack = b.stack()
        v = merge_vars(all_role_defaults(), stack.defaults, over)
        ui = UI(Console(file=out, width=200, force_terminal=False))
        return RoleContext(transport.host, transport, v, b, stack,
                           HostPaths("/opt/ferry", stack.name, b.name), ui, check)
    return make
