"""Day-2 commands, the pure parts: option checks, the host-wide prune decision, the
uninstall footprint, the stack's state word, command builders, tables that keep ids
whole, and the exec command line taken word for word after ``--``."""

from __future__ import annotations

import io
import shlex
import subprocess

import pytest
from rich.console import Console

from ferry.cli import argv_after_ddash
from ferry.errors import FerryError
from ferry.host import containers, footprint
from ferry.host.containers import Container, stack_state
from ferry.model import options
from ferry.model.releases import Release, plan_host_prune, unused_store_files
from ferry.ui import UI

A, B, C = ("sha256:" + ch * 64 for ch in "abc")


# -- options ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["10m", "1h30m", "90s", "2026-11-22", "2026-11-22T02:58:44Z",
                                   "2026-11-22T02:58:44.5+08:00", "1763780000"])
def test_since_accepts_what_compose_logs_takes(value):
    assert options.since(value) == value


@pytest.mark.parametrize("value", ["yesterday", "10 m", "-5m", "$(reboot)", "2026-13"])
def test_since_refuses_anything_else_naming_the_option(value):
    with pytest.raises(FerryError, match="--since"):
        options.since(value)


def test_tail_is_a_count_or_all():
    assert options.tail(None) is None and options.tail("20") == "20" and options.tail(5) == "5"
    assert options.tail("all") == "all"
    for bad in ("-1", "ten", "1e3", "٣"):
        with pytest.raises(FerryError, match="--tail"):
            options.tail(bad)


def test_services_must_be_services_of_the_current_release():
    assert options.services([], ["nginx", "backend"], "llm-chat") == []
    assert options.services(["nginx", "nginx"], ["nginx", "backend"], "llm-chat") == ["nginx"]
    with pytest.raises(FerryError, match=r"'db'.*llm-chat has no such service \(services: backend, nginx\)"):
        options.services(["db"], ["nginx", "backend"], "llm-chat")


def test_exec_needs_a_command_without_nul_bytes():
    assert options.command(["sh", "-c", "echo $HOME"]) == ["sh", "-c", "echo $HOME"]
    with pytest.raises(FerryError, match="needs a command after '--'"):
        options.command([])
    with pytest.raises(FerryError, match="NUL"):
        options.command(["echo", "a\0b"])


def test_exec_words_are_taken_from_the_real_argv_after_the_first_ddash():
    argv = ["ferry", "exec", "--host", "prod", "--service", "backend", "--", "sh", "-c", "echo 'a b'; exit 3", "--", "x"]
    assert argv_after_ddash(argv) == ["sh", "-c", "echo 'a b'; exit 3", "--", "x"]
    assert argv_after_ddash(["ferry", "exec", "--service", "backend"]) == []


# -- builders --------------------------------------------------------------------------

def test_exec_reaches_the_container_as_the_same_words(tmp_path):
    """The transport joins argv with shlex: a remote shell splits it back into exactly the
    words given, however hostile (no second round of quoting)."""
    words = ["sh", "-c", 'echo "$0|$1"', "a b", "$(touch pwned); `id` 'q' \"d\" \\ \n ;"]
    argv = containers.with_pid(containers.compose_exec("llm-chat", "/o/current/compose.yml", "/o/current",
                                                       "backend", words))
    line = shlex.join(argv)
    # what the host's sh receives, with `docker` replaced by a printer of its argv
    fake = tmp_path / "docker"
    fake.write_text("#!/usr/bin/env python3\nimport sys, json\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout.splitlines()
    assert out[0].isdigit()                                     # the PID line first
    import json
    got = json.loads(out[1])
    assert got[-len(words):] == words and got[:3] == ["compose", "-p", "llm-chat"]
    assert "exec" in got and "-T" in got
    assert not (tmp_path / "pwned").exists()


def test_logs_command_merges_stderr_and_ends_options_before_services():
    argv = containers.with_pid(containers.compose_logs("s", "/c.yml", "/d", ["web"], True, "10m", "5"), True)
    assert argv[2].endswith('exec "$@" 2>&1')
    assert argv[4:] == ["docker", "compose", "-p", "s", "-f", "/c.yml", "--project-directory", "/d", "logs",
                        "--no-color", "--follow", "--since", "10m", "--tail", "5", "--", "web"]


def test_lifecycle_commands():
    assert containers.compose_lifecycle("s", "/c", "/d", "stop", [], 5)[-3:] == ["stop", "--timeout", "5"]
    assert containers.compose_lifecycle("s", "/c", "/d", "start", ["web"], 5)[-2:] == ["start", "web"]
    with pytest.raises(ValueError):
        containers.compose_lifecycle("s", "/c", "/d", "rm", [])


def test_remove_image_by_its_tags_or_id():
    assert containers.remove_image(A, {"b:1", "a:1"}) == ["docker", "rmi", "a:1", "b:1"]
    assert containers.remove_image(A, set()) == ["docker", "rmi", A]


# -- stack state -------------------------------------------------------------------------

def c(status: str, health: str = "") -> Container:
    return Container("id", "t", status, health)


def test_stack_state_says_stopped_running_degraded_or_absent():
    services = ["backend", "nginx"]
    assert stack_state({}, services) == "absent"
    assert stack_state({"backend": c("exited"), "nginx": c("exited")}, services) == "stopped"
    assert stack_state({"backend": c("running", "healthy"), "nginx": c("running")}, services) == "running"
    assert stack_state({"backend": c("running", "healthy"), "nginx": c("exited")}, services) == "degraded"
    assert stack_state({"backend": c("running", "unhealthy"), "nginx": c("running")}, services) == "degraded"
    assert stack_state({"backend": c("running", "healthy")}, services) == "degraded"   # nginx's container gone


# -- prune: the host-wide decision --------------------------------------------------------

def rel(rid: str, images: set[str], bundle: str) -> Release:
    return Release(rid, {"bundle": bundle}, images)


def test_host_prune_keeps_what_any_release_or_container_uses():
    releases = [rel("r1", {A}, "web-1"), rel("r2", {B}, "api-2")]
    bundles = {"web-1": {"s1", "s3"}, "web-0": {"s0", "s3"}, "api-2": {"s2"}, "api-1": {"s4"}}
    stored = ["s0", "s1", "s2", "s3", "s4", "s5", "s5.part"]
    plan = plan_host_prune(releases, {A, B, C}, set(), bundles, stored)
    assert (plan.images, plan.bundles) == ([C], ["api-1", "web-0"])
    assert plan.store_files == []          # none of these names is a sha256: never deleted


def test_host_prune_store_files_and_images_protected_by_containers():
    sha = {k: ch * 64 for k, ch in zip("012345", "012345")}
    bundles = {"web-1": {sha["1"], sha["3"]}, "web-0": {sha["0"], sha["3"]}}
    stored = [sha[k] for k in "0135"] + [sha["5"] + ".part"]
    plan = plan_host_prune([rel("r1", {A}, "web-1")], {A, B, C}, {C}, bundles, stored)
    assert plan.images == [B] and plan.bundles == ["web-0"]
    assert plan.store_files == [sha["0"], sha["5"]]          # web-0's own file and a stray; the shared one stays
    assert not plan.empty


def test_host_prune_leaves_bundles_of_stacks_it_does_not_hold():
    sha0 = "0" * 64
    plan = plan_host_prune([], set(), set(), {"other-1": {sha0}}, [sha0], removable=[])
    assert plan.empty


def test_unused_store_files_only_touches_sha256_names():
    assert unused_store_files(["a" * 64, "notes.txt", "b" * 64 + ".part"], []) == ["a" * 64]


# -- uninstall ------------------------------------------------------------------------------

FOOTPRINT = """root
entry store
entry stacks
entry audit.log
entry lost+found
stack llm-chat
sentry llm-chat data
sentry llm-chat releases
sentry llm-chat current
sentry llm-chat secrets.json
data 28672 llm-chat
backups 14336 llm-chat
cron /etc/cron.d/ferry-backup-llm-chat
docker
container llm-chat running
container llm-chat exited
container other running
"""


def test_footprint_names_ferry_files_running_stacks_and_what_stays():
    f = footprint.parse_footprint(FOOTPRINT)
    assert f.running() == {"llm-chat": 1}                  # `other` is not Ferry's
    assert f.ferry_files() == ["store", "audit.log", "stacks/llm-chat/current", "stacks/llm-chat/releases"]
    assert "stacks/llm-chat/data" in f.ferry_files(purge_data=True)
    assert "lost+found" not in " ".join(f.ferry_files(True))   # not Ferry's: never removed
    assert (f.stacks, f.backups, f.cron, f.docker) == ({"llm-chat": 28672}, {"llm-chat": 14336},
                                                       ["/etc/cron.d/ferry-backup-llm-chat"], True)


@pytest.mark.parametrize("bad", ["/", "/opt", "/var/lib", "opt/ferry", "/opt/ferry/", "/opt/../etc", "/usr"])
def test_uninstall_refuses_a_root_that_is_not_ferrys_own(bad):
    with pytest.raises(FerryError, match="h1: ferry_root"):
        footprint.check_dir(bad, "ferry_root", "h1")
    assert footprint.check_dir("/opt/ferry", "ferry_root", "h1") == "/opt/ferry"


def test_uninstall_removes_ferry_files_and_keeps_data(tmp_path):
    """The removal script, run for real on a local tree shaped like a host's."""
    root = tmp_path / "ferry"
    for d in ("store", "bundles/llm-chat-1.0.0", "locks", "stacks/llm-chat/releases/r1", "stacks/llm-chat/data/db",
              "stacks/llm-chat/backup-status", "keep-me"):
        (root / d).mkdir(parents=True)
    for f in ("store/" + "a" * 64, "audit.log", "stacks/llm-chat/secrets.json", "stacks/llm-chat/data/db/chat.db",
              "stacks/llm-chat/up.json", "stacks/llm-chat/ferry-backup", "keep-me/x"):
        (root / f).write_text("x")
    (root / "stacks/llm-chat/current").symlink_to("releases/r1")
    logs, backups = tmp_path / "log", tmp_path / "backups"
    (logs).mkdir()
    (logs / "backup-llm-chat.log").write_text("x")
    (backups / "llm-chat").mkdir(parents=True)
    cron = tmp_path / "cron"
    cron.write_text("x")
    subprocess.run(footprint.remove_files(str(root), ["llm-chat"], [str(cron)], [str(logs / "backup-llm-chat.log")],
                                          str(logs), str(backups), False), check=True)
    subprocess.run(footprint.remove_last(str(root)), check=True)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["backups", "backups/llm-chat", "ferry", "ferry/keep-me", "ferry/keep-me/x", "ferry/stacks",
                    "ferry/stacks/llm-chat", "ferry/stacks/llm-chat/data", "ferry/stacks/llm-chat/data/db",
                    "ferry/stacks/llm-chat/data/db/chat.db", "ferry/stacks/llm-chat/secrets.json"]
    subprocess.run(footprint.remove_files(str(root), ["llm-chat"], [], [], str(logs), str(backups), True), check=True)
    subprocess.run(footprint.remove_last(str(root)), check=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["ferry", "ferry/keep-me",
                                                                                 "ferry/keep-me/x"]


# -- tables ----------------------------------------------------------------------------------

def test_tables_keep_ids_whole_in_80_columns():
    out = io.StringIO()
    ui = UI(Console(file=out, width=80, force_terminal=False))
    rid = "20261122T025844.123Z-1.0.0-rc.1+build.5"
    ui.table("releases", ["host", "release", "version", "created", "by", "current"],
             [["sandbox-1", rid, "1.0.0-rc.1+build.5", "2026-11-22T02:58:44Z", "somebody@a-long-host-name", "current"]])
    lines = out.getvalue().splitlines()
    assert any(rid in line for line in lines) and any("sandbox-1" in line for line in lines)
    assert "2026-11" in out.getvalue()                          # other cells folded, not dropped


# -- streaming: the PID line, prefixes -----------------------------------------------------

def test_remote_process_takes_the_pid_line_and_passes_the_rest_through():
    from ferry.actions.common import RemoteProcess
    from ferry.host.session import HostSession
    from ferry.host.transport.fake import FakeTransport
    from ferry.model.paths import HostPaths
    sent = []
    t = FakeTransport(lambda argv, data: (3, b"4242\nfirst line\nsecond", b"boom\n"))
    proc = RemoteProcess(HostSession("h1", t, {}, HostPaths("/opt/ferry", "s", "")), ["docker", "compose", "logs"])
    result = proc.run(sent.append)
    assert proc.pid == 4242 and b"".join(sent) == b"first line\nsecond"
    assert (result.rc, result.stderr) == (3, b"boom\n")
    assert t.commands()[0][:2] == ["sh", "-c"] and t.commands()[0][-3:] == ["docker", "compose", "logs"]
    proc.stop()
    assert "4242" in t.commands()[-1][-1] and proc.stopped


def test_line_prefixer_writes_whole_lines_with_the_host():
    from ferry.actions.common import LinePrefixer
    out = []
    p = LinePrefixer(b"h1 | ", out.append)
    for block in (b"a\nb", b"c\n", b"", b"d"):
        p(block)
    p.flush()
    assert b"".join(out) == b"h1 | a\nh1 | bc\nh1 | d\n"
