"""End to end: a host deployed by the Ferry of before layer transfer (format-1 bundles:
one ``docker save`` tarball per image in the store) keeps working with this Ferry.

The old state is made by the old code itself: the last commit before the layer change is
extracted with ``git archive`` and run (bundle + deploy of llm-chat 1.0.0) against
sandbox-4. Then this Ferry deploys a format-2 bundle there (its layers are already in the
engine: only a config and the stack files travel), rolls back to the old release, rolls
forward. The OLD bundle itself can no longer be deployed again (its defaults.yml predates
typed variables): refused in one line, nothing changed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from devkit.images import derive_image
from ferry.controller.bundle import build_bundle
from ferry.roles import role_defaults
from ferry.ui import UI
from stack_e2e import ROOT, STACKS, Hosts, deploy_stack, http, inv_cli

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-4", fresh=True)]
HOST = "sandbox-4"
OLD_COMMIT = "9fc6a41"        # main before the reorganisation and layer transfer: format-1 bundles
NEW_TAG = "llm-chat-backend:1.1.0-migration"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


def version_served(hosts) -> str:
    status, body = http(f"http://{hosts.ip(HOST)}/api/health")
    assert status == 200, body
    return json.loads(body)["version"]


@pytest.fixture(scope="module")
def old_deployed(sandbox, tmp_path_factory) -> Path:
    """llm-chat 1.0.0 bundled and deployed by the old Ferry; returns its (format-1) bundle."""
    tmp = tmp_path_factory.mktemp("old-ferry")
    src = tmp / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    code = textwrap.dedent(f"""
        import io, sys
        from pathlib import Path
        from rich.console import Console
        import ferry.images
        ferry.images.build_stack_images = lambda *a, **k: {{}}    # the images exist; never rebuild shared tags
        from ferry.bundle import build_bundle
        from ferry.deploy import deploy, prepare
        from ferry.roles import role_defaults
        from ferry.ui import UI
        out = io.StringIO()
        b = build_bundle(Path("stacks/llm-chat"), Path({str(tmp / 'dist')!r}), None, UI(Console(file=out)),
                         docker_settings=role_defaults("install-docker-offline"))
        plan = prepare(Path({str(sandbox.inventory)!r}), {HOST!r}, "llm-chat", b.path, b.path.parent, {{}})
        reports = deploy(plan, UI(Console(file=out, width=200)))
        print(out.getvalue())
        sys.exit(1 if reports[0].error else 0)
    """)
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, "-c", code], cwd=src, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    bundle = tmp / "dist" / "llm-chat-1.0.0"
    assert json.loads((bundle / "manifest.json").read_text())["format"] == 1
    return bundle


def test_a_host_of_the_old_format_upgrades_rolls_back_and_reloads_old_bundles(sandbox, hosts, old_deployed, tmp_path):
    inv = str(sandbox.inventory)
    assert version_served(hosts) == "1.0.0"
    old_store = set(hosts.sh(HOST, "ls /opt/ferry/store").split())
    assert hosts.sh(HOST, "ls /opt/ferry/bundles/llm-chat-1.0.0/images").split() == \
        ["llm-chat-backend_1.0.0.tar", "llm-chat-frontend_1.0.0.tar", "nginx_1.22.tar"]

    # a format-2 bundle of 1.1.0 (backend config changed, same layers) onto the old host
    derive_image("llm-chat-backend:1.0.0", NEW_TAG, ["ENV APP_VERSION=1.1.0"])
    stack = tmp_path / "llm-chat"
    shutil.copytree(STACKS / "llm-chat", stack, ignore=shutil.ignore_patterns("images"))
    text = (stack / "stack.yml").read_text()
    (stack / "stack.yml").write_text(re.sub(r'(?m)^version:.*$', 'version: "1.1.0"', text)
                                     .replace("backend: llm-chat-backend:1.0.0", f"backend: {NEW_TAG}"))
    v2 = build_bundle(stack, tmp_path / "dist", None, UI(Console(file=io.StringIO())),
                      role_defaults("install-docker-offline")).path
    done = deploy_stack(sandbox.inventory, HOST, "llm-chat", v2).assert_green()
    upload = next(r for name, r, _ in done.reports[0].results if name == "upload-bundle")
    assert upload.metrics["bytes"] < 200_000, upload.summary      # layers came from the old docker load
    assert "installer not needed" in upload.summary
    assert version_served(hosts) == "1.1.0"

    # back to the release the old Ferry wrote, then forward again
    r = inv_cli("rollback", "--host", HOST, "-i", inv)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert version_served(hosts) == "1.0.0"
    deploy_stack(sandbox.inventory, HOST, "llm-chat", v2).assert_green()
    assert version_served(hosts) == "1.1.0"
    assert old_store <= set(hosts.sh(HOST, "ls /opt/ferry/store").split())    # old tarballs kept (still linked)

    # the old bundle itself predates typed variables (its stack/defaults.yml holds plain
    # values): deploying it again is refused in one line naming that file, before any
    # host changes; what the host runs and its old tarballs stay as they were
    current = hosts.sh(HOST, "readlink /opt/ferry/stacks/llm-chat/current")
    r = inv_cli("deploy", "--host", HOST, "--stack", "llm-chat", "--bundle", str(old_deployed), "-i", inv)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert "llm-chat-1.0.0/stack/defaults.yml: key 'llm_api_url'" in r.stdout + r.stderr
    assert hosts.sh(HOST, "readlink /opt/ferry/stacks/llm-chat/current") == current
    assert version_served(hosts) == "1.1.0"
    assert old_store <= set(hosts.sh(HOST, "ls /opt/ferry/store").split())
