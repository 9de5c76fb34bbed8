"""Backup benchmark on a sandbox host: prints figures, asserts nothing.

In one run, on the prod sandbox host with llm-chat deployed and ``--mb`` MB of data
in its data dir (a SQLite database of ``--rows`` rows written through the API-less
backend container, plus files: half random, half text, so the compressor has real
work):

1. ``ferry backup`` (the whole command: connect, lock, the consistent backup of every
   data dir and volume, verified, audit) against ``ssh HOST 'tar -cf - DATA | <the
   same compressor> > FILE'`` over the same data on the same host: both timed from the
   start of their process to its end, same cipher, interleaved (the order alternating),
   ``--rounds`` each; printed as throughput ratios (tar's time / Ferry's: higher is
   better, target >= 0.9) of the medians and of the minimums;
2. restore time of that backup (``ferry-backup restore ID --no-safety-backup``: stop,
   restore, start with ``--wait``), and with the safety backup taken first.

Usage (after ``make bootstrap``)::

    FERRY_SANDBOX_NAME=... .venv/bin/python benchmarks/backup_bench.py [--mb 200] [--rounds 3]

These machines are noisy: read the ratios, not the absolute times.

It reuses the sandbox if one is up (and deploys llm-chat to prod when needed).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratio import CIPHER, ROOT, ferry, figure, interleave, load, timed  # noqa: E402

sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from ferry.actions.backup import context  # noqa: E402
from ferry.actions.common import stack_hosts  # noqa: E402
from ferry.host import backup as hb  # noqa: E402
from ferry.model.stack import load_stack  # noqa: E402
from ferry.roles import load_role  # noqa: E402
from devkit import sandbox as sbx  # noqa: E402
from devkit.images import build_bundle  # noqa: E402
from ferry.actions.deploy import deploy, prepare  # noqa: E402
from ferry.roles import role_defaults  # noqa: E402

STACK = ROOT / "stacks" / "llm-chat"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200, help="MB of files to put in the data dir")
    ap.add_argument("--rows", type=int, default=200000, help="rows in the SQLite database")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    from ferry.ui import UI
    sb = sbx.status() or sbx.up(count=3)
    quiet = Console(file=io.StringIO())
    dist = ROOT / "dist"
    bundle = build_bundle(STACK, dist, None, UI(quiet), docker_settings=role_defaults("install-docker-offline"))
    plan = prepare(sb.inventory, "prod", "llm-chat", bundle.path, dist, {})
    deploy(plan, UI(quiet))
    stack = load_stack(STACK)
    with stack_hosts(sb.inventory, "prod", stack, {}) as (target,):
        load_role("backup").install(context(target, stack, UI(quiet)))
        t = target.t
        data = target.paths.data
        script = hb.script_path(target.paths)
        half = args.mb // 2
        t.run(["sh", "-c", f"mkdir -p {data}/db/files && cd {data}/db/files && "
                           f"head -c {half}000000 /dev/urandom > random.bin && "
                           f"head -c {half * 3 // 4}000000 /dev/urandom | base64 > text.txt"])
        t.run(["docker", "exec", "llm-chat-backend-1", "python3", "-c",
               "import sqlite3; c = sqlite3.connect('/app/db/chat.db'); "
               "c.execute('CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, body TEXT)'); "
               "c.execute('DELETE FROM bench'); "
               f"c.executemany('INSERT INTO bench (body) VALUES (?)', (('row %d ' % i * 8,) for i in range({args.rows}))); "
               "c.commit()"])
        source = int(t.run(["du", "-sb", f"{data}/db"]).out.split()[0])
        compressor = "zstd -q -T0 -3 -c" if t.run(["sh", "-c", "command -v zstd"], check=False).ok \
            and target.vars.get("backup_compress") != "gzip" else "gzip -c -6"
        host = next(h for h in sb.hosts if h.name == target.name)
        ssh = ["ssh", "-i", str(sb.key_file), "-o", f"UserKnownHostsFile={sb.known_hosts}",
               "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-c", CIPHER, f"root@{host.ip}"]

        def ferry_side() -> float:
            return timed(ferry("backup", "--host", target.name, "--stack", stack.name, "-i", str(sb.inventory)))[0]

        def tar_side() -> float:
            return timed(ssh + [f"tar -C {data} -cf - db | {compressor} > /var/backups/tar-bench.out"])[0]
        times = interleave(args.rounds, {"ferry": ferry_side, "tar": tar_side},
                           lambda: t.run(["rm", "-f", "/var/backups/tar-bench.out"]))
        ferry_s, tar_s = times["ferry"], times["tar"]
        result = hb.run_program(t, hb.backup_command(script), "backup failed")   # the archive restored below
        started = time.monotonic()
        hb.run_program(t, hb.restore_command(script, result['id'], safety=False), "restore failed")
        restore_s = time.monotonic() - started
        started = time.monotonic()
        hb.run_program(t, hb.restore_command(script, result['id'], safety=True), "restore failed")
        restore_safe_s = time.monotonic() - started
        size = int(result["size"])
        t.run(["sh", "-c", f"rm -rf {data}/db/files; rm -f {hb.backup_dir(target.vars, stack.name)}/*.ferry-backup.tar*"])
        t.run(["docker", "exec", "llm-chat-backend-1", "python3", "-c",
               "import sqlite3; c = sqlite3.connect('/app/db/chat.db'); c.execute('DROP TABLE IF EXISTS bench'); "
               "c.commit(); c.execute('VACUUM')"])
    fm, tm = statistics.median(ferry_s), statistics.median(tar_s)
    console.print(f"source data: {source / 1e6:.1f} MB (SQLite {args.rows} rows + files), archive {size / 1e6:.1f} MB, "
                  f"compressor: {compressor.split()[0]}; {load()}")
    ui = UI(console)
    med, low = figure(ui, f"backup of {source / 1e6:.0f} MB, throughput (MB/s: ferry {source / 1e6 / fm:.1f}, "
                          f"tar {source / 1e6 / tm:.1f}, medians)",
                      ("ferry backup (consistent, verified)", ferry_s),
                      (f"ssh: tar | {compressor.split()[0]} > file", tar_s), ">= 0.9", higher_is_better=True)
    console.print(f"backup: ferry / tar|{compressor.split()[0]} throughput = {med:.2f} (median), {low:.2f} (min)")
    console.print(f"restore (stop, restore, start --wait): {restore_s:.2f} s; "
                  f"with the safety backup first: {restore_safe_s:.2f} s")


if __name__ == "__main__":
    main()
