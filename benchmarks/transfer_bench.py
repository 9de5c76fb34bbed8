"""Transfer benchmark on sandbox hosts: prints figures and ratios, asserts nothing.

Three sections, each a comparison run interleaved in this one process against the same
host, with the same cipher (``aes128-gcm@openssh.com``) and the same timing boundaries
(from the start of the first process or connection to the end of the last):

``upload``
    The llm-chat bundle as a fresh host (no Docker) gets it: every file it needs, about
    240 MB (the .debs of packages the host already has are not sent; scp and rsync get
    exactly the same files).
    Ferry's upload-bundle (paramiko connect, facts, ONE OpenSSH stream into the
    hashing receiver, links, close) against ``scp -r`` and ``rsync -a`` of the same
    bundle directory to the same host. Rounds rotate the order; min and median of each.
``onelayer``
    llm-chat deployed, then each round a new version whose backend image gained one
    layer of 10 kB of random bytes. Bytes the host received (its network counter) for
    the upload phase (``deploy`` with upload-bundle only: connect, facts, lock, the
    stream, links, audit) and for the whole deploy, against the target
    ``1.05 x changed layer (gzip) + 64 kB``; comparator: ``rsync`` of the new
    ``docker save`` tar over the old one already on the host (rsync's delta transfer).
``firstdeploy``
    A host that runs the bundle's exact Docker and nothing else. Ferry's whole first
    deploy against the seed notes' path: ``scp`` of gzip'd ``docker save`` tars and the
    same rendered config, then one ``ssh`` running ``gunzip | docker load`` for each and
    ``docker compose up -d --wait``. Bytes on the wire (host counter) and wall time.

Usage (after ``make bootstrap``; its own sandbox, recreated fresh)::

    FERRY_SANDBOX_NAME=ferry-bench .venv/bin/python benchmarks/transfer_bench.py [--rounds 3] [SECTION...]

These machines are noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from devkit import sandbox as sbx  # noqa: E402
from devkit.images import build_bundle, derive_image_with_files  # noqa: E402
from ferry.actions.deploy import deploy, prepare  # noqa: E402
from ferry.controller.bundle import build_bundle as product_build  # noqa: E402
from ferry.controller.inventory import Inventory  # noqa: E402
from ferry.controller.localdocker import docker  # noqa: E402
from ferry.host.facts import prefetched  # noqa: E402
from ferry.host.transport.ssh import connect_host  # noqa: E402
from ferry.model.paths import HostPaths  # noqa: E402
from ferry.roles import RoleContext, load_role, role_defaults  # noqa: E402
from ferry.ui import UI  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"
STACK = ROOT / "stacks" / "llm-chat"
ui = UI()


def quiet() -> UI:
    return UI(Console(file=io.StringIO(), width=200))


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def controller_cpu() -> float:
    """CPU seconds of this process and its finished children (ssh, scp, rsync)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def stats(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


class Bench:
    """The benchmark's sandbox: hosts by index, SSH options shared by every comparator."""

    def __init__(self, sb):
        self.sb = sb
        self.inventory = Inventory(sb.inventory)
        self.dist = ROOT / "dist" / "bench"
        self.dist.mkdir(parents=True, exist_ok=True)

    def host(self, i: int):
        return self.sb.hosts[i - 1]

    def ssh_opts(self) -> list[str]:
        return ["-i", str(self.sb.key_file), "-o", f"UserKnownHostsFile={self.sb.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-c", CIPHER]

    def exec(self, i: int, script: str) -> str:
        """Run ``script`` on host ``i`` with docker exec (not over the network)."""
        return docker("exec", self.host(i).container, "sh", "-c", script).stdout.decode()

    def rx(self, i: int) -> int:
        return sbx.wire_bytes(self.host(i).container)[0]


# -- upload ----------------------------------------------------------------------------------

def upload(b: Bench, rounds: int, host: int = 1) -> list[list[str]]:
    h = b.host(host)
    sbx.install_debs(h.container, ["rsync"], console=ui.console)
    bundle = build_bundle(STACK, b.dist, None, quiet(), role_defaults("install-docker-offline"))
    ip = h.ip
    paths = HostPaths("/opt/ferry-bench", bundle.stack_name, bundle.name)
    b.exec(host, "rm -rf /opt/ferry-bench")
    # what Ferry sends this fresh host (every file but the .debs it already has installed);
    # scp and rsync get exactly these files, hard-linked into a directory of their own
    t = connect_host(b.inventory.hosts[h.name], b.inventory)
    send = load_role("upload-bundle").plan(
        RoleContext(h.name, t, role_defaults("upload-bundle"), bundle, bundle.stack(), paths, quiet())).send
    t.close()
    same = b.dist / "upload-set" / bundle.name
    if same.parent.exists():
        shutil.rmtree(same.parent)
    for f in send:
        (same / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        os.link(bundle.path / f["path"], same / f["path"])
    size = sum(f["size"] for f in send)
    count = len(send)

    def reset() -> None:
        b.exec(host, "rm -rf /opt/ferry-bench /tmp/bench-scp /tmp/bench-rsync; mkdir -p /tmp/bench-scp /tmp/bench-rsync")

    def scp() -> None:
        subprocess.run(["scp", "-q", "-r", *b.ssh_opts(), str(same), f"root@{ip}:/tmp/bench-scp/"], check=True)

    def rsync() -> None:
        subprocess.run(["rsync", "-a", "-e", "ssh " + " ".join(shlex.quote(o) for o in b.ssh_opts()),
                        str(same), f"root@{ip}:/tmp/bench-rsync/"], check=True)

    ciphers = {}
    streams: list[float] = []

    def ferry() -> None:
        t = prefetched(connect_host(b.inventory.hosts[h.name], b.inventory))
        ciphers["paramiko"] = t.cipher()
        ctx = RoleContext(h.name, t, role_defaults("upload-bundle"), bundle, bundle.stack(), paths, quiet())
        role = load_role("upload-bundle")
        t.gather(role.facts(ctx) + load_role("install-docker-offline").facts(ctx))   # one round trip, as deploy
        result = role.run(ctx)
        t.close()
        if result.metrics["bytes"] != size:
            raise SystemExit(f"ferry uploaded {result.metrics['bytes']} B, expected {size} B")
        streams.append(result.metrics["seconds"])

    methods = {"scp -r": scp, "rsync -a": rsync, "ferry upload-bundle": ferry}
    times: dict[str, list[float]] = {m: [] for m in methods}
    wire: dict[str, list[int]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:
            reset()
            rx0, c0, h0 = b.rx(host), controller_cpu(), sbx.cpu_seconds(h.container) or 0.0
            started = time.monotonic()
            methods[name]()
            times[name].append(time.monotonic() - started)
            wire[name].append(b.rx(host) - rx0)
            cpu[name].append(controller_cpu() - c0 + (sbx.cpu_seconds(h.container) or 0.0) - h0)
    ferry_min, ferry_med = stats(times["ferry upload-bundle"])
    rows = []
    for name in names:
        lo, med = stats(times[name])
        rows.append([name, f"{lo:.2f} / {med:.2f} s", f"{size / med / 1e6:.0f} MB/s", mb(statistics.median(wire[name])),
                     f"{lo / ferry_min:.2f} / {med / ferry_med:.2f}", f"{statistics.median(cpu[name]):.2f} s"])
    s_min, s_med = stats(streams)
    rows.append(["  of which Ferry's stream (its ssh process: handshake, send, hash, links)",
                 f"{s_min:.2f} / {s_med:.2f} s", f"{size / s_med / 1e6:.0f} MB/s", "",
                 f"scp / stream: {stats(times['scp -r'])[0] / s_min:.2f} / {statistics.median(times['scp -r']) / s_med:.2f}",
                 ""])
    ui.table(f"upload: {count} files, {mb(size)}, fresh host, {rounds} rounds interleaved; cipher {CIPHER} "
             f"(OpenSSH for scp, rsync and Ferry's stream; paramiko's control connection: {ciphers.get('paramiko')})",
             ["method", "time min / median", "rate (median)", "host received", "its time / Ferry's (min / median)",
              "CPU, both ends (median)"], rows)
    scp_ratio = statistics.median(times["scp -r"]) / ferry_med
    cpu_ratio = statistics.median(cpu["scp -r"]) / statistics.median(cpu["ferry upload-bundle"])
    rsync_ratio = statistics.median(times["rsync -a"]) / ferry_med
    reset()
    stream_ratio = statistics.median(times["scp -r"]) / s_med
    return [["upload rate, Ferry's stream (one ssh process, like scp's) / scp (same files, same cipher, median)",
             f"{stream_ratio:.2f}", ">= 1.0", "transfer_bench.py upload"],
            ["upload-bundle end to end (connect, facts, stream, links) / scp (median)", f"{scp_ratio:.2f}", "",
             "transfer_bench.py upload"],
            ["upload rate, Ferry's stream / rsync (median)",
             f"{statistics.median(times['rsync -a']) / s_med:.2f}", "", "transfer_bench.py upload"],
            ["upload-bundle end to end / rsync (median)", f"{rsync_ratio:.2f}", "", "transfer_bench.py upload"],
            ["upload CPU (controller + host), scp / Ferry (median)", f"{cpu_ratio:.2f}", "", "transfer_bench.py upload"]]


# -- one layer ---------------------------------------------------------------------------

def stack_version(tmp: Path, version: str, backend: str) -> Path:
    d = tmp / f"llm-chat-{version}"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(STACK, d, ignore=shutil.ignore_patterns("images"))
    text = (d / "stack.yml").read_text()
    (d / "stack.yml").write_text(re.sub(r'(?m)^version:.*$', f'version: "{version}"', text)
                                 .replace("backend: llm-chat-backend:1.0.0", f"backend: {backend}"))
    return d


def deploy_bytes(b: Bench, i: int, bundle: Path, roles: list[str] | None = None) -> tuple[int, float, list]:
    rx0 = b.rx(i)
    started = time.monotonic()
    plan = prepare(b.sb.inventory, b.host(i).name, "llm-chat", bundle, bundle.parent, {})
    reports = deploy(plan, quiet(), roles=roles, do_verify=roles is None)
    seconds = time.monotonic() - started
    if reports[0].error:
        raise SystemExit(f"deploy of {bundle.name} failed: {reports[0].error}")
    return b.rx(i) - rx0, seconds, reports


def onelayer(b: Bench, rounds: int) -> list[list[str]]:
    h = b.host(2)
    sbx.install_debs(h.container, ["rsync"], console=ui.console)
    v1 = build_bundle(STACK, b.dist, None, quiet(), role_defaults("install-docker-offline"))
    deploy_bytes(b, 2, v1.path)
    tmp = b.dist / "stacks"
    tmp.mkdir(exist_ok=True)
    saved = b.dist / "onelayer"
    saved.mkdir(exist_ok=True)
    docker("save", "-o", str(saved / "old.tar"), "llm-chat-backend:1.0.0")
    rows = []
    for r in range(rounds):
        tag = f"llm-chat-backend:bench-{int(time.time())}-{r}"
        derive_image_with_files("llm-chat-backend:1.0.0", tag, {"/app/patch.bin": os.urandom(10_000)})
        started = time.monotonic()
        out = io.StringIO()
        v2 = product_build(stack_version(tmp, f"1.1.{r}", tag), b.dist, None, UI(Console(file=out, width=200)),
                           role_defaults("install-docker-offline"))
        build_s = time.monotonic() - started
        backend = next(i for i in v2.manifest["images"] if i["service"] == "backend")
        layer = backend["layers"][-1]["size"]
        up, up_s, reports = deploy_bytes(b, 2, v2.path, roles=["upload-bundle"])
        sent = reports[0].metric("bytes")
        rest, _, _ = deploy_bytes(b, 2, v2.path)
        # comparator: rsync's delta of the new docker save tar over the old one on the host
        docker("save", "-o", str(saved / "new.tar"), tag)
        docker("cp", str(saved / "old.tar"), f"{h.container}:/tmp/backend.tar")
        rx0 = b.rx(2)
        subprocess.run(["rsync", "-a", "--no-whole-file", "-e", "ssh " + " ".join(shlex.quote(o) for o in b.ssh_opts()),
                        str(saved / "new.tar"), f"root@{h.ip}:/tmp/backend.tar"], check=True)
        delta = b.rx(2) - rx0
        target = 1.05 * layer + 64_000
        rows.append([str(r + 1), f"{layer} B", f"{sent} B", mb(up), f"{up / target:.2f}", mb(up + rest),
                     f"{(up + rest) / target:.2f}", mb(delta), f"{up / delta:.2f}", f"{build_s:.1f} s"])
        docker("rmi", tag, check=False)
    ui.table(f"one-layer change: backend + one 10 kB layer, {rounds} rounds; target = 1.05 x layer (gzip) + 64 kB",
             ["round", "changed layer (gzip)", "Ferry sent (stream)", "upload phase on the wire",
              "/ target", "whole deploy on the wire", "/ target", "rsync delta of docker save tar",
              "upload / rsync", "inv bundle of v2"], rows)
    med = statistics.median(float(r[4]) for r in rows)
    med_all = statistics.median(float(r[6]) for r in rows)
    med_rsync = statistics.median(float(r[8]) for r in rows)
    return [["one-layer change: upload phase bytes / (1.05 x layer + 64 kB), median", f"{med:.2f}", "<= 1.0",
             "transfer_bench.py onelayer"],
            ["one-layer change: whole deploy bytes / (1.05 x layer + 64 kB), median", f"{med_all:.2f}", "",
             "transfer_bench.py onelayer"],
            ["one-layer change: upload bytes / rsync delta of the new docker save tar", f"{med_rsync:.2f}", "",
             "transfer_bench.py onelayer"]]


# -- first deploy vs the seed path ------------------------------------------------------------

def firstdeploy(b: Bench, rounds: int) -> list[list[str]]:
    h = b.host(3)
    bundle = build_bundle(STACK, b.dist, None, quiet(), role_defaults("install-docker-offline"))
    # the host gets the bundle's exact Docker, then loses everything else
    deploy_bytes(b, 3, bundle.path, roles=["upload-bundle", "install-docker-offline"])
    seed = b.dist / "seed"
    if seed.exists():
        shutil.rmtree(seed)
    seed.mkdir()
    tars = []
    for image in bundle.manifest["images"]:
        tar = seed / (re.sub(r"[^A-Za-z0-9._-]", "_", image["ref"]) + ".tar.gz")
        with open(tar, "wb") as out:                # docker save IMAGE | gzip > TAR, without a shell
            save = subprocess.Popen(["docker", "save", image["ref"]], stdout=subprocess.PIPE)
            subprocess.run(["gzip"], stdin=save.stdout, stdout=out, check=True)
            save.stdout.close()
            if save.wait():
                raise SystemExit(f"docker save {image['ref']} failed")
        tars.append(tar)
    seed_image_bytes = sum(t.stat().st_size for t in tars)

    def reset() -> None:
        b.exec(3, "docker ps -aq | xargs -r docker rm -f >/dev/null; docker images -aq | xargs -r docker rmi -f "
                  ">/dev/null 2>&1; rm -rf /opt/ferry /root/seed; true")

    release: list[Path] = []

    def ferry() -> int:
        rx, seconds, reports = deploy_bytes(b, 3, bundle.path)
        if not release:
            for name in ("compose.yml", ".env", "nginx.conf"):
                text = b.exec(3, f"cat /opt/ferry/stacks/llm-chat/current/{name}")
                text = text.replace("/opt/ferry/stacks/llm-chat/current/", "/root/seed/") \
                           .replace("/opt/ferry/stacks/llm-chat/data/", "/root/seed/data/")
                (seed / name).write_text(text)
                release.append(seed / name)
        return rx, seconds

    def seed_path() -> int:
        rx0 = b.rx(3)
        started = time.monotonic()
        subprocess.run(["ssh", *b.ssh_opts(), f"root@{h.ip}", "mkdir -p /root/seed/data/db"], check=True)
        subprocess.run(["scp", "-q", *b.ssh_opts(), *map(str, tars + release), f"root@{h.ip}:/root/seed/"], check=True)
        subprocess.run(["ssh", *b.ssh_opts(), f"root@{h.ip}",
                        "cd /root/seed && for f in *.tar.gz; do gunzip -c \"$f\" | docker load -q >/dev/null || exit 1; "
                        "done && docker compose -p llm-chat -f compose.yml up -d --wait --wait-timeout 300 >/dev/null 2>&1"],
                       check=True)
        return b.rx(3) - rx0, time.monotonic() - started

    results: dict[str, list[tuple[int, float]]] = {"ferry deploy": [], "seed path": []}
    for r in range(rounds):
        order = [("ferry deploy", ferry), ("seed path", seed_path)]
        if r % 2 and release:
            order.reverse()
        for name, fn in order:
            reset()
            results[name].append(fn())
    reset()
    f_bytes = statistics.median(x[0] for x in results["ferry deploy"])
    s_bytes = statistics.median(x[0] for x in results["seed path"])
    f_time = statistics.median(x[1] for x in results["ferry deploy"])
    s_time = statistics.median(x[1] for x in results["seed path"])
    ui.table(f"first deploy on a host running the bundle's Docker, {rounds} rounds "
             f"(seed path images: {mb(seed_image_bytes)} of gzip'd docker save tars)",
             ["method", "host received (median)", "wall time min / median"],
             [["ferry deploy (upload, load, render, up, verify)", mb(f_bytes),
               "%.1f / %.1f s" % (min(x[1] for x in results["ferry deploy"]), f_time)],
              ["seed path (scp gz tars + config, gunzip | docker load, compose up)", mb(s_bytes),
               "%.1f / %.1f s" % (min(x[1] for x in results["seed path"]), s_time)],
              ["ratio Ferry / seed", f"{f_bytes / s_bytes:.3f}", f"{f_time / s_time:.2f}"]])
    return [["first deploy bytes on the wire, Ferry / seed path (median)", f"{f_bytes / s_bytes:.3f}", "<= 1.0",
             "transfer_bench.py firstdeploy"],
            ["first deploy wall time, Ferry / seed path (median; Ferry also verifies)", f"{f_time / s_time:.2f}", "",
             "transfer_bench.py firstdeploy"]]


SECTIONS = {"upload": upload, "onelayer": onelayer, "firstdeploy": firstdeploy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per comparison (>= 3 for min/median)")
    ap.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = ap.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]!r} (one of {', '.join(SECTIONS)})")
    ui.info("sandbox: 3 fresh hosts")
    b = Bench(sbx.up(count=3, fresh=True, console=ui.console))
    summary = []
    for name in args.sections or list(SECTIONS):
        summary += SECTIONS[name](b, args.rounds)
    ui.table("transfer benchmark: ratios", ["figure", "ratio", "target", "command"], summary)


if __name__ == "__main__":
    main()
