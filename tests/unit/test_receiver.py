"""The host side of an upload, run here with a real ``sh``: the receiver (its python3
branch and its shell branch for hosts without python3) and the store re-check."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ferry.host import files

DATA = [os.urandom(3_000_000), b"hello\n", b""]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def stream(items: list[bytes]) -> bytes:
    return b"".join(f"{sha(x)} {len(x)}\n".encode() + x for x in items) + b"END 0\n"


@pytest.fixture(params=["python3", "shell"])
def env(request, tmp_path):
    """PATH with python3 (one-process receiver) or without it (shell pipeline)."""
    if request.param == "python3":
        return dict(os.environ)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "head", "tee", "openssl", "cut", "stat", "mv", "mkdir", "rm", "cat", "dirname", "ln"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir)}


def receive(store: Path, data: bytes, env) -> subprocess.CompletedProcess:
    return subprocess.run(files.receive_files(str(store)), input=data, capture_output=True, env=env)


def test_every_file_is_kept_under_its_sha256(tmp_path, env):
    r = receive(tmp_path / "store", stream(DATA), env)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "store")) == sorted(sha(x) for x in DATA)
    assert (tmp_path / "store" / sha(DATA[0])).read_bytes() == DATA[0]


def test_a_file_that_does_not_match_its_digest_is_not_kept(tmp_path, env):
    bad = f"{sha(b'other')} 5\n".encode() + b"hello" + b"END 0\n"
    r = receive(tmp_path / "store", stream(DATA[1:2])[:-6] + bad, env)
    assert r.returncode == 3 and f"sha256 mismatch after transfer: {sha(b'other')}" in r.stderr.decode()
    assert os.listdir(tmp_path / "store") == [sha(DATA[1])]            # the one before it stays


def test_a_cut_stream_and_a_bad_header_are_refused(tmp_path, env):
    cut = stream(DATA[:1])[:100_000]
    r = receive(tmp_path / "cut", cut, env)
    assert r.returncode == 4 and "short file" in r.stderr.decode() and os.listdir(tmp_path / "cut") == []
    r = receive(tmp_path / "bad", b"../../etc/passwd 3\nabc", env)
    assert r.returncode == 5 and "malformed upload stream header" in r.stderr.decode()
    assert not (tmp_path / "etc").exists()


def test_check_store_reports_missing_and_removes_damaged(tmp_path):
    store = tmp_path / "store"
    assert receive(store, stream(DATA), dict(os.environ)).returncode == 0
    (store / sha(DATA[1])).write_bytes(b"jello\n")                     # same size, bit rot
    r = subprocess.run(files.check_store(str(store), [(sha(x), len(x)) for x in DATA] + [("f" * 64, 1)]),
                       capture_output=True, text=True)
    assert files.parse_check_store(r.stdout) == {sha(DATA[1]): "damaged", "f" * 64: "missing"}
    assert not (store / sha(DATA[1])).exists() and (store / sha(DATA[0])).exists()


def test_link_lines_lay_out_the_bundle_and_stay_inside_it(tmp_path, env):
    store, base = tmp_path / "store", tmp_path / "bundles" / "b-1"
    base.mkdir(parents=True)
    (base / "images").mkdir()
    (base / "images" / "old.tar").symlink_to("/nowhere")
    links = (f"UNLINK images/old.tar\nLINK {sha(DATA[1])} stack/templates/a.j2\n"
             f"LINK {sha(DATA[0])} blobs/sha256/{sha(DATA[0])}\n").encode()
    r = subprocess.run(files.receive_files(str(store), str(base)), input=stream(DATA) + links,
                       capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    assert os.readlink(base / "stack" / "templates" / "a.j2") == str(store / sha(DATA[1]))
    assert (base / "blobs" / "sha256" / sha(DATA[0])).read_bytes() == DATA[0]
    assert not (base / "images" / "old.tar").is_symlink()
    for evil in (f"LINK {sha(DATA[1])} ../../outside\n", f"LINK {sha(DATA[1])} /etc/x\n", "UNLINK ../x\n"):
        r = subprocess.run(files.receive_files(str(store), str(base)), input=b"END 0\n" + evil.encode(),
                           capture_output=True, env=env)
        assert r.returncode == 5 and b"malformed link line" in r.stderr, evil
    assert not (tmp_path / "outside").exists()
