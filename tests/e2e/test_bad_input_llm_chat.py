"""End to end: issue 8's bad input against ONE running llm-chat, as an adversarial
operator would try it.

One deploy of llm-chat on sandbox-1, then every kind of bad input that names this
stack's own variables, the command line's numbers, the inventory's connection values, a
hand-edited manifest, a cron expression or a backup id is tried through the real command
line (``inv ...``). Each must be refused in ONE line naming the file (or ``--set``), the
key and the rule, and change nothing on the host, which is checked out of band (``docker
exec`` into the sandbox container, not SSH): the same containers with the same IDs and
start times, the same ``current``, no new audit line, no lock, no new directory under
``/``, ``/opt``, ``/srv`` or ``/root``, no new cron file, and not one new SSH login (so
refused before any connection).

Then the kinds that reach the host and must be handled safely there:

- hostile text in a free string (``llm_model`` with ``$(id)``, ``${HOME}``, quotes,
  backquotes, ``#``): deployed as inert data, the backend sees exactly that string;
- a service down: ``inv status`` and ``inv verify`` exit non-zero naming it;
- an ``inv backup`` interrupted (Ctrl-C) while the host-side program works: the run is
  audited, the lock is free afterwards, a deploy while the host program still works is
  refused, and the program's status says ``ok`` only for an archive that verifies.

Host: sandbox-1 (llm-chat removed again at the end of the module).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stack_e2e import STACKS, bundle, deploy_stack, inv_cli, logins

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-1")]
ROOT = Path(__file__).resolve().parents[2]
HOST = "sandbox-1"
STACK_DIR = "/opt/ferry/stacks/llm-chat"


@pytest.fixture(scope="module")
def running(sandbox, tmp_path_factory):
    """llm-chat deployed and healthy on HOST; removed from it afterwards."""
    b = bundle(STACKS / "llm-chat", tmp_path_factory.mktemp("dist-adversary"))
    deploy_stack(sandbox.inventory, HOST, "llm-chat", b).assert_green()
    yield b
    on_host(sandbox, "docker ps -aq --filter label=com.docker.compose.project=llm-chat | xargs -r docker rm -f; "
                     "docker network rm llm-chat_default 2>/dev/null; rm -rf /opt/ferry/stacks/llm-chat "
                     "/opt/ferry/backups/llm-chat /opt/ferry/locks/llm-chat*; true")


def on_host(sandbox, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` on HOST out of band (docker exec into its container: no SSH login)."""
    container = next(h.container for h in sandbox.hosts if h.name == HOST)
    return subprocess.run(["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True)


def witness(sandbox) -> dict[str, str | int]:
    """Everything a refused run could have changed on HOST, read out of band."""
    out = on_host(sandbox, (
        "docker ps -aq --no-trunc | sort | xargs -r docker inspect --format '{{.Name}} {{.Id}} {{.State.StartedAt}} "
        "{{.State.Status}}'; echo; readlink /opt/ferry/stacks/llm-chat/current; echo; "
        "wc -l < /opt/ferry/audit.log; echo; ls -a / /opt /opt/ferry /opt/ferry/stacks /srv /root /etc/cron.d; echo; "
        "ls -a /opt/ferry/locks; ls /opt/ferry/stacks/llm-chat/releases")).stdout
    return {"host": out, "logins": logins(sandbox, HOST)}


def edited_inventory(sandbox, tmp_path: Path, host_vars: dict) -> Path:
    """The sandbox inventory with ``host_vars`` set on HOST (key and known_hosts beside it)."""
    data = yaml.safe_load(sandbox.inventory.read_text())
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy(sandbox.state_dir / f, tmp_path / f)
    data["all"]["children"]["prod"]["hosts"][HOST].update(host_vars)
    p = tmp_path / "inventory.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def edited_bundle(built: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``built`` sharing its big files (hard links), its manifest.json edited."""
    b = tmp_path / "edited" / built.name
    shutil.copytree(built, b, copy_function=os.link)
    manifest = json.loads((b / "manifest.json").read_text())
    edit(manifest)
    (b / "manifest.json").unlink()
    (b / "manifest.json").write_text(json.dumps(manifest))
    return b


def deploy(inv: str, b: Path, *extra: str) -> list[str]:
    return ["deploy", "--host", HOST, "-i", inv, "--bundle", str(b), *extra]


# Each: (inventory host vars, argv builder (inventory, bundle, tmp_path) -> inv arguments,
# substrings of the one error line). Named by the kind of bad input.
REFUSED = {
    # the incident of issue 8: ' #' turned the mounts into YAML comments
    "odd-ferry-root": ({}, lambda i, b, t: deploy(i, b, "--set", "ferry_root=/opt/ferry #new"),
                       ["--set: key 'ferry_root' (host sandbox-1)", "must be an absolute"]),
    "yaml-injected-into-http-port": ({"http_port": "80\n    privileged: true"}, lambda i, b, t: deploy(i, b),
                                     ["inventory.yml", "key 'http_port' (host sandbox-1)", "must be a port"]),
    "port-99999": ({}, lambda i, b, t: deploy(i, b, "--set", "http_port=99999"),
                   ["--set: key 'http_port' (host sandbox-1)", "99999 must be a port"]),
    "llm-model-empty": ({}, lambda i, b, t: deploy(i, b, "--set", "llm_model="),
                        ["--set: key 'llm_model' (host sandbox-1)", "a value is required"]),
    "llm-model-yaml": ({}, lambda i, b, t: deploy(i, b, "--set", "llm_model=m\n    privileged: true"),
                       ["--set: key 'llm_model' (host sandbox-1)", "must be a string matching"]),
    # a free string may hold almost anything, but not what a one-line .env entry cannot carry
    "llm-model-single-quote": ({}, lambda i, b, t: deploy(i, b, "--set", "llm_model=it's"),
                               ["env.j2:3: a .env value may not contain a newline or a single quote",
                                "key 'llm_model', host sandbox-1"]),
    "llm-api-url-not-http": ({}, lambda i, b, t: deploy(i, b, "--set", "llm_api_url=file:///etc/passwd"),
                             ["--set: key 'llm_api_url' (host sandbox-1)", "must be a string matching"]),
    "nginx-size-with-directive": ({}, lambda i, b, t: deploy(i, b, "--set", "client_max_body_size=10m; evil"),
                                  ["--set: key 'client_max_body_size'", "must be a string matching"]),
    "serial-not-a-number": ({}, lambda i, b, t: deploy(i, b, "--serial", "x"), ["--serial", "'x'"]),
    "serial-negative": ({}, lambda i, b, t: deploy(i, b, "--serial", "-3"), ["--serial", "-3"]),
    "max-fail-200": ({}, lambda i, b, t: deploy(i, b, "--max-fail", "200"), ["--max-fail", "200"]),
    "ansible-port-not-a-number": ({"ansible_port": "ssh"}, lambda i, b, t: deploy(i, b),
                                  ["sandbox-1", "ansible_port='ssh': must be a port number"]),
    "connect-timeout-not-a-number": ({"ferry_connect_timeout": "fast"}, lambda i, b, t: deploy(i, b),
                                     ["sandbox-1", "ferry_connect_timeout='fast': must be a number of seconds"]),
    "manifest-stack-traversal": ({}, lambda i, b, t: deploy(i, edited_bundle(b, t, lambda m: m.update(
        stack="../../../etc"))), ["manifest.json", "key 'stack'", "../../../etc"]),
    "manifest-version-traversal": ({}, lambda i, b, t: deploy(i, edited_bundle(b, t, lambda m: m.update(
        version="../../../root/vtrav"))), ["manifest.json", "key 'version'", "../../../root/vtrav"]),
    "manifest-file-traversal": ({}, lambda i, b, t: deploy(i, edited_bundle(b, t, lambda m: m["files"].append(
        {"path": "../../../root/evil", "size": 1, "sha256": "0" * 64}))), ["manifest.json", "../../../root/evil"]),
    "cron-minute-61": ({}, lambda i, b, t: ["schedule-backup", "--host", HOST, "-i", i, "--cron", "61 * * * *"],
                       ["61 * * * *"]),
    "restore-backup-id-traversal": ({}, lambda i, b, t: ["restore", "--host", HOST, "-i", i,
                                                         "--backup", "../../../etc/passwd"],
                                    ["--backup", "../../../etc/passwd"]),
    "set-without-equals": ({}, lambda i, b, t: deploy(i, b, "--set", "llm_model"), ["--set", "llm_model"]),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_in_one_line_before_any_connection_and_the_host_unchanged(sandbox, running, tmp_path, kind):
    host_vars, argv, needles = REFUSED[kind]
    inv = str(edited_inventory(sandbox, tmp_path, host_vars) if host_vars else sandbox.inventory)
    before = witness(sandbox)
    r = inv_cli(*argv(inv, running, tmp_path))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err
    assert witness(sandbox) == before


# -- what reaches the host: handled as data, or reported honestly ---------------------------

HOSTILE_MODEL = "m#1$(id)${HOME}`uname`\"\\;|&<>*?$$%{x}\"#"


def test_hostile_text_in_a_free_string_reaches_the_backend_as_inert_data(sandbox, running):
    """``llm_model`` is a free string (no space): shell, Compose and .env syntax in it are
    data, the backend's environment holds exactly that string, and nothing else of the
    service changed (not privileged, same mounts). (A single quote or a newline, which a
    one-line .env entry cannot carry, is refused: ``llm-model-single-quote`` above.)"""
    before = json.loads(on_host(sandbox, "docker inspect llm-chat-backend-1").stdout)[0]
    deploy_stack(sandbox.inventory, HOST, "llm-chat", running, {"llm_model": HOSTILE_MODEL}).assert_green()
    after = json.loads(on_host(sandbox, "docker inspect llm-chat-backend-1").stdout)[0]
    assert f"LLM_MODEL={HOSTILE_MODEL}" in after["Config"]["Env"]
    assert after["HostConfig"]["Privileged"] is False and after["HostConfig"]["CapAdd"] in (None, [])
    assert after["HostConfig"]["Binds"] == before["HostConfig"]["Binds"]
    deploy_stack(sandbox.inventory, HOST, "llm-chat", running).assert_green()


def test_a_service_down_makes_status_and_verify_exit_non_zero(sandbox, running):
    on_host(sandbox, "docker stop -t 1 llm-chat-frontend-1")
    try:
        status = inv_cli("status", "--host", HOST, "-i", str(sandbox.inventory))
        assert status.returncode == 1 and "frontend" in status.stdout, status.stdout + status.stderr
        verify = inv_cli("verify", "--host", HOST, "-i", str(sandbox.inventory))
        assert verify.returncode == 1 and "FAIL" in verify.stdout and "frontend" in verify.stdout, verify.stdout
    finally:
        on_host(sandbox, "docker start llm-chat-frontend-1")
    deadline = time.monotonic() + 120
    while inv_cli("status", "--host", HOST, "-i", str(sandbox.inventory)).returncode != 0:
        assert time.monotonic() < deadline, "llm-chat did not come back"
        time.sleep(2)


def test_an_interrupted_backup_is_audited_honest_and_keeps_deploys_out_while_it_works(sandbox, running):
    """Ctrl-C on ``inv backup`` while the host program works: the controller gives the
    lock back and writes its audit line; a host program still working keeps any deploy
    out; when it ends, its status says ``ok`` only with an archive that verifies."""
    on_host(sandbox, f"mkdir -p {STACK_DIR}/data/bulk && head -c 200000000 /dev/urandom > {STACK_DIR}/data/bulk/big.bin")
    before = set(on_host(sandbox, "ls /opt/ferry/backups/llm-chat 2>/dev/null").stdout.split())
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "backup", "--host", HOST, "-i", str(sandbox.inventory),
                             "--message", "adversary-interrupted-backup"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while on_host(sandbox, "pgrep -f '[f]erry-backup backup'").returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the backup never started on the host"
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, out
        # 200 MB of random data take the host program several seconds more; it is held
        # still (SIGSTOP) while the deploy tries, so a loaded machine cannot let it end first
        assert on_host(sandbox, "pkill -STOP -f '[f]erry-backup backup'").returncode == 0, "the host program ended"
        try:
            r = inv_cli("deploy", "--host", HOST, "-i", str(sandbox.inventory), "--bundle", str(running))
        finally:
            on_host(sandbox, "pkill -CONT -f '[f]erry-backup backup'")
        assert r.returncode == 1 and "ferry-backup" in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
            r.stdout[-2000:] + r.stderr
        deadline = time.monotonic() + 300
        while on_host(sandbox, "pgrep -f '[f]erry-backup backup'").returncode == 0:
            assert time.monotonic() < deadline, "the host program never ended"
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        on_host(sandbox, f"rm -rf {STACK_DIR}/data/bulk")
    status = dict(l.split("\t", 1) for l in on_host(sandbox, f"cat {STACK_DIR}/backup-status/last-run.tsv").stdout
                  .splitlines() if "\t" in l)
    new = set(on_host(sandbox, "ls /opt/ferry/backups/llm-chat").stdout.split()) - before
    if status["result"] == "ok":
        assert status["archive"] and os.path.basename(status["archive"]) in new, (status, new)
        assert on_host(sandbox, f"{STACK_DIR}/ferry-backup verify {shlex.quote(status['id'])}").returncode == 0
    else:
        assert not any(n.endswith(".ferry-backup.tar") for n in new), (status, new)     # no half archive kept
    assert on_host(sandbox, "test -e /opt/ferry/locks/llm-chat").returncode != 0       # the lock is free
    audit = [json.loads(l) for l in on_host(sandbox, "tail -n 20 /opt/ferry/audit.log").stdout.splitlines() if l]
    mine = [a for a in audit if "adversary-interrupted-backup" in a.get("detail", "")]
    assert mine and mine[-1]["task"] == "backup" and mine[-1]["result"] != "ok", audit
    # and the stack still runs what ran before
    assert inv_cli("status", "--host", HOST, "-i", str(sandbox.inventory)).returncode == 0
