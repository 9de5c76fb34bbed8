"""The ``ferry`` console command ends its process as soon as the command is done
(``ferry.cli._exit_now``): the exit status, what it printed and the ``atexit`` handlers
are as with a normal interpreter exit."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ("import atexit, sys; atexit.register(lambda: print('atexit ran', file=sys.stderr)); "
           "sys.argv = ['ferry', *sys.argv[1:]]; from ferry.cli import main; main(); "
           "print('not reached')")


def ferry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CONSOLE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_a_command_that_works_exits_0_with_its_output_and_atexit_handlers():
    done = ferry("--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("ferry ")
    assert "not reached" not in done.stdout and done.stderr.strip() == "atexit ran"


def test_a_user_mistake_exits_1_with_one_error_line(tmp_path):
    done = ferry("inventory", "-i", str(tmp_path / "missing.yml"))
    lines = [l for l in done.stderr.splitlines() if l != "atexit ran"]
    assert done.returncode == 1 and lines == [f"error: inventory {tmp_path / 'missing.yml'} not found"]
    assert "atexit ran" in done.stderr


def test_a_large_listing_reaches_the_pipe_whole(tmp_path):
    """Everything printed is flushed before the process ends."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\n" + "".join(f"web{i:03d} ansible_host=10.0.{i // 200}.{i % 200 + 1}\n"
                                             for i in range(300)))
    done = ferry("inventory", "-i", str(inventory), "--json")
    assert done.returncode == 0 and done.stdout.rstrip().endswith("}") and done.stdout.count("ansible_host") == 300
