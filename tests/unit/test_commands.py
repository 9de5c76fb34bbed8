"""Command builders, run for real in a local ``sh`` where they only touch files."""

import hashlib
import subprocess

import pytest

from ferry import commands as cmd
from ferry.facts import parse_links, parse_tar


def run(argv, data=b""):
    return subprocess.run(argv, input=data, capture_output=True)


def test_receive_file_keeps_data_only_when_sha256_matches(tmp_path):
    data = b"image bytes" * 1000
    good = hashlib.sha256(data).hexdigest()
    final = tmp_path / "store" / good
    assert run(cmd.receive_file(str(final), good), data).returncode == 0
    assert final.read_bytes() == data
    bad = tmp_path / "store" / ("0" * 64)
    r = run(cmd.receive_file(str(bad), "0" * 64), data)
    assert r.returncode == 3
    assert b"sha256 mismatch" in r.stderr
    assert not bad.exists() and not (tmp_path / "store" / ("0" * 64 + ".part")).exists()


def test_hostile_paths_stay_literal(tmp_path):
    evil = tmp_path / "a b'; touch pwned; $(touch pwned2)"
    r = run(cmd.write_file(str(evil), 0o600), b"secret")
    assert r.returncode == 0, r.stderr
    assert evil.read_bytes() == b"secret"
    assert oct(evil.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.glob("pwned*"))


def test_switch_symlink_is_a_rename(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    link = tmp_path / "current"
    assert run(cmd.switch_symlink(str(link), "r1")).returncode == 0
    assert run(cmd.switch_symlink(str(link), "r2")).returncode == 0
    assert link.is_symlink() and str(link.readlink()) == "r2"


def test_links_and_tar_round_trip(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "abc").write_text("x")
    base = tmp_path / "bundle"
    assert run(cmd.make_links(str(base), {"images/a.tar": str(tmp_path / "store" / "abc")})).returncode == 0
    links = parse_links(run(cmd.list_links(str(base))).stdout.decode())
    assert links == {"images/a.tar": str(tmp_path / "store" / "abc")}
    out = run(cmd.read_tar(str(base), ["images/a.tar", "missing.txt"])).stdout
    assert parse_tar(out) == {"images/a.tar": b"x"}
    assert run(cmd.read_tar(str(tmp_path / "nope"), ["x"])).stdout == b""


def test_compose_up_never_pulls_and_waits():
    argv = cmd.compose_up("llm-chat", "/opt/ferry/stacks/llm-chat/current/compose.yml",
                          "/opt/ferry/stacks/llm-chat/current", 90)
    assert argv[:4] == ["docker", "compose", "-p", "llm-chat"]
    for flag in ("-d", "--wait", "--remove-orphans"):
        assert flag in argv
    assert argv[argv.index("--pull") + 1] == "never"
    assert argv[argv.index("--wait-timeout") + 1] == "90"


def test_apt_install_never_uses_network_sources():
    argv = cmd.apt_install_local(["/b/docker.io_1_amd64.deb"])
    assert "Dir::Etc::SourceList=/dev/null" in argv and argv[-1] == "/b/docker.io_1_amd64.deb"
