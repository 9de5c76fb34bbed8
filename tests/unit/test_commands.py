"""Command builders, run for real in a local ``sh`` where they only touch files."""

import hashlib
import subprocess
import tempfile

import pytest

from ferry.errors import FerryError
from ferry.host.files import parse_links, parse_tar
from ferry.host import containers, files, system


def run(argv, data=b""):
    return subprocess.run(argv, input=data, capture_output=True)


def stream(*items):
    """An upload stream: (sha256, bytes) items, then END (see receive_files)."""
    return b"".join(f"{sha} {len(data)}\n".encode() + data for sha, data in items) + b"END 0\n"


def test_receive_files_keeps_files_that_check_out(tmp_path):
    a, b = b"image bytes" * 1000, b"\n\x00binary\nEND 0\n" * 50
    sa, sb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    r = run(files.receive_files(str(tmp_path / "store")), stream((sa, a), (sb, b)))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "store" / sa).read_bytes() == a and (tmp_path / "store" / sb).read_bytes() == b
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted([sa, sb])


def test_receive_files_refuses_a_mismatch_and_keeps_nothing_of_it(tmp_path):
    a, b = b"good" * 100, b"evil" * 100
    sa, wrong = hashlib.sha256(a).hexdigest(), "0" * 64
    r = run(files.receive_files(str(tmp_path)), stream((sa, a), (wrong, b)))
    assert r.returncode == 3 and f"mismatch after transfer: {wrong}".encode() in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [sa]       # no .part left


def test_receive_files_refuses_a_cut_stream_and_bad_headers(tmp_path):
    data = b"x" * 5000
    sha = hashlib.sha256(data).hexdigest()
    r = run(files.receive_files(str(tmp_path)), f"{sha} {len(data)}\n".encode() + data[:4000])
    assert r.returncode == 4 and b"short file" in r.stderr and not list(tmp_path.iterdir())
    r = run(files.receive_files(str(tmp_path)), b"../../etc/passwd 5\nhello")
    assert r.returncode == 5 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("hide", ["", "openssl", "openssl python3"])
def test_receive_files_hash_fallbacks_agree(tmp_path, hide):
    """With openssl (and python3) hidden from PATH, the next hasher gives the same verdict."""
    import os
    import shutil
    import sys
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = {t: shutil.which(t) for t in ("sh", "tee", "cut", "stat", "mkdir", "mv", "rm", "head",
                                          "sha256sum", "openssl")}
    tools["python3"] = os.path.realpath(sys.executable)   # not a pyenv shim script
    for tool, path in tools.items():
        if tool not in hide.split() and path:
            os.symlink(path, bindir / tool)
    data = b"payload" * 999
    good = hashlib.sha256(data).hexdigest()
    r = subprocess.run([str(bindir / "sh"), "-c", files.receive_files(str(tmp_path / "s"))[-1]],
                       input=stream((good, data)), capture_output=True, env={"PATH": str(bindir)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s" / good).read_bytes() == data


def test_hostile_paths_stay_literal(tmp_path):
    evil = tmp_path / "a b'; touch pwned; $(touch pwned2)"
    r = run(files.write_file(str(evil), 0o600), b"secret")
    assert r.returncode == 0, r.stderr
    assert evil.read_bytes() == b"secret"
    assert oct(evil.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.glob("pwned*"))


def test_switch_symlink_is_a_rename(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    link = tmp_path / "current"
    assert run(files.switch_symlink(str(link), "r1")).returncode == 0
    assert run(files.switch_symlink(str(link), "r2")).returncode == 0
    assert link.is_symlink() and str(link.readlink()) == "r2"


def test_links_and_tar_round_trip(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "abc").write_text("x")
    base = tmp_path / "bundle"
    assert run(files.make_links(str(base), {"images/a.tar": str(tmp_path / "store" / "abc")})).returncode == 0
    links = parse_links(run(files.list_links(str(base))).stdout.decode())
    assert links == {"images/a.tar": str(tmp_path / "store" / "abc")}
    out = run(files.read_tar(str(base), ["images/a.tar", "missing.txt"])).stdout
    assert parse_tar(out) == {"images/a.tar": b"x"}
    assert run(files.read_tar(str(tmp_path / "nope"), ["x"])).stdout == b""


def test_compose_up_never_pulls_and_waits():
    argv = containers.compose_up("llm-chat", "/opt/ferry/stacks/llm-chat/current/compose.yml",
                          "/opt/ferry/stacks/llm-chat/current", 90)
    assert argv[:4] == ["docker", "compose", "-p", "llm-chat"]
    for flag in ("-d", "--wait", "--remove-orphans"):
        assert flag in argv
    assert argv[argv.index("--pull") + 1] == "never"
    assert argv[argv.index("--wait-timeout") + 1] == "90"


def test_apt_install_never_uses_network_sources():
    argv = system.apt_install_local(["/b/docker.io_1_amd64.deb"])
    assert "Dir::Etc::SourceList=/dev/null" in argv and argv[-1] == "/b/docker.io_1_amd64.deb"


def test_batch_answers_every_command_exactly_in_one_shell():
    from ferry.host import batch
    cmds = ["printf 'a\\nb'", "echo oops >&2; exit 3", "printf '==ferry-batch 9 0 0 0\\n'", "head -c 3 /dev/zero"]
    proc = subprocess.run(batch.script(cmds), capture_output=True)
    answers = batch.parse(proc.stdout, len(cmds))
    assert [(a.rc, a.stdout, a.stderr) for a in answers] == [
        (0, b"a\nb", b""), (3, b"", b"oops\n"), (0, b"==ferry-batch 9 0 0 0\n", b""), (0, b"\0\0\0", b"")]
    with pytest.raises(FerryError, match="missing"):
        batch.parse(proc.stdout[:40], len(cmds))


def test_batch_gate_runs_first_with_its_input_and_stops_the_rest_when_it_fails():
    from ferry.host import batch
    cmds = ["sleep 0.2; echo one", "echo two >&2; exit 4", "cat"]      # cat: stdin is /dev/null
    for parallel in (False, True):
        argv = batch.script(cmds, gate="cat > \"$HOME/lock\"; cat \"$HOME/lock\"", gate_input="{'it''s' $x}",
                            parallel=parallel)
        with tempfile.TemporaryDirectory() as home:
            out = subprocess.run(argv, capture_output=True, env={"HOME": home, "PATH": "/usr/bin:/bin"}).stdout
        answers = batch.parse(out, 4, gated=True)
        assert [(a.rc, a.stdout, a.stderr) for a in answers] == [
            (0, b"{'it''s' $x}", b""), (0, b"one\n", b""), (4, b"", b"two\n"), (0, b"", b"")]
        assert batch.unpack(argv) == batch.Unpacked("cat > \"$HOME/lock\"; cat \"$HOME/lock\"", "{'it''s' $x}",
                                                     cmds, parallel)
    held = batch.script(cmds, gate="echo held; exit 75")
    answers = batch.parse(subprocess.run(held, capture_output=True).stdout, 4, gated=True)
    assert [(a.rc, a.stdout) for a in answers] == [(75, b"held\n")]


def test_gathered_facts_answer_until_anything_else_runs():
    from ferry.host.facts import Prefetched
    from ferry.host.transport.fake import FakeTransport
    state = {"n": 0}

    def host(argv, data):
        state["n"] += 1
        return 0, f"{argv[0]} {state['n']}", ""
    t = FakeTransport(host, unbatch=True)
    p = Prefetched(t)
    assert p.gather([["ls", "/a"], ["sh", "-c", "ls /b | wc -l"]], gate=["mkdir", "/lock"]).ok
    assert t.round_trips == 1 and t.calls[0].batch == [["mkdir", "/lock"], ["ls", "/a"], ["sh", "-c", "ls /b | wc -l"]]
    assert p.run(["ls", "/a"]).out == "ls 2" and p.run(["sh", "-c", "ls /b | wc -l"]).out == "sh 3"
    assert p.run(["ls", "/a"], input=b"x").out == "ls 4"        # with input: not a fact, asked
    assert p.run(["ls", "/a"]).out == "ls 5"                    # and every fact dropped after it
    assert t.round_trips == 3 and p.hits == 2
    p.gather([["ls", "/c"]])
    list(p.stream(["cat", "/x"]))                               # a stream may change the host too
    assert p.run(["ls", "/c"]).out == "ls 8" and t.round_trips == 6


def test_write_text_command_writes_hostile_text_as_data_atomically(tmp_path):
    """The text is a positional parameter: quotes, ``$``, backticks, newlines and ``;``
    arrive unchanged, nothing runs; the file gets its mode and no ``.tmp`` is left."""
    import os
    import subprocess

    from ferry.host.files import write_text_command
    target = tmp_path / "sub" / "up.json"
    text = '{"a": "it\'s $HOME `id` \\n ; touch ' + str(tmp_path / "pwned") + '"}\nline two'
    subprocess.run(write_text_command(str(target), text, 0o640), check=True)
    assert target.read_text() == text and oct(os.stat(target).st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in target.parent.iterdir()) == ["up.json"] and not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError):
        write_text_command(str(target), "a\0b")
