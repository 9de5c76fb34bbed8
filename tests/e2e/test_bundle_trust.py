"""End to end: a bundle that is not exactly what was built, or not signed by an allowed
signer, never reaches a host.

Each bad bundle goes through the real command line (``inv deploy``) against a real
sandbox host and must fail with one line naming the cause, before any SSH connection:
the host's sshd logs no new login and the host's state is unchanged. Then the same
bundle, signed, deploys to that fresh host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stack_e2e import STACKS, Hosts, bundle, inv_cli, inventory_with_signers, logins, signing_keys

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-6")]
HOST = "sandbox-6"


@pytest.fixture(scope="module")
def hosts(sandbox):
    return Hosts(sandbox.inventory)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return bundle(STACKS / "llm-chat", tmp_path_factory.mktemp("dist-trust"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return signing_keys(tmp_path_factory.mktemp("keys"))


def copy_bundle(src: Path, dest: Path) -> Path:
    """A copy sharing the big files (hard links); edit only files you replace."""
    shutil.copytree(src, dest, copy_function=os.link)
    return dest


def replace(path: Path, data: bytes) -> None:
    """Write a new file in place of a hard-linked one (the original stays intact)."""
    path.unlink()
    path.write_bytes(data)


def refused(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_untrusted_bundles_are_refused_before_any_connection(sandbox, hosts, built, keys, tmp_path):
    state = hosts.state(HOST)
    before = logins(sandbox, HOST)
    inv = str(sandbox.inventory)

    # a template edited after bundling (same size, so only the sha256 tells)
    b = copy_bundle(built, tmp_path / "tampered" / built.name)
    tpl = b / "stack" / "templates" / "nginx.conf.j2"
    replace(tpl, tpl.read_bytes().replace(b"server_name _;", b"server_name e;"))
    refused(inv_cli("deploy", "--host", HOST, "-i", inv, "--bundle", str(b)),
            "stack/templates/nginx.conf.j2", "does not match manifest")

    # the same edit with the template's manifest entry removed
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "stack/templates/nginx.conf.j2"]
    replace(b / "manifest.json", json.dumps(manifest).encode())
    refused(inv_cli("deploy", "--host", HOST, "-i", inv, "--bundle", str(b)),
            "stack/templates/nginx.conf.j2", "not listed in")

    # a manifest whose version climbs out of ferry_root
    b = copy_bundle(built, tmp_path / "traversal" / built.name)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["version"] = "../../../root/vtrav"
    replace(b / "manifest.json", json.dumps(manifest).encode())
    refused(inv_cli("deploy", "--host", HOST, "-i", inv, "--bundle", str(b)), "key 'version'", "../../../root/vtrav")

    # ferry_bundle_signers set: an unsigned bundle, then one signed by a key not allowed
    signed_inv = str(inventory_with_signers(sandbox, tmp_path, keys["signers"]))
    refused(inv_cli("deploy", "--host", HOST, "-i", signed_inv, "--bundle", str(built)),
            "bundle is not signed", "ferry_bundle_signers")
    b = copy_bundle(built, tmp_path / "intruder" / built.name)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(keys["intruder"]), "-n", "ferry-bundle",
                    str(b / "manifest.json")], check=True)
    refused(inv_cli("deploy", "--host", HOST, "-i", signed_inv, "--bundle", str(b)),
            "manifest.json.sig", "not signed by any key in")

    assert logins(sandbox, HOST) == before                  # not one SSH connection
    assert hosts.state(HOST) == state


def test_a_bundle_signed_by_an_allowed_signer_deploys(sandbox, hosts, built, keys, tmp_path):
    signed = tmp_path / "dist"
    r = inv_cli("bundle", "--stack", "llm-chat", "--dist", str(signed), "--sign", str(keys["release"]))
    assert r.returncode == 0 and "signed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    b = signed / built.name
    assert (b / "manifest.json.sig").is_file()
    inv = inventory_with_signers(sandbox, tmp_path, keys["signers"])
    r = inv_cli("deploy", "--host", HOST, "-i", str(inv), "--bundle", str(b))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "checks passed" in r.stdout
    # the signature travelled with the bundle to the host
    assert hosts.sh(HOST, f"test -s /opt/ferry/bundles/{b.name}/manifest.json.sig && echo yes").strip() == "yes"
