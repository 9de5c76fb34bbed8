"""A whole deploy against a fake host that already runs the bundle (facts in, commands
out): the SSH round trips of a no-op redeploy, and what it reads and writes.

The pretend host answers every command the deploy sends, each from the builders Ferry
uses (``ferry.host.*``), in the state a finished deploy of the roles' test bundle leaves
(its release rendered by render-config itself, its model resolved by the real Compose);
batches are answered command by command (``FakeTransport(unbatch=True)``), one call each.
Any command it does not know fails the test.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from rich.console import Console

from ferry.actions.deploy import deploy, prepare
from ferry.controller import composecli
from ferry.controller.inventory import Inventory
from ferry.model.manifest import CHECKSUMS, MANIFEST, checksums_text
from ferry.host import backup as hb, containers, files, verify
from ferry.host.facts import key
from ferry.host.releases import read_releases_command
from ferry.host.transport.fake import FakeTransport
from ferry.model.compose import parse_model
from ferry.resources import data_dir
from ferry.roles import RoleContext, load_role
from ferry.ui import UI
from test_role_fixtures import tar_of

RID = "20261122T025844.123Z-1.0.0"
NOW = 1795316400                                   # 2026-11-22T03:00:00Z


class DeployedHost:
    """Plays a host where the roles' test bundle runs, healthy, as a deploy left it.

    Attributes:
        answers: ``{command line (ferry.host.facts.key): (rc, stdout)}`` of every read.
        writes: the commands that changed something (argv), in order.
    """

    def __init__(self, plan, monkeypatch, name: str = ""):
        name = name or plan.hosts[0].name
        b, stack, paths, v = plan.bundle, plan.stack, plan.paths(name), plan.host_vars[name]
        ui = UI(Console(file=io.StringIO()))
        ctx = RoleContext(name, None, v, b, stack, paths, ui)
        self.writes: list[list[str]] = []

        # the release as render-config writes it on a first deploy
        render = load_role("render-config")
        monkeypatch.setattr(render, "release_id", lambda version, now=None: RID)
        first = FakeTransport(lambda argv, data: (0, b"", b""), host=name)
        render.run(RoleContext(name, first, v, b, stack, paths, ui))
        with tarfile.open(fileobj=io.BytesIO(first.calls[1].input)) as tar:
            sent = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        release = {n.split("/", 2)[2]: data for n, data in sent.items() if n.startswith(f"releases/{RID}/")}
        rendered = {n: d for n, d in release.items() if n != "release.json"}
        model_json = composecli.config_json(rendered, stack.name, paths.current, b.path)
        model = parse_model(json.loads(model_json))

        inspect = []
        for svc in model.services.values():
            ports = {f"{p.target}/{p.protocol}": [{"HostIp": p.host_ip, "HostPort": str(p.port)}] for p in svc.ports}
            mounts = [{"Type": "bind", "Source": bd.source, "Destination": bd.target} for bd in svc.binds]
            inspect.append({"Id": f"{svc.name}-id", "Name": f"/llm-chat-{svc.name}-1", "RestartCount": 0,
                            "Image": "sha256:" + "0" * 64,
                            "State": {"Status": "running", "Running": True, "StartedAt": "2026-11-22T02:50:00Z",
                                      "ExitCode": 0, "Health": {"Status": "healthy"}},
                            "Config": {"Labels": {"com.docker.compose.service": svc.name,
                                                  "com.docker.compose.project": stack.name,
                                                  "com.docker.compose.project.working_dir": paths.current}},
                            "NetworkSettings": {"Ports": ports}, "Mounts": mounts})
        up = {"release": RID, "containers": {i["Config"]["Labels"]["com.docker.compose.service"]: i["Id"]
                                             for i in inspect}}
        current = {f"current/{n}": d for n, d in release.items()}
        listening = "".join(f"LISTEN 0 4096 0.0.0.0:{p.port} 0.0.0.0:*\n" for p, _ in model.published())
        installer = load_role("install-docker-offline")
        engine = "\n".join([
            "machine=x86_64", "kernel=6.1.0-18-amd64", "os=Debian GNU/Linux 12 (bookworm)", "dpkg_arch=amd64",
            "systemd=yes", "cgroup=v2", "iptables=iptables v1.8.9 (nf_tables)", "tar=/usr/bin/tar",
            "gzip=/usr/bin/gzip", "engine_fingerprint=" + "f" * 64,
            "dockerd=Docker version 20.10.24+dfsg1, build 5d6db84", f"compose={b.manifest['docker']['compose']}",
            "probes=cached", "docker_active=active", "docker_enabled=enabled", "containerd_active=active",
            "containerd_enabled=enabled",
            f"sum={installer._sha(installer.render_daemon_json(v))} /etc/docker/daemon.json",
            *[f"pkg={n} {ver} ii " for n, ver in b.manifest["docker"]["packages"].items()]]) + "\n"
        ctx.t = FakeTransport(lambda a, d: (0, b"", b""), host=name)
        settings_dir = hb.settings_path(paths, RID).lstrip("/")
        backup_role = load_role("backup")
        self.answers = {key(argv): answer for argv, answer in [
            (containers.project_dirs(stack.name), (0, paths.current + "\n")),
            (files.list_dir(paths.store), (0, "".join(f["sha256"] + "\n" for f in b.all_files()))),
            (files.list_links(paths.bundle_dir),
             (0, "".join(f"{f['path']} {paths.store}/{f['sha256']}\n" for f in b.all_files()))),
            (installer.facts_command(ctx), (0, engine)),
            (containers.engine_images(), (0, "".join(
                f"{i['id']}\t{json.dumps(i['tags'])}\t{json.dumps([l['diff_id'] for l in i.get('layers', [])])}\n"
                for i in b.manifest["images"]))),
            (load_role("upload-bundle").facts(ctx)[3], (0, "")),        # every store file re-hashed: good
            (load_role("render-config").facts(ctx)[0],
             (0, tar_of({**current, "secrets.json": sent["secrets.json"], "up.json": json.dumps(up).encode()}))),
            (containers.host_facts(), (0, "==containers\n" + json.dumps(inspect) + "\n==networks\n[]\n==sockets\n")),
            (containers.project_containers(stack.name), (0, f"{NOW}\n" + json.dumps(inspect))),
            (hb.installed_command(paths),
             (0, tar_of({hb.script_path(paths).lstrip("/"): (data_dir("files") / "ferry-backup").read_bytes(),
                         settings_dir: f"fingerprint\t{backup_role.fingerprint(ctx, RID)}\n".encode()}))),
            (read_releases_command(paths.stack_dir),
             (0, f"releases/{RID}\n".encode() + tar_of({f"releases/{RID}/release.json": release["release.json"]}))),
            (verify.facts(stack, paths.current)[0], (0, model_json)),
            (verify.SOCKETS, (0, "State Recv-Q Send-Q Local Address:Port Peer Address:Port\n" + listening)),
        ]}

    def __call__(self, argv, data):
        line = key(argv)
        if line in self.answers:
            rc, out = self.answers[line]
            return rc, out, ""
        if argv[0] == "curl":
            return 0, "200", ""                                 # the health URLs answer
        if argv[:2] == ["test", "-e"]:
            return 0, "", ""                                    # bind sources exist
        if "mkdir " in line and "/locks/llm-chat" in line and "info.json" in line and "grep -q" not in line:
            self.writes.append(argv)                            # the lock, taken
            return 0, "", ""
        if "audit.log" in line:
            self.writes.append(argv)                            # the audit line, and the lock released
            return 0, "", ""
        raise AssertionError(f"the deploy sent a command the host did not expect: {line[:300]}")


@pytest.fixture
def noop(bundle, tmp_path, monkeypatch):
    inv = tmp_path / "inventory.yml"
    (tmp_path / "known_hosts").write_text("")
    inv.write_text("all:\n  hosts:\n    fake-1:\n      ansible_host: 10.0.0.1\n"
                   f"      ferry_known_hosts: {tmp_path / 'known_hosts'}\n")
    manifest = (bundle.path / MANIFEST).read_bytes()        # as `ferry bundle` writes it
    (bundle.path / CHECKSUMS).write_text(checksums_text(json.loads(manifest), hashlib.sha256(manifest).hexdigest()))
    plan = prepare(Inventory(inv), "fake-1", "llm-chat", bundle.path, bundle.path.parent, {})
    host = DeployedHost(plan, monkeypatch)
    opened = []

    def opener(h):
        opened.append(FakeTransport(host, host=h.name, unbatch=True))
        return opened[-1]
    plan.opener = opener
    return plan, host, opened


def test_a_noop_redeploy_costs_three_round_trips_and_changes_nothing(noop):
    plan, host, opened = noop
    out = io.StringIO()
    [report] = deploy(plan, UI(Console(file=out, width=200)))
    assert report.status == "ok" and not report.error, out.getvalue()
    assert [n for n, r, _ in report.results if r.changed] == []
    assert report.checks and all(c.ok for c in report.checks)
    [t] = opened
    assert report.round_trips == t.round_trips == 3
    facts, health, audit = t.calls
    assert facts.batch[0] == host.writes[0]                     # the lock first, the facts under it
    assert len(facts.batch) > 10
    assert all(argv[0] == "curl" or argv[:2] == ["test", "-e"] for argv in health.batch)
    assert "audit.log" in audit.argv[-1] and "rm -rf" in audit.argv[-1]
    assert len(host.writes) == 2                                # the lock, then the audit line and its release


def test_check_mode_gathers_the_same_facts_without_lock_or_audit(noop):
    plan, host, opened = noop
    [report] = deploy(plan, UI(Console(file=io.StringIO())), check=True)
    assert report.status == "ok" and [n for n, r, _ in report.results if r.changed] == []
    [t] = opened
    assert t.round_trips == 1 and host.writes == []


def test_a_port_held_by_another_stack_is_refused_from_the_facts_and_the_lock_released(noop):
    plan, host, opened = noop
    line = key(containers.host_facts())
    rc, text = host.answers[line]
    port = plan.models["fake-1"].published()[0][0].port
    other = [{"Id": "x", "Name": "/other-web-1", "State": {"Status": "running"},
              "Config": {"Labels": {"com.docker.compose.project": "other"}},
              "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}}}]
    before, _, rest = text.partition("\n==networks")
    mine = json.loads(before.split("\n", 1)[1])
    host.answers[line] = (rc, "==containers\n" + json.dumps(mine + other) + "\n==networks" + rest)
    with pytest.raises(Exception, match=f"host port {port}/tcp .* already published by stack 'other'"):
        deploy(plan, UI(Console(file=io.StringIO())))
    [t] = opened
    assert t.round_trips == 2                                   # the facts with the lock; the lock's release
    assert "audit.log" not in t.calls[1].argv[-1] and "rm -rf" in t.calls[1].argv[-1]


def test_connect_lock_facts_and_audit_run_on_every_host_at_once(bundle, tmp_path, monkeypatch):
    """Issue 12: connect, the lock with the facts (and preflight on them), and the audit
    line with the lock's release are not done host after host: each of those steps
    waits here until all three hosts are in it (a barrier), so a deploy that took them
    one host at a time would time out and fail."""
    import threading
    inv = tmp_path / "inventory.yml"
    (tmp_path / "known_hosts").write_text("")
    inv.write_text("all:\n  hosts:\n" + "".join(f"    fake-{i}:\n      ansible_host: 10.0.0.{i}\n"
                                                 f"      ferry_known_hosts: {tmp_path / 'known_hosts'}\n"
                                                 for i in (1, 2, 3)))
    manifest = (bundle.path / MANIFEST).read_bytes()
    (bundle.path / CHECKSUMS).write_text(checksums_text(json.loads(manifest), hashlib.sha256(manifest).hexdigest()))
    plan = prepare(Inventory(inv), "all", "llm-chat", bundle.path, bundle.path.parent, {})
    deployed = {h.name: DeployedHost(plan, monkeypatch, h.name) for h in plan.hosts}
    steps = {step: threading.Barrier(3, timeout=20) for step in ("connect", "lock", "audit")}

    def at_once(step):
        steps[step].wait()                                      # BrokenBarrierError: not all hosts came

    def answering(host):
        def answer(argv, data):
            line = key(argv)
            if "mkdir " in line and "/locks/llm-chat" in line and "info.json" in line and "grep -q" not in line:
                at_once("lock")
            elif "audit.log" in line:
                at_once("audit")
            return host(argv, data)
        return answer

    def opener(h):
        at_once("connect")
        return FakeTransport(answering(deployed[h.name]), host=h.name, unbatch=True)
    plan.opener = opener
    reports = deploy(plan, UI(Console(file=io.StringIO(), width=200)))
    assert [(r.host, r.status, r.round_trips) for r in reports] == [(f"fake-{i}", "ok", 3) for i in (1, 2, 3)]
    assert all(len(host.writes) == 2 for host in deployed.values())     # its lock, its audit line
