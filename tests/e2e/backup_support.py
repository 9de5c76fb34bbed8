"""Helpers shared by the backup end-to-end tests (test_backup_*.py)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from devkit.images import build_bundle
from ferry.actions.deploy import deploy, prepare
from ferry.model.backup import Manifest, parse_manifest
from ferry.roles import role_defaults
from ferry.ui import UI

from test_deploy_llm_chat import Hosts, inv_cli  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[2]
DBTEST = ROOT / "tests" / "e2e" / "stacks" / "dbtest"


def deploy_stack(inventory: Path, pattern: str, stack_dir: Path, dist: Path) -> str:
    """Bundle ``stack_dir`` into ``dist`` and deploy it with ferry.actions.deploy; returns the
    console output. Asserts every host deployed and verified."""
    quiet = UI(Console(file=io.StringIO()))
    bundle = build_bundle(stack_dir, dist, None, quiet, docker_settings=role_defaults("install-docker-offline"))
    out = io.StringIO()
    plan = prepare(inventory, pattern, bundle.stack_name, bundle.path, dist, {})
    reports = deploy(plan, UI(Console(file=out, width=200)))
    assert all(not r.error and all(c.ok for c in r.checks) for r in reports), out.getvalue()
    return out.getvalue()


class BackupHost:
    """A sandbox host and one stack's backup files on it."""

    def __init__(self, hosts: Hosts, name: str, stack: str):
        self.hosts, self.name, self.stack = hosts, name, stack
        self.dir = f"/var/backups/ferry/{stack}"
        self.script = f"/opt/ferry/stacks/{stack}/ferry-backup"

    def sh(self, script: str) -> str:
        return self.hosts.sh(self.name, script)

    def run(self, script: str):
        return self.hosts.t(self.name).run(["sh", "-c", script], check=False)

    def files(self) -> list[str]:
        """Every file in the backup dir (sorted names)."""
        return sorted(self.sh(f"ls -1A {self.dir} 2>/dev/null || true").split())

    def good_ids(self) -> list[str]:
        return sorted(f[: -len(".ferry-backup.tar.sha256")] for f in self.files()
                      if f.endswith(".ferry-backup.tar.sha256"))

    def manifest(self, backup_id: str) -> Manifest:
        """The archive's manifest (format 2: manifest.tsv), parsed by Ferry's parser."""
        return parse_manifest(self.sh(f"tar -xOf {self.dir}/{backup_id}.ferry-backup.tar manifest.tsv"))

    def retention_expected(self, ids: list[str], last: int, daily: int, weekly: int) -> set[str]:
        """What the host program's retention keeps of ``ids`` (asked of the program itself)."""
        out = self.sh(f"printf '%s\\n' {' '.join(ids)} | {self.script} retention-keep {last} {daily} {weekly}")
        return set(out.split())

    def containers(self) -> dict[str, tuple[str, str, str]]:
        """service -> (container id, started at, status) of the stack's containers."""
        out = self.sh(f"docker ps -aq --filter label=com.docker.compose.project={self.stack} | xargs -r docker inspect "
                      "--format '{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} "
                      "{{.State.StartedAt}} {{.State.Status}}'")
        return {l.split()[0]: tuple(l.split()[1:4]) for l in out.splitlines() if l.strip()}

    def state(self) -> tuple:
        """What a refused backup or restore must not change: containers, files, current."""
        data = self.sh(f"cd /opt/ferry/stacks/{self.stack} && readlink current && "
                       "find data -type f ! -name '*-wal' ! -name '*-shm' -printf '%p %s\\n' | sort")
        return self.containers(), self.files(), data

    def wait_healthy(self, timeout: int = 120) -> None:
        self.sh(f"for i in $(seq {timeout}); do "
                f"n=$(docker ps --filter label=com.docker.compose.project={self.stack} --filter health=healthy -q | wc -l); "
                f"t=$(docker ps -a --filter label=com.docker.compose.project={self.stack} -q | wc -l); "
                "[ \"$n\" = \"$t\" ] && [ \"$t\" -gt 0 ] && exit 0; sleep 1; done; exit 1")
