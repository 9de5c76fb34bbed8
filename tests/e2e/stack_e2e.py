"""Helpers of the seed-stack end-to-end tests (``test_stack_*.py``): bundle a stack,
deploy it with the real engine (``ferry.actions.deploy.prepare``/``deploy``) onto a sandbox
host, and look at the host over Ferry's verified SSH transport.

Hosts: each test module claims the ones it uses in a known state (``pytest.mark.hosts``,
see ``conftest.py``): chatgpt-on-wechat (80, 443, 81, 444), corp-wechat-gptbot
(50008) and uni-load (3001, 8000, 8080) use sandbox-2; xiaozhi-esp32-server (8000,
8002, 8003) and the stack added from a folder (8088) sandbox-3.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from devkit.images import build_bundle
from ferry.actions.deploy import deploy, prepare, summary_lines
from ferry.controller.inventory import Inventory
from ferry.roles import role_defaults
from ferry.host.transport.ssh import connect_host
from ferry.ui import UI
from ferry.host.verify import infra_host

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"


def bundle(stack_dir: Path, dist: Path, version: str | None = None, base: Path | None = None) -> Path:
    """Build the bundle of ``stack_dir`` into ``dist``. With ``base`` (an earlier bundle
    of the same images), its image tarballs are reused (hard links), as ``inv bundle``
    does when rebuilding in place: only the stack definition differs."""
    dist.mkdir(parents=True, exist_ok=True)
    if base is not None:
        target = dist / f"{json.loads((base / 'manifest.json').read_text())['stack']}-{version or base.name.rsplit('-', 1)[1]}"
        if not target.exists():
            shutil.copytree(base, target, copy_function=os.link)
    b = build_bundle(stack_dir, dist, version, UI(Console(file=io.StringIO())),
                     docker_settings=role_defaults("install-docker-offline"))
    return b.path


def inv_cli(*args: str, timeout: float = 900, columns: int = 200, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (``inv ...``) from the repository root, its output piped
    (a terminal of ``columns`` for rich). With ``input`` (text on its stdin) it runs in a
    new session, without a controlling terminal, so a prompt (``--ask-become-pass``)
    reads stdin as it would in a pipe."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": str(columns)},
                          input=input, start_new_session=input is not None)


def logins(sandbox, name: str) -> int:
    """SSH logins the host's sshd accepted so far (read with docker exec, not SSH)."""
    container = next(h.container for h in sandbox.hosts if h.name == name)
    out = subprocess.run(["docker", "exec", container, "sh", "-c",
                          "journalctl -u ssh.service --no-pager -o cat | grep -c 'Accepted publickey' || true"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


class Deployed:
    """One deploy's outcome: host reports, console output, wall seconds."""

    def __init__(self, reports, out: str, seconds: float):
        self.reports, self.out, self.seconds = reports, out, seconds

    @property
    def summary(self) -> str:
        return "\n".join(summary_lines(self.reports))

    def assert_green(self) -> "Deployed":
        """No host error and every verification check passed."""
        assert self.reports and not any(r.error for r in self.reports), self.out[-4000:]
        bad = [c for r in self.reports for c in r.checks if not c.ok]
        assert not bad and all(r.checks for r in self.reports), bad or self.out[-4000:]
        return self


def deploy_stack(inventory: Path, host: str, stack: str, bundle_dir: Path, sets: dict[str, Any] | None = None) -> Deployed:
    """``inv deploy --host HOST --stack STACK --bundle DIR`` through the engine's API."""
    out = io.StringIO()
    started = time.monotonic()
    plan = prepare(inventory, host, stack, bundle_dir, bundle_dir.parent, sets or {})
    reports = deploy(plan, UI(Console(file=out, width=200)))
    return Deployed(reports, out.getvalue(), time.monotonic() - started)


class Hosts:
    """SSH and testinfra access to the sandbox hosts (Ferry's verified transport)."""

    def __init__(self, inventory: Path):
        self.inv = Inventory(inventory)
        self._t: dict[str, Any] = {}

    def t(self, name: str):
        """The host's connection, opened again if it was lost (an SSH-loss test kills
        every session of the host, this one's too)."""
        if name not in self._t or not self._t[name].alive:
            self._t[name] = connect_host(self.inv.hosts[name], self.inv)
        return self._t[name]

    def host(self, name: str):
        return infra_host(self.t(name))

    def sh(self, name: str, script: str) -> str:
        return self.t(name).run(["sh", "-c", script]).out

    def ip(self, name: str) -> str:
        return self.inv.hosts[name].vars["ansible_host"]

    def containers(self, name: str, project: str) -> dict[str, tuple[str, str]]:
        """service -> (container ID, State.StartedAt) of a Compose project on a host."""
        out = self.sh(name, f"docker ps -aq --filter label=com.docker.compose.project={project} | "
                            "xargs -r docker inspect --format "
                            "'{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} {{.State.StartedAt}}'")
        return {l.split()[0]: (l.split()[1], l.split()[2]) for l in out.splitlines() if l.strip()}

    def state(self, name: str) -> str:
        """Everything a deploy could change on a host, as one comparable string."""
        return self.sh(name, "ls -la /opt/ferry/store 2>/dev/null | sort; ls -l /opt/ferry/stacks/*/current 2>/dev/null; "
                             "command -v docker >/dev/null && docker ps -aq --no-trunc | sort; true")


def http(url: str, data: bytes | None = None, headers: dict | None = None, tries: int = 20) -> tuple[int, bytes]:
    """``(status, body)`` of a request from the controller, retried while the port
    refuses (a container that just became healthy may still be binding)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def changed_services(before: dict, after: dict) -> set[str]:
    """Services whose container ID or start time differs (recreated or restarted)."""
    return {s for s in set(before) | set(after) if before.get(s) != after.get(s)}


def stack_fixtures(stack: str, host: str, sets: dict[str, Any] | None = None):
    """Module-scoped fixtures ``(hosts, stack_bundle, first)`` for one stack's test
    module: a :class:`Hosts`, the stack's bundle built into a fresh dist dir, and its
    first deploy onto ``host`` with ``sets`` (a :class:`Deployed`). Bind them to those
    names in the test module: ``hosts, stack_bundle, first = stack_fixtures(...)``."""
    import pytest

    @pytest.fixture(scope="module")
    def hosts(sandbox):
        return Hosts(sandbox.inventory)

    @pytest.fixture(scope="module")
    def stack_bundle(tmp_path_factory):
        return bundle(STACKS / stack, tmp_path_factory.mktemp(f"dist-{stack}"))

    @pytest.fixture(scope="module")
    def first(sandbox, hosts, stack_bundle):
        return deploy_stack(sandbox.inventory, host, stack, stack_bundle, sets)

    return hosts, stack_bundle, first


def assert_noop_redeploy(inventory: Path, hosts: Hosts, host: str, stack: str, bundle_dir: Path,
                         sets: dict[str, Any] | None = None) -> Deployed:
    """Deploy again with the same input: green, nothing uploaded, loaded or recreated,
    the same containers with the same start times."""
    before = hosts.containers(host, stack)
    again = deploy_stack(inventory, host, stack, bundle_dir, sets).assert_green()
    print(f"\n{stack} no-op deploy: {again.seconds:.1f}s")
    assert f"{host}: uploaded 0 B, loaded 0 images, recreated 0 containers; nothing changed" in again.summary
    assert hosts.containers(host, stack) == before
    return again


# -- signed bundles, SSH logins, bytes on the wire ---------------------------------------

def signing_keys(d: Path) -> dict[str, Path]:
    """Two ed25519 key pairs in ``d`` (``release``, ``intruder``) and an allowed-signers
    file naming only ``release`` (``signers``)."""
    out = {}
    for name in ("release", "intruder"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / name)], check=True)
        out[name] = d / name
    (d / "allowed_signers").write_text(f"release@example.org {(d / 'release.pub').read_text()}")
    out["signers"] = d / "allowed_signers"
    return out


def inventory_with_signers(sandbox, d: Path, signers: Path) -> Path:
    """A copy of the sandbox inventory in ``d`` with ``ferry_bundle_signers`` set for
    every host (the allowed-signers file copied next to it)."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy(sandbox.state_dir / f, d / f)
    shutil.copy(signers, d / "allowed_signers")
    data["all"]["vars"]["ferry_bundle_signers"] = "allowed_signers"
    p = d / "inventory.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def container_of(sandbox, name: str) -> str:
    """The Docker container of sandbox host ``name``."""
    return next(h.container for h in sandbox.hosts if h.name == name)


def logins(sandbox, name: str) -> int:
    """SSH logins the host's sshd accepted so far (read with docker exec, not SSH)."""
    out = subprocess.run(["docker", "exec", container_of(sandbox, name), "sh", "-c",
                          "journalctl -u ssh.service --no-pager -o cat | grep -c 'Accepted publickey' || true"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)
