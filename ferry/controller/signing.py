"""Signed bundles: an OpenSSH signature over ``manifest.json`` (``ssh-keygen -Y``).

The manifest lists the sha256 of every other file of the bundle, so signing it signs the
whole bundle. ``inv bundle --sign KEY`` writes ``manifest.json.sig`` next to it (an
SSH signature, namespace :data:`NAMESPACE`, ``ssh-keygen -Y sign``); the bundle
directory carries it over the USB-stick hop. When the inventory sets
``ferry_bundle_signers`` (an OpenSSH ``allowed_signers`` file, see ``man ssh-keygen``,
"ALLOWED SIGNERS"), deploy refuses, before any connection, a bundle without a signature
or with one that no allowed signer made for this namespace.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import FerryError
from ..model.manifest import MANIFEST, SIGNATURE

NAMESPACE = "ferry-bundle"
"""The ``-n`` namespace of bundle signatures: a signature made for anything else (git
commits, files) does not verify as a bundle signature."""


def _keygen(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ssh-keygen", *args], input=stdin, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise FerryError("ssh-keygen not found on the controller (Debian package openssh-client)") from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [l for l in (proc.stderr or proc.stdout or b"").decode(errors="replace").splitlines() if l.strip()]
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def sign_manifest(bundle_dir: Path, key: Path) -> Path:
    """Sign ``bundle_dir/manifest.json`` with the private key ``key``.

    Returns:
        The signature file, ``bundle_dir/manifest.json.sig`` (replaced if present).

    Raises:
        FerryError: the key file is missing or ssh-keygen refused (names the key).
    """
    key = Path(key).expanduser()
    if not key.is_file():
        raise FerryError(f"--sign: key file {key} not found")
    sig = bundle_dir / SIGNATURE
    sig.unlink(missing_ok=True)
    proc = _keygen(["-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(bundle_dir / MANIFEST)])
    if proc.returncode != 0 or not sig.is_file():
        raise FerryError(f"--sign: ssh-keygen could not sign with {key}: {_last_line(proc)}")
    return sig


def verify_manifest(bundle_dir: Path, signers: Path) -> str:
    """Check ``manifest.json.sig`` against the allowed signers file ``signers``.

    Returns:
        The principal the signature verified for (from the allowed signers file).

    Raises:
        FerryError: no signers file, no signature, or a signature no allowed signer
            made for :data:`NAMESPACE` over this exact manifest (one line).
    """
    if not signers.is_file():
        raise FerryError(f"ferry_bundle_signers: allowed signers file {signers} not found")
    sig = bundle_dir / SIGNATURE
    if not sig.is_file():
        raise FerryError(f"{bundle_dir}: bundle is not signed (no {SIGNATURE}) and ferry_bundle_signers "
                         f"is set: refusing it (sign it with `inv bundle --sign KEY`)")
    found = _keygen(["-Y", "find-principals", "-s", str(sig), "-f", str(signers)])
    principals = [l.strip() for l in found.stdout.decode(errors="replace").splitlines() if l.strip()]
    if found.returncode != 0 or not principals:
        raise FerryError(f"{sig}: not signed by any key in {signers}: refusing the bundle")
    manifest = (bundle_dir / MANIFEST).read_bytes()
    for principal in principals:
        proc = _keygen(["-Y", "verify", "-f", str(signers), "-I", principal, "-n", NAMESPACE, "-s", str(sig)],
                       stdin=manifest)
        if proc.returncode == 0:
            return principal
    raise FerryError(f"{sig}: signature does not verify for {bundle_dir / MANIFEST} (namespace {NAMESPACE}, "
                     f"signers {signers}): refusing the bundle")
