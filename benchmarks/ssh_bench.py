"""SSH bulk-transfer benchmark: what should carry bulk data when a bastion is involved?

In one run, against the same hosts, interleaved (``--rounds`` each, medians compared),
``--mb`` MiB streamed into ``cat > /dev/null`` through :meth:`SSHTransport.send`:

- direct to a host (sandbox-1): the OpenSSH client vs a paramiko channel;
- to world-inner through the bastion (world-bastion, port 2222): OpenSSH with Ferry's
  ProxyCommand chain (``ssh -W``, every hop verified) vs paramiko through a
  ``direct-tcpip`` channel of the bastion's connection.

Both paths negotiate AES-GCM (printed). Prints figures and ratios, asserts nothing.

Usage::

    FERRY_SANDBOX_NAME=ferry-bench .venv/bin/python benchmarks/ssh_bench.py [--mb 256] [--rounds 3]

It starts (or reuses) that sandbox with its world hosts (``up(count=1, world=True)``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit import sandbox as sbx  # noqa: E402
from ferry.controller.inventory import Inventory  # noqa: E402
from ferry.host.transport.ssh import SSHTransport, connection_spec  # noqa: E402

MB = 1 << 20


def send_seconds(t: SSHTransport, mb: int) -> float:
    block = bytes(range(256)) * 4096    # 1 MiB
    started = time.monotonic()
    t.send(["sh", "-c", "cat > /dev/null"], (block for _ in range(mb)))
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sb = sbx.up(count=1, world=True)
    inv = Inventory(sb.inventory)
    routes = {"direct (sandbox-1)": "sandbox-1", "through the bastion (world-inner)": "world-inner"}
    transports: dict[tuple[str, str], SSHTransport] = {}
    for label, host in routes.items():
        spec = connection_spec(inv.hosts[host], inv)
        for mode in ("openssh", "paramiko"):
            transports[label, mode] = SSHTransport(replace(spec, transfer=mode)).connect()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in transports}
    for _ in range(args.rounds):
        for key, t in transports.items():
            times[key].append(send_seconds(t, args.mb))
    print(f"{args.mb} MiB into cat > /dev/null, median of {args.rounds}, interleaved; "
          f"cipher {transports['direct (sandbox-1)', 'paramiko'].cipher()}")
    median = {k: statistics.median(v) for k, v in times.items()}
    for (label, mode), s in median.items():
        print(f"  {label:36} {mode:9} {s:6.2f} s  {args.mb / s:6.1f} MiB/s")
    for label in routes:
        print(f"  {label}: paramiko / openssh time = {median[label, 'paramiko'] / median[label, 'openssh']:.2f}x")
    for t in transports.values():
        t.close()


if __name__ == "__main__":
    main()
