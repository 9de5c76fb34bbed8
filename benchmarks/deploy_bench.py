"""Deploy benchmark on sandbox hosts: prints figures, asserts nothing.

In one run, against the same hosts:

1. upload rate of the llm-chat bundle through Ferry's upload-bundle role, as a ratio to
   OpenSSH ``scp`` and ``rsync`` of the same files to the same host: the comparison of
   ``transfer_bench.py upload`` (same cipher, both timed from their first connection to
   their end, interleaved rounds, min and median);
2. wall time of a first deploy on a fresh host, broken down by role;
3. wall time of a no-op redeploy (same bundle, same variables), broken down by role;
4. wall time of ``rollback`` from a v2 (backend image differs) to v1, images on the host.

Usage (after ``make bootstrap``)::

    .venv/bin/python benchmarks/deploy_bench.py [--rounds 3]

It recreates the sandbox (``fresh``), so run it when no one else uses the sandbox.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from devkit import sandbox as sbx  # noqa: E402
from devkit.images import build_bundle  # noqa: E402
from ferry.actions.deploy import deploy, prepare  # noqa: E402
from devkit.images import derive_image  # noqa: E402
from ferry.actions.rollback import rollback  # noqa: E402
from ferry.roles import role_defaults  # noqa: E402
from ferry.ui import UI  # noqa: E402
from transfer_bench import Bench, upload  # noqa: E402


def quiet_ui() -> UI:
    return UI(Console(file=io.StringIO()))


def timed_deploy(inventory_path: Path, pattern: str, bundle_path: Path):
    started = time.monotonic()
    plan = prepare(inventory_path, pattern, "llm-chat", bundle_path, bundle_path.parent, {})
    reports = deploy(plan, quiet_ui())
    total = time.monotonic() - started
    report = reports[0]
    if report.error:
        raise SystemExit(f"deploy failed: {report.error}")
    return total, [(name, seconds) for name, _, seconds in report.results], report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="upload rounds per method")
    args = ap.parse_args()
    ui = UI()
    ui.info("sandbox: 2 fresh hosts")
    sb = sbx.up(count=2, fresh=True, console=ui.console)
    # the host without Docker gets the upload comparison; the deploys go to the other
    upload(Bench(sb), args.rounds, host=2)
    bundle = build_bundle(ROOT / "stacks" / "llm-chat", ROOT / "dist", None, quiet_ui(),
                          docker_settings=role_defaults("install-docker-offline"))

    total, by_role, report = timed_deploy(sb.inventory, "prod", bundle.path)
    ui.table(f"first deploy on a fresh host: {total:.1f} s", ["role", "seconds"],
             [[n, f"{s:.2f}"] for n, s in by_role])
    total2, by_role2, report2 = timed_deploy(sb.inventory, "prod", bundle.path)
    changed = [n for n, r, _ in report2.results if r.changed]
    ui.table(f"no-op redeploy: {total2:.2f} s (goal < 3 s); changed: {changed or 'nothing'}",
             ["role", "seconds"], [[n, f"{s:.2f}"] for n, s in by_role2])

    derive_image("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0", ["ENV APP_VERSION=1.1.0"])
    v2_dir = ROOT / "dist" / "bench-stack"
    if v2_dir.exists():
        shutil.rmtree(v2_dir)
    shutil.copytree(ROOT / "stacks" / "llm-chat", v2_dir, ignore=shutil.ignore_patterns("images"))
    text = (v2_dir / "stack.yml").read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    (v2_dir / "stack.yml").write_text(text.replace("llm-chat-backend:1.0.0", "llm-chat-backend:1.1.0"))
    v2 = build_bundle(v2_dir, ROOT / "dist", None, quiet_ui(), docker_settings=role_defaults("install-docker-offline"))
    timed_deploy(sb.inventory, "prod", v2.path)
    started = time.monotonic()
    reports = rollback(sb.inventory, "prod", ROOT / "stacks" / "llm-chat", None, {}, quiet_ui())
    seconds = time.monotonic() - started
    ui.info(f"rollback v2 -> v1 (images on the host): {seconds:.2f} s (goal < 10 s); "
            f"{reports[0].status}, {reports[0].results[-1][1].summary}")


if __name__ == "__main__":
    main()
