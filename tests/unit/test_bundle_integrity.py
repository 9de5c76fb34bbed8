"""Bundle integrity on the controller: the manifest schema, every file listed and nothing
else, every file hashed (cached by file identity), and SSH signatures. No Docker, no host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import ferry.controller.hashcache as hashcache
from ferry.controller.bundle import load_bundle, seal
from ferry.controller.hashcache import HashCache
from ferry.controller.signing import sign_manifest, verify_manifest
from ferry.errors import FerryError
from ferry.model.manifest import validate_manifest

LLM_CHAT = Path(__file__).resolve().parents[2] / "stacks" / "llm-chat"
DOCKER = {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64", "packages": {"docker.io": "20.10.24"}}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    root = tmp_path / "dist" / "llm-chat-1.0.0"
    (root / "images").mkdir(parents=True)
    (root / "images" / "nginx_1.22.tar").write_bytes(b"layers" * 1000)
    (root / "docker").mkdir()
    (root / "docker" / "docker-compose").write_bytes(b"ELF")
    shutil.copytree(LLM_CHAT, root / "stack", ignore=shutil.ignore_patterns("images"))
    seal(root, {"format": 1, "stack": "llm-chat", "version": "1.0.0", "docker": DOCKER,
                "images": [{"service": "nginx", "ref": "nginx:1.22", "id": "sha256:" + "e" * 64,
                            "tags": ["nginx:1.22"], "size": 6000, "file": "images/nginx_1.22.tar"}]})
    return root


def rewrite(path: Path, text: str) -> None:
    """Edit a file in place, keeping its modification time (a careful tamperer)."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- schema ------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,needle", [
    ("stack", "../etc", "key 'stack'"),
    ("stack", "llm/chat", "key 'stack'"),
    ("version", "../../root/vtrav", "key 'version'"),
    ("version", "1..0", "key 'version'"),
    ("version", "1.0/x", "key 'version'"),
    ("format", 7, "key 'format'"),
])
def test_manifest_identifiers_are_checked(bundle_dir, key, value, needle):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest[key] = value
    with pytest.raises(FerryError, match=needle):
        validate_manifest(manifest, bundle_dir / "manifest.json")


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "stack/../../x", "a//b", "./a", "a b", "a\nb",
                                  "stack/templates/x'y"])
def test_manifest_paths_stay_inside_the_bundle(bundle_dir, path):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"][0]["path"] = path
    with pytest.raises(FerryError, match=r"key 'files\[0\]\.path': .*relative path inside the bundle"):
        validate_manifest(manifest, "m.json")


def test_manifest_cross_checks(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    twice = dict(manifest, files=manifest["files"] + manifest["files"][:1])
    with pytest.raises(FerryError, match="listed twice"):
        validate_manifest(twice, "m.json")
    gone = dict(manifest, files=[f for f in manifest["files"] if not f["path"].startswith("images/")])
    with pytest.raises(FerryError, match=r"images\[0\]': images/nginx_1.22.tar is not listed"):
        validate_manifest(gone, "m.json")


def test_load_bundle_refuses_a_traversal_manifest_with_one_line(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["version"] = "../../../root/vtrav"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FerryError) as err:
        load_bundle(bundle_dir)
    assert "key 'version'" in str(err.value) and "\n" not in str(err.value)


# -- listing and hashes -----------------------------------------------------------------

def test_a_fresh_bundle_verifies(bundle_dir):
    load_bundle(bundle_dir).verify()
    r = subprocess.run(["sha256sum", "-c", "--quiet", "checksums.sha256"], cwd=bundle_dir,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_template_edited_after_bundling_is_refused_naming_it(bundle_dir):
    b = load_bundle(bundle_dir)
    b.verify()                                              # cached now
    tpl = bundle_dir / "stack" / "templates" / "nginx.conf.j2"
    rewrite(tpl, tpl.read_text().replace("server_name _;", "server_name e;"))   # same size
    with pytest.raises(FerryError, match=r"stack/templates/nginx.conf.j2: sha256 .* does not match manifest"):
        b.verify()


def test_a_manifest_with_an_entry_removed_is_refused_naming_the_file(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "stack/templates/env.j2"]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FerryError, match=r"stack/templates/env.j2: not listed in .*manifest.json"):
        load_bundle(bundle_dir).verify()


def test_an_added_file_a_symlink_and_a_missing_file_are_refused(bundle_dir):
    (bundle_dir / "stack" / "templates" / "extra.j2").write_text("x")
    with pytest.raises(FerryError, match="extra.j2: not listed"):
        load_bundle(bundle_dir).verify()
    (bundle_dir / "stack" / "templates" / "extra.j2").unlink()
    (bundle_dir / "stack" / "link").symlink_to("/etc/passwd")
    with pytest.raises(FerryError, match="link: a symlink inside the bundle"):
        load_bundle(bundle_dir).verify()
    (bundle_dir / "stack" / "link").unlink()
    (bundle_dir / "docker" / "docker-compose").unlink()
    with pytest.raises(FerryError, match="docker-compose: listed in .* but missing"):
        load_bundle(bundle_dir).verify()


def test_checksums_file_must_match_the_manifest(bundle_dir):
    sums = bundle_dir / "checksums.sha256"
    sums.write_text(sums.read_text().replace("stack/defaults.yml", "stack/other.yml"))
    with pytest.raises(FerryError, match="checksums.sha256: does not match"):
        load_bundle(bundle_dir).verify()


def test_hashes_are_cached_by_identity_and_an_edit_is_always_seen(bundle_dir, monkeypatch):
    b = load_bundle(bundle_dir)
    b.verify()
    read = []
    real = hashcache.sha256_file
    monkeypatch.setattr(hashcache, "sha256_file", lambda p, progress=None: read.append(p) or real(p, progress))
    b.verify()
    assert read == []                                       # nothing re-read: all cached
    victim = bundle_dir / "images" / "nginx_1.22.tar"
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    rewrite(victim, data.decode("latin-1"))                 # same size, same mtime
    with pytest.raises(FerryError, match="nginx_1.22.tar: sha256"):
        b.verify()
    assert read == [victim]                                 # only the edited file was read


def test_cache_survives_a_damaged_cache_file(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    cache = HashCache(tmp_path / "c.json")
    assert cache.sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cache.save()
    assert HashCache(tmp_path / "c.json").sha256(f) == cache.sha256(f)


# -- signatures -------------------------------------------------------------------------

def keypair(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (tmp_path / f"{name}.pub").read_text().strip()


def test_signed_bundle_verifies_for_its_signer_only(bundle_dir, tmp_path):
    release_key, release_pub = keypair(tmp_path, "release")
    other_key, other_pub = keypair(tmp_path, "other")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"release@example.org {release_pub}\n")
    with pytest.raises(FerryError, match="bundle is not signed"):
        verify_manifest(bundle_dir, signers)
    sign_manifest(bundle_dir, release_key)
    assert verify_manifest(bundle_dir, signers) == "release@example.org"
    load_bundle(bundle_dir).verify()                        # the .sig is part of the bundle, not "unlisted"
    sign_manifest(bundle_dir, other_key)                    # a key not in allowed_signers
    with pytest.raises(FerryError, match="not signed by any key in"):
        verify_manifest(bundle_dir, signers)


def test_a_signature_over_another_manifest_or_namespace_is_refused(bundle_dir, tmp_path):
    key, pub = keypair(tmp_path, "release")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"release@example.org {pub}\n")
    sign_manifest(bundle_dir, key)
    manifest = bundle_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"1.0.0"', '"1.0.1"', 1))
    with pytest.raises(FerryError, match="signature does not verify"):
        verify_manifest(bundle_dir, signers)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "git", str(manifest)], check=True,
                   input=b"y\n")
    with pytest.raises(FerryError, match="signature does not verify"):
        verify_manifest(bundle_dir, signers)
