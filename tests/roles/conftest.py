"""Fixtures for role tests: a small real bundle on disk, a captured console, contexts."""

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ferry.controller.bundle import CHECKSUMS, MANIFEST, load_bundle
from ferry.controller.inventory import merge_vars
from ferry.model.paths import HostPaths
from ferry.roles import RoleContext, all_role_defaults
from ferry.ui import UI

LLM_CHAT = Path(__file__).resolve().parents[2] / "stacks" / "llm-chat"


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "llm-chat-1.0.0"
    files = {
        "images/llm-chat-backend_1.0.0.tar": b"backend layers" * 100,
        "images/nginx_1.22.tar": b"nginx layers" * 100,
        "docker/debs/docker.io_20.10.24_amd64.deb": b"deb",
        "docker/debs/containerd_1.6.20_amd64.deb": b"deb2",
        "docker/docker-compose": b"ELF",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    shutil.copytree(LLM_CHAT, root / "stack", ignore=shutil.ignore_patterns("images"))
    entries = [{"path": p.relative_to(root).as_posix(), "size": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
               for p in sorted(root.rglob("*")) if p.is_file()]
    manifest = {"format": 1, "stack": "llm-chat", "version": "1.0.0", "created": "x", "created_by": "t",
                "docker": {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64",
                           "packages": {"docker.io": "20.10.24", "containerd": "1.6.20"}},
                "images": [{"service": "backend", "ref": "llm-chat-backend:1.0.0", "id": "sha256:" + "b" * 64,
                            "tags": ["llm-chat-backend:1.0.0"], "size": 1, "file": "images/llm-chat-backend_1.0.0.tar"},
                           {"service": "nginx", "ref": "nginx:1.22", "id": "sha256:" + "e" * 64,
                            "tags": ["nginx:1.22"], "size": 1, "file": "images/nginx_1.22.tar"}],
                "files": entries}
    (root / MANIFEST).write_text(json.dumps(manifest))
    (root / CHECKSUMS).write_text("".join(f"{e['sha256']}  {e['path']}\n" for e in entries))
    return load_bundle(root)


@pytest.fixture
def out():
    return io.StringIO()


@pytest.fixture
def make_ctx(bundle, out):
    def make(transport, check=False, **over):
        stack = bundle.stack()
        v = merge_vars(all_role_defaults(), stack.defaults, over)
        ui = UI(Console(file=out, width=200, force_terminal=False))
        return RoleContext(transport.host, transport, v, bundle, stack,
                           HostPaths("/opt/ferry", stack.name, bundle.name), ui, check)
    return make
