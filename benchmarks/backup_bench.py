"""Backup benchmark on a sandbox host: prints figures, asserts nothing.

In one run, on the prod sandbox host with llm-chat deployed and ``--mb`` MB of data
in its data dir (a SQLite database of ``--rows`` rows written through the API-less
backend container, plus files: half random, half text, so the compressor has real
work):

1. backup throughput of ``ferry-backup backup`` (MB/s of source data: data dirs and
   volumes), as a ratio to ``tar -cf - DATA | <same compressor>`` over the same data on
   the same host (alternating, ``--rounds`` each, medians compared);
2. restore time of that backup (``ferry-backup restore ID --no-safety-backup``: stop,
   restore, start with ``--wait``), and with the safety backup taken first.

Usage (after ``make bootstrap``)::

    FERRY_SANDBOX_NAME=... .venv/bin/python benchmarks/backup_bench.py [--mb 200] [--rounds 3]

It reuses the sandbox if one is up (and deploys llm-chat to prod when needed).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    sb = sbx.status() or sbx.up(count=3)
    quiet = Console(file=io.StringIO())
    from ferry.ui import UI
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
        ferry_s, tar_s, ids = [], [], []
        for _ in range(args.rounds):
            started = time.monotonic()
            result = hb.run_program(t, hb.backup_command(script), "backup failed")
            ferry_s.append(time.monotonic() - started)
            ids.append(result["id"])
            started = time.monotonic()
            t.run(["sh", "-c", f"tar -C {data} -cf - db | {compressor} > /var/backups/tar-bench.out; "
                               "rm -f /var/backups/tar-bench.out"])
            tar_s.append(time.monotonic() - started)
        started = time.monotonic()
        hb.run_program(t, hb.restore_command(script, ids[-1], safety=False), "restore failed")
        restore_s = time.monotonic() - started
        started = time.monotonic()
        hb.run_program(t, hb.restore_command(script, ids[-1], safety=True), "restore failed")
        restore_safe_s = time.monotonic() - started
        size = int(result["size"])
        t.run(["sh", "-c", f"rm -rf {data}/db/files; rm -f {hb.backup_dir(target.vars, stack.name)}/*.ferry-backup.tar*"])
        t.run(["docker", "exec", "llm-chat-backend-1", "python3", "-c",
               "import sqlite3; c = sqlite3.connect('/app/db/chat.db'); c.execute('DROP TABLE IF EXISTS bench'); "
               "c.commit(); c.execute('VACUUM')"])
    fm, tm = statistics.median(ferry_s), statistics.median(tar_s)
    console.print(f"source data: {source / 1e6:.1f} MB (SQLite {args.rows} rows + files), archive {size / 1e6:.1f} MB, "
                  f"compressor: {compressor.split()[0]}")
    console.print(f"backup (ferry-backup, consistent, verified): median {fm:.2f} s = {source / 1e6 / fm:.1f} MB/s "
                  f"over {args.rounds} rounds {[round(x, 2) for x in ferry_s]}")
    console.print(f"tar | {compressor.split()[0]} of the same data:        median {tm:.2f} s = "
                  f"{source / 1e6 / tm:.1f} MB/s {[round(x, 2) for x in tar_s]}")
    console.print(f"throughput ratio ferry-backup / tar|{compressor.split()[0]}: {tm / fm:.2f}")
    console.print(f"restore (stop, restore, start --wait): {restore_s:.2f} s; "
                  f"with the safety backup first: {restore_safe_s:.2f} s")


if __name__ == "__main__":
    main()
