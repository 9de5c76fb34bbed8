"""Role fixture tests in pyinfra's style: a host's facts in, the exact commands out.

The fake host answers only the commands it expects (anything else fails the test), so
each test pins what the role asks and what it changes: ``prune-releases`` (retention)
and ``render-config`` (a release directory from templates).
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from ferry.host import containers, files
from ferry.host.releases import read_host_command, read_releases_command
from ferry.host.shell import sh
from ferry.host.transport.fake import FakeTransport
from ferry.roles import load_role

B = "sha256:" + "b" * 64     # the bundle's backend image
N = "sha256:" + "n" * 64     # the bundle's nginx image


class Host:
    """Plays a host from a table ``{tuple(argv): (rc, stdout)}``; records what was sent."""

    def __init__(self, answers: dict[tuple, tuple[int, bytes | str]]):
        self.answers = answers

    def __call__(self, argv, data):
        key = tuple(argv)
        if key not in self.answers:
            raise AssertionError(f"unexpected command: {argv}")
        rc, out = self.answers[key]
        return rc, out, ""


def tar_of(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def release_files(stack: str, rid: str, images: list[str], bundle: str, prefix: str = "") -> dict[str, bytes]:
    """``release.json`` and ``manifest.json`` of one release, as the host's tar has them."""
    base = f"{prefix}releases/{rid}"
    return {f"{base}/release.json": json.dumps({"id": rid, "version": rid.split("-", 1)[1], "bundle": bundle}).encode(),
            f"{base}/manifest.json": json.dumps({"stack": stack, "images": [{"id": i} for i in images],
                                                 "files": []}).encode()}


# -- prune-releases --------------------------------------------------------------------

R1, R2, R3 = "20261101T000000.000Z-1.0.1", "20261102T000000.000Z-1.0.2", "20261103T000000.000Z-1.0.3"
IMG1, IMG2, IMG3 = ("sha256:" + c * 64 for c in "123")
OTHER = "sha256:" + "0" * 64          # used by another stack's release
SHA = {name: c * 64 for name, c in (("b1", "a"), ("b2", "c"), ("b3", "d"), ("shared", "e"), ("stray", "f"))}


def retention_host(keep_over: bool = True) -> dict[tuple, tuple[int, bytes | str]]:
    """llm-chat with releases 1.0.1 (image 1), 1.0.2 (image 2), 1.0.3 (image 3, current);
    the stack `other` whose release uses image 1 too; a stopped container of image 2;
    bundles linking their own file and a shared one; a stray store file."""
    mine = {**release_files("llm-chat", R1, [IMG1], "llm-chat-1.0.1"),
            **release_files("llm-chat", R2, [IMG2], "llm-chat-1.0.2"),
            **release_files("llm-chat", R3, [IMG3], "llm-chat-1.0.3")}
    every = {f"stacks/llm-chat/{k}": v for k, v in mine.items()}
    every.update(release_files("other", "20261001T000000.000Z-9", [IMG1, OTHER], "other-9", "stacks/other/"))
    links = "".join(f"{b}/images/x.tar /opt/ferry/store/{SHA[k]}\n{b}/docker/y /opt/ferry/store/{SHA['shared']}\n"
                    for b, k in (("llm-chat-1.0.1", "b1"), ("llm-chat-1.0.2", "b2"), ("llm-chat-1.0.3", "b3")))
    return {
        tuple(read_releases_command("/opt/ferry/stacks/llm-chat")): (0, f"releases/{R3}\n".encode() + tar_of(mine)),
        tuple(read_host_command("/opt/ferry")): (0, tar_of(every)),
        tuple(containers.container_images()): (0, f"{IMG2}\n{OTHER}\n"),
        tuple(containers.docker_images()): (0, f"{IMG1}\tllm-chat-backend:1.0.1\n{IMG2}\tllm-chat-backend:1.0.2\n"
                                               f"{IMG3}\tllm-chat-backend:1.0.3\n{OTHER}\tother:9\n"),
        tuple(files.list_links("/opt/ferry/bundles")): (0, links),
        tuple(files.list_dir_sizes("/opt/ferry/store")): (0, "".join(f"{s}\t100\n" for s in SHA.values())
                                                          + f"{SHA['b1']}.part\t5\n"),
        ("rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R1}", "/opt/ferry/bundles/llm-chat-1.0.1"): (0, ""),
        ("rm", "-f", "--", f"/opt/ferry/store/{SHA['b1']}", f"/opt/ferry/store/{SHA['stray']}"): (0, ""),
    }


def test_prune_releases_removes_the_oldest_release_its_bundle_and_orphans_but_no_shared_image(make_ctx):
    t = FakeTransport(Host(retention_host()))
    result = load_role("prune-releases").run(make_ctx(t, releases_keep=2))
    assert t.commands() == [
        read_releases_command("/opt/ferry/stacks/llm-chat"),
        read_host_command("/opt/ferry"),
        containers.docker_images(),
        containers.container_images(),
        files.list_links("/opt/ferry/bundles"),
        files.list_dir_sizes("/opt/ferry/store"),
        # 1.0.1 goes with its bundle; image 1 stays (the stack `other` uses it), image 2
        # stays (release 1.0.2 is kept), the stray file and 1.0.1's own file go, the
        # shared file and the half-written .part stay
        ["rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R1}", "/opt/ferry/bundles/llm-chat-1.0.1"],
        ["rm", "-f", "--", f"/opt/ferry/store/{SHA['b1']}", f"/opt/ferry/store/{SHA['stray']}"],
    ]
    assert result.changed and result.summary == "pruned 1 releases, 0 images, 1 bundles, 2 store files; kept 2"


def test_prune_releases_removes_an_image_only_dropped_releases_used_by_its_tags(make_ctx):
    answers = retention_host()
    answers[tuple(containers.container_images())] = (0, f"{OTHER}\n")         # image 2 unused now
    answers[("rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R1}", f"/opt/ferry/stacks/llm-chat/releases/{R2}",
             "/opt/ferry/bundles/llm-chat-1.0.1", "/opt/ferry/bundles/llm-chat-1.0.2")] = (0, "")
    answers[("docker", "rmi", "llm-chat-backend:1.0.2")] = (0, "")
    answers[("rm", "-f", "--", f"/opt/ferry/store/{SHA['b1']}", f"/opt/ferry/store/{SHA['b2']}",
             f"/opt/ferry/store/{SHA['stray']}")] = (0, "")
    t = FakeTransport(Host(answers))
    result = load_role("prune-releases").run(make_ctx(t, releases_keep=1))
    assert t.commands()[6:] == [
        ["rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R1}", f"/opt/ferry/stacks/llm-chat/releases/{R2}",
         "/opt/ferry/bundles/llm-chat-1.0.1", "/opt/ferry/bundles/llm-chat-1.0.2"],
        ["docker", "rmi", "llm-chat-backend:1.0.2"],
        ["rm", "-f", "--", f"/opt/ferry/store/{SHA['b1']}", f"/opt/ferry/store/{SHA['b2']}",
         f"/opt/ferry/store/{SHA['stray']}"],
    ]
    assert result.metrics == {"pruned_releases": 2, "pruned_images": 1}


def test_prune_releases_within_the_limit_reads_one_fact_and_changes_nothing(make_ctx):
    t = FakeTransport(Host(retention_host()))
    result = load_role("prune-releases").run(make_ctx(t, releases_keep=5))
    assert t.commands() == [read_releases_command("/opt/ferry/stacks/llm-chat")]
    assert not result.changed and result.summary == "3 releases kept (limit 5)"


def test_prune_releases_keeps_current_even_when_it_is_the_oldest(make_ctx):
    answers = retention_host()
    mine = {**release_files("llm-chat", R1, [IMG1], "llm-chat-1.0.1"),
            **release_files("llm-chat", R2, [IMG2], "llm-chat-1.0.2"),
            **release_files("llm-chat", R3, [IMG3], "llm-chat-1.0.3")}
    answers[tuple(read_releases_command("/opt/ferry/stacks/llm-chat"))] = (0, f"releases/{R1}\n".encode() + tar_of(mine))
    answers[("rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R2}", "/opt/ferry/bundles/llm-chat-1.0.2")] = (0, "")
    answers[("rm", "-f", "--", f"/opt/ferry/store/{SHA['b2']}", f"/opt/ferry/store/{SHA['stray']}")] = (0, "")
    t = FakeTransport(Host(answers))
    load_role("prune-releases").run(make_ctx(t, releases_keep=2))
    assert ["rm", "-rf", "--", f"/opt/ferry/stacks/llm-chat/releases/{R2}", "/opt/ferry/bundles/llm-chat-1.0.2"] \
        in t.commands()


def test_prune_releases_check_mode_reads_facts_and_removes_nothing(make_ctx):
    t = FakeTransport(Host(retention_host()))
    result = load_role("prune-releases").run(make_ctx(t, check=True, releases_keep=2))
    assert t.commands() == [read_releases_command("/opt/ferry/stacks/llm-chat"), read_host_command("/opt/ferry"),
                            containers.docker_images(), containers.container_images(),
                            files.list_links("/opt/ferry/bundles"), files.list_dir_sizes("/opt/ferry/store")]
    assert result.changed and result.summary == "would prune 1 releases, 0 images"


# -- render-config ---------------------------------------------------------------------

RID = "20261122T025844.123Z-1.0.0"
WANTED = ["current/compose.yml", "current/.env", "current/nginx.conf", "current/release.json", "secrets.json",
          "up.json"]


def write_script(rid: str = RID) -> list[str]:
    """The one command render-config writes a release with (stack llm-chat, bundle 1.0.0)."""
    return sh("set -e; mkdir -p /opt/ferry/stacks/llm-chat/releases /opt/ferry/stacks/llm-chat/data "
              "/opt/ferry/stacks/llm-chat/data/db; cd /opt/ferry/stacks/llm-chat; "
              f"if [ -e releases/{rid} ]; then echo 'release {rid} exists already' >&2; exit 17; fi; "
              f"tar --no-same-owner -xf -; chmod 0755 releases/{rid}; "
              f"cp /opt/ferry/bundles/llm-chat-1.0.0/manifest.json releases/{rid}/manifest.json")


@pytest.fixture
def render(monkeypatch):
    role = load_role("render-config")
    monkeypatch.setattr(role, "release_id", lambda version, now=None: f"20261122T025844.123Z-{version}")
    return role


def members(data: bytes) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar}


def test_render_first_deploy_reads_one_fact_and_writes_one_release(render, make_ctx):
    t = FakeTransport(Host({tuple(files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)): (0, b""),
                            tuple(write_script()): (0, "")}))
    ctx = make_ctx(t, llm_api_key="sk-secret")
    result = render.run(ctx)
    assert t.commands() == [files.read_tar("/opt/ferry/stacks/llm-chat", WANTED), write_script()]
    sent = members(t.calls[1].input)
    assert {n: mode for n, (_, mode) in sent.items()} == {
        f"releases/{RID}/compose.yml": 0o644, f"releases/{RID}/.env": 0o600, f"releases/{RID}/nginx.conf": 0o644,
        f"releases/{RID}/release.json": 0o644, "secrets.json": 0o600}
    release = json.loads(sent[f"releases/{RID}/release.json"][0])
    assert (release["id"], release["bundle"], release["version"]) == (RID, "llm-chat-1.0.0", "1.0.0")
    assert b"LLM_API_KEY='sk-secret'" in sent[f"releases/{RID}/.env"][0]
    assert (ctx.state.release, ctx.state.release_changed, ctx.state.previous_release) == (RID, True, None)
    assert result.changed and result.summary.startswith(f"release {RID}: compose.yml, .env, nginx.conf, new bundle ")


def current_release(render, make_ctx, **over) -> tuple[dict[str, bytes], bytes]:
    """The host's stack dir after a first deploy with ``over``: its read_tar answer."""
    t = FakeTransport(Host({tuple(files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)): (0, b""),
                            tuple(write_script()): (0, "")}))
    render.run(make_ctx(t, **over))
    sent = members(t.calls[1].input)
    found = {f"current/{n.split('/', 2)[2]}": data for n, (data, _) in sent.items() if n.startswith("releases/")}
    found["secrets.json"] = sent["secrets.json"][0]
    return found, tar_of(found)


def test_render_unchanged_reads_one_fact_and_writes_nothing(render, make_ctx):
    _, answer = current_release(render, make_ctx)
    t = FakeTransport(Host({tuple(files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)): (0, answer)}))
    ctx = make_ctx(t)
    result = render.run(ctx)
    assert t.commands() == [files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)]
    assert not result.changed and result.summary == f"config unchanged (release {RID})"
    assert (ctx.state.release, ctx.state.release_changed) == (RID, False)


def test_render_check_mode_shows_the_change_and_writes_nothing(render, make_ctx, out):
    _, answer = current_release(render, make_ctx)
    t = FakeTransport(Host({tuple(files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)): (0, answer)}))
    result = render.run(make_ctx(t, check=True, client_max_body_size="64m"))
    assert t.commands() == [files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)]
    # compose.yml too: nginx's ferry.config-digest label follows its mounted nginx.conf
    assert result.changed and result.summary == "would write a release: compose.yml, nginx.conf"
    assert "+    client_max_body_size 64m;" in out.getvalue()


def test_render_a_changed_variable_writes_a_new_release_keeping_the_secrets(render, make_ctx):
    found, answer = current_release(render, make_ctx)
    t = FakeTransport(Host({tuple(files.read_tar("/opt/ferry/stacks/llm-chat", WANTED)): (0, answer),
                            tuple(write_script()): (0, "")}))
    result = render.run(make_ctx(t, llm_model="qwen2-72b"))
    assert t.commands() == [files.read_tar("/opt/ferry/stacks/llm-chat", WANTED), write_script()]
    sent = members(t.calls[1].input)
    assert "secrets.json" not in sent                          # kept as they are on the host
    assert sent[f"releases/{RID}/.env"][0] != found["current/.env"]
    key = json.loads(found["secrets.json"])["SECRET_KEY"]
    assert f"SECRET_KEY='{key}'".encode() in sent[f"releases/{RID}/.env"][0]
    assert result.summary == f"release {RID}: .env"
