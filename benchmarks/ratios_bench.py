"""Deploy ratios on sandbox hosts (issue 12): prints figures, asserts nothing.

Each section compares two commands run in this one process against the same hosts,
interleaved (the order alternating), with the same cipher (``aes128-gcm@openssh.com``)
and the same timing boundaries (from the start of the command's process to its end),
``--rounds`` rounds; it prints every round, the min and the median of each, and their
ratios (:mod:`ratio`).

``noop``
    A no-op redeploy of llm-chat (``ferry deploy``, the same bundle again) against an
    Ansible playbook doing the same job on the same host with the same bundle files
    (``benchmarks/ansible/redeploy.yml``: the lock, the bundle's files checksummed, the
    Docker packages, the Compose plugin, daemon.json, the docker unit, the images,
    ``docker load`` of missing ones, the release's files, ``community.docker.
    docker_compose_v2`` up with ``wait``, the health URLs, an audit line; pipelining on,
    one SSH master per run). Also the SSH round trips of each (Ferry's summary line;
    Ansible's ``ssh`` commands counted in a ``-vvv`` run). Targets: <= 0.1 x Ansible's
    time, <= 3 round trips per host.
``hosts``
    ``ferry deploy`` to N hosts at once against the same to 1 host, N = 2, 4, 6: a
    first deploy (hosts made fresh before each round: no Docker, no Ferry) and a no-op
    redeploy. Target: <= 1.2. For scale, the machine's own: N separate ``ferry deploy``
    processes started together, one host each (no-op), against 1.
``rollback``
    ``ferry rollback`` (v2 -> v1, the images on the host) against a hand ``docker compose
    up -d --wait`` of v1's release files on the host over ``ssh`` (each followed,
    untimed, by the way back to v2). Target: <= 1.2.

Usage (after ``make bootstrap``; its own sandbox: set ``FERRY_SANDBOX_NAME``)::

    FERRY_SANDBOX_NAME=perf .venv/bin/python benchmarks/ratios_bench.py [--rounds 3] [SECTION...]

These machines are noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratio import CIPHER, ROOT, ferry, figure, interleave, load, timed  # noqa: E402

sys.path.insert(0, str(ROOT))
from rich.console import Console  # noqa: E402

from devkit import sandbox as sbx  # noqa: E402
from devkit.images import build_bundle, derive_image  # noqa: E402
from ferry.controller.inventory import Inventory  # noqa: E402
from ferry.host import files  # noqa: E402
from ferry.host.transport.ssh import connect_host  # noqa: E402
from ferry.model.stack import load_stack  # noqa: E402
from ferry.roles import load_role, role_defaults  # noqa: E402
from ferry.ui import UI  # noqa: E402

STACK = ROOT / "stacks" / "llm-chat"
PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "redeploy.yml"
ui = UI()


def quiet() -> UI:
    return UI(Console(file=io.StringIO(), width=200))


class Bench:
    """The sandbox, the llm-chat bundle, and the commands of both sides."""

    def __init__(self, hosts: int):
        self.sb = sbx.status()
        if self.sb is None or len(self.sb.hosts) < hosts:
            self.sb = sbx.up(count=hosts, console=ui.console)
        self.inventory = self.sb.inventory
        self.dist = ROOT / "dist" / "ratios"
        self.bundle = build_bundle(STACK, self.dist, None, quiet(), docker_settings=role_defaults("install-docker-offline"))

    def host(self, i: int):
        return self.sb.hosts[i - 1]

    def names(self, n: int) -> str:
        return ",".join(h.name for h in self.sb.hosts[:n])

    def ssh(self, i: int, command: str) -> list[str]:
        return ["ssh", "-i", str(self.sb.key_file), "-o", f"UserKnownHostsFile={self.sb.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-c", CIPHER, f"root@{self.host(i).ip}", command]

    def deploy(self, hosts: str, bundle: Path | None = None) -> tuple[float, str]:
        return timed(ferry("deploy", "--host", hosts, "--stack", "llm-chat", "-i", str(self.inventory),
                           "--bundle", str(bundle or self.bundle.path)))


def round_trips(out: str) -> list[int]:
    """The SSH round trips of each host, from ``ferry deploy``'s summary lines."""
    return [int(n) for n in re.findall(r"\((\d+) SSH round trips\)", out)]


# -- noop --------------------------------------------------------------------------------

def ansible_setup(b: Bench, work: Path) -> tuple[list[str], dict[str, str]]:
    """The playbook's variables and inventory (absolute paths), the release files as the
    host has them, the environment of ``ansible-playbook``."""
    inv = Inventory(b.inventory)
    h = inv.hosts["sandbox-1"]
    stack = load_stack(STACK)
    t = connect_host(h, inv)
    current = f"/opt/ferry/stacks/{stack.name}/current"
    wanted = stack.release_files()
    found = files.parse_tar(t.run(files.read_tar(current, wanted)).stdout)
    t.close()
    release = work / "release"
    release.mkdir(mode=0o700)
    for name, data in found.items():
        (release / name).write_bytes(data)
        (release / name).chmod(0o600 if name in stack.secret_files() else 0o644)
    manifest = b.bundle.manifest
    variables = {**role_defaults("install-docker-offline"), **stack.defaults}
    daemon = work / "daemon.json"
    daemon.write_bytes(load_role("install-docker-offline").render_daemon_json(variables))
    model = b.bundle.stack()
    ports = {"backend": variables.get("backend_port", 8000), "frontend": variables.get("frontend_port", 3000),
             "nginx": variables.get("http_port", 80)}
    health = [f"http://127.0.0.1:{ports[s]}{p}" for s, p in model.health_paths.items()]
    extra = {"target": "sandbox-1", "bundle": str(b.bundle.path), "root": "/opt/ansible-bench",
             "release": str(release), "current": current, "packages": sorted(manifest["docker"]["packages"]),
             "docker_version": manifest["docker"]["packages"]["docker.io"], "daemon_json": str(daemon),
             "images": [{"id": i["id"], "file": i.get("file", "")} for i in manifest["images"]], "health": health}
    (work / "vars.json").write_text(json.dumps(extra))
    (work / "hosts.yml").write_text(f"all:\n  hosts:\n    sandbox-1:\n      ansible_host: {b.host(1).ip}\n"
                                    f"      ansible_user: root\n      ansible_python_interpreter: /usr/bin/python3\n")
    env = {"ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "ANSIBLE_SSH_ARGS": f"-o ControlMaster=auto -o ControlPersist=60s -c {CIPHER} "
                               f"-o UserKnownHostsFile={b.sb.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                               f"-o StrictHostKeyChecking=yes"}
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(work / "hosts.yml"),
            "--private-key", str(b.sb.key_file), "-e", f"@{work / 'vars.json'}", str(PLAYBOOK)]
    return argv, env


def noop(b: Bench, rounds: int) -> None:
    b.deploy("sandbox-1")                                    # deployed (and settled) before the rounds
    with tempfile.TemporaryDirectory(prefix="ferry-ansible-") as tmp:
        work = Path(tmp)
        argv, env = ansible_setup(b, work)

        def ansible(verbose: bool = False) -> tuple[float, str]:
            control = tempfile.mkdtemp(dir=tmp)              # a new SSH master for every run
            return timed(argv + (["-vvv"] if verbose else []), {**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": control})
        ui.info("ansible: first run (copies the bundle to /opt/ansible-bench: not timed)")
        _, first = ansible()
        _, verbose = ansible(verbose=True)
        if "changed=0" not in verbose:
            raise SystemExit("the playbook is not a no-op on its second run:\n" + verbose[-3000:])
        ansible_rt = len(re.findall(r"SSH: EXEC ssh ", verbose))
        trips: list[int] = []

        def ferry_side() -> float:
            seconds, out = b.deploy("sandbox-1")
            if "nothing changed" not in out:
                raise SystemExit("ferry's redeploy is not a no-op:\n" + out[-3000:])
            trips.extend(round_trips(out))
            return seconds
        times = interleave(rounds, {"ferry": ferry_side, "ansible": lambda: ansible()[0]})
    med, low = figure(ui, f"no-op redeploy of llm-chat, 1 host ({load()})",
                      (f"ferry deploy ({max(trips)} SSH round trips)", times["ferry"]),
                      (f"ansible-playbook ({ansible_rt} ssh commands)", times["ansible"]), "<= 0.1")
    ui.info(f"noop: ferry / ansible = {med:.3f} (median), {low:.3f} (min); "
            f"round trips per host: ferry {sorted(set(trips))}, ansible {ansible_rt}")


# -- hosts -------------------------------------------------------------------------------

def hosts(b: Bench, rounds: int, counts: list[int], first: bool) -> None:
    top = max(counts)
    b.deploy(b.names(top))
    seconds: dict[int, list[float]] = {n: [] for n in [1, *counts]}
    separate: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds):
        order = [1, *counts][r % (len(counts) + 1):] + [1, *counts][:r % (len(counts) + 1)]
        for n in order:
            seconds[n].append(b.deploy(b.names(n))[0])
            if n > 1:
                separate[n].append(parallel_single(b, n))
    for n in counts:
        figure(ui, f"no-op redeploy, {n} hosts / 1 host ({load()})", (f"ferry deploy, {n} hosts", seconds[n]),
               ("ferry deploy, 1 host", seconds[1]), "<= 1.2")
        figure(ui, f"the machine's own: {n} separate 1-host deploys at once / 1 host",
               (f"{n} ferry processes", separate[n]), ("ferry deploy, 1 host", seconds[1]), "(for scale)")
    if not first:
        return
    fresh: dict[int, list[float]] = {n: [] for n in [1, *counts]}
    for r in range(rounds):
        order = [1, *counts][r % (len(counts) + 1):] + [1, *counts][:r % (len(counts) + 1)]
        for n in order:
            for h in b.sb.hosts[:n]:
                sbx.recreate_host(h.name)
            fresh[n].append(b.deploy(b.names(n))[0])
    for n in counts:
        figure(ui, f"first deploy, {n} hosts / 1 host ({load()})", (f"ferry deploy, {n} fresh hosts", fresh[n]),
               ("ferry deploy, 1 fresh host", fresh[1]), "<= 1.2")


def parallel_single(b: Bench, n: int) -> float:
    """N ``ferry deploy`` processes at once, one host each: seconds until the last ends."""
    import subprocess
    import time
    started = time.monotonic()
    procs = [subprocess.Popen(ferry("deploy", "--host", h.name, "--stack", "llm-chat", "-i", str(b.inventory),
                                    "--bundle", str(b.bundle.path)), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for h in b.sb.hosts[:n]]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a separate deploy failed: {codes}")
    return time.monotonic() - started


# -- rollback ----------------------------------------------------------------------------

def rollback(b: Bench, rounds: int) -> None:
    v2dir = b.dist / "stack-1.1.0"
    if v2dir.exists():
        shutil.rmtree(v2dir)
    shutil.copytree(STACK, v2dir, ignore=shutil.ignore_patterns("images"))
    text = (v2dir / "stack.yml").read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    (v2dir / "stack.yml").write_text(text.replace("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0"))
    derive_image("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0", ["ENV APP_VERSION=1.1.0"])
    v2 = build_bundle(v2dir, b.dist, None, quiet(), docker_settings=role_defaults("install-docker-offline"))
    from ferry.host.releases import read_releases
    inv = Inventory(b.inventory)

    def deployed(bundle: Path | None) -> str:
        """Deploy ``bundle``; the release it made current (a host may keep older ones)."""
        b.deploy("sandbox-1", bundle)
        t = connect_host(inv.hosts["sandbox-1"], inv)
        try:
            return read_releases(t, "/opt/ferry/stacks/llm-chat").current
        finally:
            t.close()
    v1_id, v2_id = deployed(None), deployed(v2.path)
    rel = f"/opt/ferry/stacks/llm-chat/releases"

    def up(release: str) -> list[str]:
        return b.ssh(1, f"cd {rel}/{release} && docker compose -p llm-chat up -d --wait")

    def ferry_side() -> float:
        seconds, _ = timed(ferry("rollback", "--host", "sandbox-1", "--stack", "llm-chat", "-i", str(b.inventory),
                                 "--to", v1_id))
        timed(ferry("rollback", "--host", "sandbox-1", "--stack", "llm-chat", "-i", str(b.inventory),
                    "--to", v2_id))                           # back to v2, not timed
        return seconds

    def hand_side() -> float:
        seconds, _ = timed(up(v1_id))
        timed(up(v2_id))                                      # back to v2, not timed
        return seconds
    times = interleave(rounds, {"ferry": ferry_side, "hand": hand_side})
    med, low = figure(ui, f"rollback v2 -> v1, images on the host ({load()})",
                      ("ferry rollback", times["ferry"]), ("ssh: docker compose up -d --wait", times["hand"]),
                      "<= 1.2")
    ui.info(f"rollback: ferry / hand compose up = {med:.2f} (median), {low:.2f} (min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", default=["noop", "hosts", "rollback"],
                    choices=["noop", "hosts", "rollback"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--counts", default="2,4,6", help="host counts of the hosts section")
    ap.add_argument("--no-first", action="store_true", help="hosts: skip the first-deploy series")
    args = ap.parse_args()
    counts = [int(n) for n in args.counts.split(",")]
    b = Bench(max(counts) if "hosts" in args.sections else 1)
    ui.info(f"sandbox {sbx.NAME if hasattr(sbx, 'NAME') else ''}: {len(b.sb.hosts)} hosts; {load()}")
    if "noop" in args.sections:
        noop(b, args.rounds)
    if "rollback" in args.sections:
        rollback(b, args.rounds)
    if "hosts" in args.sections:
        hosts(b, args.rounds, counts, not args.no_first)


if __name__ == "__main__":
    main()
