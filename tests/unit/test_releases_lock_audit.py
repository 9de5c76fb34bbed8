"""Release retention, rollback targets, lock and audit: pure logic and fake-host runs."""

import io
import json
import os
import tarfile

import pytest

from ferry.host import audit, lock
from ferry.errors import FerryError, HostError
from ferry.host.releases import parse_releases
from ferry.model.releases import History, Release, plan_prune
from ferry.host.transport.fake import FakeTransport


def rel(i, images, bundle=None):
    return Release(f"2026112{i}T000000Z-{i}", {"version": str(i), "bundle": bundle or f"s-{i}"}, set(images))


def test_keep_newest_and_drop_images_only_dropped_releases_use():
    h = History([rel(1, {"a", "shared"}), rel(2, {"b", "shared"}), rel(3, {"c", "shared"}),
                 rel(4, {"d", "shared"})], current="2026112" + "4T000000Z-4")
    plan = plan_prune(h, keep=2)
    assert plan.releases == [h.releases[0].id, h.releases[1].id]
    assert plan.images == ["a", "b"] and plan.bundles == ["s-1", "s-2"]


def test_current_is_kept_even_when_old_and_protected_images_survive():
    h = History([rel(i, {f"img{i}"}) for i in range(1, 8)], current="20261122T000000Z-2")
    plan = plan_prune(h, keep=3, other_stacks_images={"img1"})
    kept = [r.id for r in h.releases if r.id not in plan.releases]
    assert "20261122T000000Z-2" in kept and len(kept) == 3
    assert "img1" not in plan.images and "img2" not in plan.images
    with pytest.raises(FerryError):
        plan_prune(h, keep=0)


def test_nothing_to_prune_within_limit_and_previous_release():
    h = History([rel(1, {"a"}), rel(2, {"b"})], current="20261122T000000Z-2")
    assert plan_prune(h, keep=5).releases == []
    assert h.previous().id == "20261121T000000Z-1"
    assert History([rel(1, {"a"})], current="20261121T000000Z-1").previous() is None


def test_parse_releases_from_readlink_and_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, doc in {"releases/r1/release.json": {"version": "1"},
                          "releases/r1/manifest.json": {"images": [{"id": "sha256:x"}], "files": [{"sha256": "f"}]},
                          "releases/r2/release.json": {"version": "2"}}.items():
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    h = parse_releases(b"releases/r2\n" + buf.getvalue())
    assert h.current == "r2" and [r.id for r in h.releases] == ["r1", "r2"]
    assert h.get("r1").image_ids == {"sha256:x"} and h.get("r2").version == "2"


def test_lock_held_elsewhere_names_the_holder():
    holder = {"who": "alice@laptop", "pid": 42, "task": "deploy", "stack": "llm-chat", "version": "1.1.0",
              "since": 0, "since_iso": "2026-11-22T03:00:00Z", "message": "hotfix"}
    t = FakeTransport(lambda argv, data: (75, json.dumps(holder), ""), host="web-1")
    with pytest.raises(HostError) as e:
        lock.acquire(t, "/opt/ferry", "llm-chat", "deploy", "1.2.0")
    msg = str(e.value)
    assert "web-1" in msg and "alice@laptop" in msg and "1.1.0" in msg and "hotfix" in msg
    assert "\n" not in msg


def test_lock_acquire_then_release_only_with_own_token():
    calls = []

    def host(argv, data):
        calls.append((argv, data))
        return 0, "", ""
    t = FakeTransport(host)
    held = lock.acquire(t, "/opt/ferry", "llm-chat", "deploy", "1.0.0", "why")
    info = json.loads(calls[0][1])
    assert info["task"] == "deploy" and info["message"] == "why" and info["token"] == held.token
    held.release()
    assert held.token in calls[-1][0][-1] and "rm -rf" in calls[-1][0][-1]


def test_audit_lines_round_trip():
    rec = audit.entry("rollback", "llm-chat", "1.0.0", "r1", "ok", "from r2")
    parsed = audit.parse(json.dumps(rec) + "\nnot json\n")
    assert parsed[0]["task"] == "rollback" and parsed[0]["who"] and parsed[1] == {"detail": "not json"}


def test_lock_commands_in_a_real_shell(tmp_path):
    import subprocess
    path = str(tmp_path / "locks" / "llm-chat")
    first = subprocess.run(lock.acquire_command(path), input=b'{"who": "a"}', capture_output=True)
    second = subprocess.run(lock.acquire_command(path), input=b'{"who": "b"}', capture_output=True)
    assert first.returncode == 0 and second.returncode == 75 and json.loads(second.stdout) == {"who": "a"}
    subprocess.run(lock.release_command(path, "not-the-token"), check=True)
    assert (tmp_path / "locks" / "llm-chat").exists()          # someone else's lock survives
    subprocess.run(lock.release_command(path, None), check=True)
    assert not (tmp_path / "locks" / "llm-chat").exists()
    # a host-side program still working for a controller that went away holds
    # <lock>.activating: the lock is refused while it does, free again after
    import fcntl
    with open(path + ".activating", "a") as busy:
        fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = subprocess.run(lock.acquire_command(path), input=b'{"who": "c"}', capture_output=True)
        assert held.returncode == 75 and "ferry-activate or ferry-backup" in json.loads(held.stdout)["message"]
        assert not (tmp_path / "locks" / "llm-chat").exists()
    assert subprocess.run(lock.acquire_command(path), input=b'{"who": "c"}').returncode == 0


def test_a_refused_run_takes_its_new_directories_away_with_the_lock(tmp_path):
    """A deploy to a new ferry_root refused after its lock was taken (its preflight runs
    on the facts gathered under the lock) leaves no directory behind; one that was there
    before, or holds anything, stays."""
    import subprocess
    (tmp_path / "srv").mkdir()
    path = str(tmp_path / "srv" / "ferry-b" / "locks" / "llm-chat")
    taken = subprocess.run(lock.acquire_command(path), input=b'{"token": "t1"}', capture_output=True)
    assert taken.returncode == 0 and taken.stdout.decode() == str(tmp_path / "srv" / "ferry-b")
    other = str(tmp_path / "srv" / "ferry-b" / "locks" / "backup")
    subprocess.run(lock.acquire_command(other), input=b'{"token": "t2"}', check=True, capture_output=True)
    subprocess.run(lock.release_command(path, "t1", taken.stdout.decode()), check=True)
    assert os.listdir(tmp_path / "srv" / "ferry-b" / "locks") == ["backup"]     # another lock: kept
    subprocess.run(lock.release_command(other, "t2", taken.stdout.decode()), check=True)
    assert os.listdir(tmp_path / "srv") == []
    assert lock.release_command(path, "t1", "/etc") == lock.release_command(path, "t1")   # not an ancestor


def test_rollout_stop_rule_canary_and_max_fail():
    from ferry.actions.deploy import stop_reason
    assert stop_reason(0, 3, 1, 3, 50) == "canary batch failed (1 hosts)"     # canary always stops
    assert stop_reason(0, 1, 1, 3, 0) is None                                # nothing after the last batch
    assert stop_reason(1, 5, 1, 10, 20) is None                              # 10% <= 20%
    assert stop_reason(2, 5, 3, 10, 20) == "3 of 10 hosts failed (more than 20%)"
    assert stop_reason(3, 5, 0, 10, 0) is None


def test_release_ids_sort_by_time_and_differ_within_a_second():
    from ferry.roles import load_role
    release_id = load_role("render-config").release_id
    a, b = release_id("1.0.0", now=1_800_000_000.120), release_id("1.0.0", now=1_800_000_000.450)
    assert a == "20270115T080000.120Z-1.0.0" and a < b and a != b


def test_guarded_takes_every_lock_or_none():
    """If the second host's lock is held, the first host's fresh lock is given back and
    no audit line is written (nothing ran)."""
    from ferry.host.session import HostSession, guarded
    from ferry.model.paths import HostPaths
    log = []

    def free(argv, data):
        log.append(("a", argv[-1][:40]))
        return 0, "", ""

    def taken(argv, data):
        return 75, json.dumps({"who": "bob@ops", "task": "restore", "since": 0}), ""
    a, b = FakeTransport(free, host="a"), FakeTransport(taken, host="b")
    sessions = [HostSession(t.host, t, {}, HostPaths("/opt/ferry", "llm-chat", "")) for t in (a, b)]
    with pytest.raises(HostError, match="bob@ops"):
        with guarded(sessions, "llm-chat", "backup"):
            raise AssertionError("the block must not run")
    assert len(a.calls) == 2 and "rm -rf" in a.calls[1].argv[-1]      # taken, then released


@pytest.mark.parametrize("exc,result,detail", [
    (KeyboardInterrupt, "interrupted", ""),
    # a bug in Ferry (not a FerryError) used to leave the line "ok": a crash is never audited as success
    (KeyError("uname_arch"), "failed", "KeyError: 'uname_arch'"),
], ids=["interrupted", "crashed"])
def test_guarded_writes_one_audit_line_per_host_even_when_interrupted(exc, result, detail):
    from ferry.host.session import HostSession, guarded
    from ferry.model.paths import HostPaths
    lines = []

    def host(argv, data):
        if "audit.log" in argv[-1]:
            lines.append(json.loads(data))
        return 0, "", ""
    t = FakeTransport(host, host="a")
    s = HostSession("a", t, {}, HostPaths("/opt/ferry", "llm-chat", ""))
    with pytest.raises(type(exc) if isinstance(exc, BaseException) else exc):
        with guarded([s], "llm-chat", "deploy", "1.0.0"):
            raise exc
    assert [(r["task"], r["result"], r["detail"]) for r in lines] == [("deploy", result, detail)]
    assert "rm -rf" in t.calls[-1].argv[-1]                               # and the lock released


def test_ctrl_c_during_the_round_trip_that_takes_the_lock_still_releases_it():
    """The host took the lock (info.json written) but Ctrl-C came before its answer: the
    controller releases it by the token it sent, and nothing else."""
    from ferry.host.session import HostSession, guarded
    from ferry.model.paths import HostPaths
    sent = {}

    def host(argv, data):
        if "mkdir" in argv[-1] and "info.json" in argv[-1] and "grep" not in argv[-1]:
            sent.update(json.loads(data))                   # the host has the lock now
            raise KeyboardInterrupt
        return 0, "", ""
    t = FakeTransport(host, host="a")
    s = HostSession("a", t, {}, HostPaths("/opt/ferry", "llm-chat", ""))
    with pytest.raises(KeyboardInterrupt):
        with guarded([s], "llm-chat", "deploy", "1.0.0"):
            raise AssertionError("the block must not run")
    release = t.calls[-1].argv[-1]
    assert sent["token"] and "grep -q " + sent["token"] in release and "rm -rf" in release
