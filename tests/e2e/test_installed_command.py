"""End to end: Ferry installed as a user installs it, used from anywhere.

``pip install .`` (not editable) into a fresh virtualenv, then, from ``/tmp``,
``ferry --project <checkout> deploy`` of llm-chat onto a sandbox host: the roles,
templates and files come from the installed package data, the stacks and bundles from
the project directory. Also ``ferry init`` writes a starter project that
``ferry --list`` and ``ferry inventory`` accept from inside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from stack_e2e import STACKS, bundle, http

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-5")]
ROOT = Path(__file__).resolve().parents[2]
HOST = "sandbox-5"


@pytest.fixture(scope="module")
def ferry_bin(tmp_path_factory) -> Path:
    """A virtualenv with ``pip install <checkout>`` (a copy of the sources, no editable link)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    r = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return env_dir / "bin" / "ferry"


def run(ferry: Path, *args: str, cwd: str = "/tmp") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_PROJECT", "FERRY_INVENTORY", "PYTHONPATH")}
    return subprocess.run([str(ferry), *args], cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**env, "COLUMNS": "200"})


def test_the_installed_package_carries_its_roles_and_no_devkit(ferry_bin):
    python = ferry_bin.parent / "python"
    r = subprocess.run([str(python), "-c", "import ferry, ferry.roles, ferry.resources as r, importlib.util as u;"
                        "print(ferry.__file__); print(r.data_dir('roles')); print(r.data_dir('files'));"
                        "print(u.find_spec('devkit'))"], cwd="/tmp", capture_output=True, text=True)
    lines = r.stdout.split()
    assert r.returncode == 0 and "site-packages" in lines[0], r.stdout + r.stderr
    assert lines[1].endswith("ferry/_data/roles") and (Path(lines[1]) / "compose-up" / "role.py").is_file()
    assert (Path(lines[2]) / "ferry-activate").is_file()
    assert lines[3] == "None"                                  # the devkit is not part of the product


def test_ferry_from_tmp_deploys_llm_chat_with_project(ferry_bin, sandbox, tmp_path):
    b = bundle(STACKS / "llm-chat", tmp_path / "dist")
    r = run(ferry_bin, "--project", str(ROOT), "deploy", "--host", HOST, "-i", str(sandbox.inventory),
            "--bundle", str(b))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "checks passed" in r.stdout
    ip = next(h.ip for h in sandbox.hosts if h.name == HOST)
    status, body = http(f"http://{ip}/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    st = run(ferry_bin, "--project", str(ROOT), "status", "--host", HOST, "-i", str(sandbox.inventory), "--json")
    assert st.returncode == 0 and json.loads(st.stdout)[0]["healthy"], st.stdout + st.stderr


def test_ferry_init_writes_a_project_found_from_inside_it(ferry_bin, tmp_path):
    proj = tmp_path / "myproj"
    r = run(ferry_bin, "init", "--path", str(proj))
    assert r.returncode == 0, r.stderr
    assert (proj / "ferry.cfg").is_file() and (proj / "inventories" / "hosts.ini").is_file()
    (proj / "deep" / "er").mkdir(parents=True)
    listed = run(ferry_bin, "inventory", "--json", cwd=str(proj / "deep" / "er"))
    assert listed.returncode == 0, listed.stderr                # ferry.cfg found upward names the INI inventory
    assert "_meta" in json.loads(listed.stdout)
    again = run(ferry_bin, "init", "--path", str(proj))
    assert "kept" in again.stdout and "wrote" not in again.stdout  # idempotent
