"""End to end: llm-chat on a Docker Swarm of three fresh sandbox hosts (issue 13).

Hosts: ``swarm-1..3`` (``devkit.sandbox.up(swarm=3, fresh_swarm=True)``: no Docker, the
inventory's group ``swarm`` with ``ferry_engine: swarm``, swarm-1 labelled
``llm-chat-data=true``), beside whatever else the sandbox runs. Stack:
``stacks/llm-chat-swarm`` (backend x2 pinned to the data node, frontend x2, nginx on
every node with a host-mode port 80; ``endpoint_mode: dnsrr``: the sandbox kernel has no
IPVS).

In order: ``inv swarm.setup`` forms the swarm (three managers) and a second run changes
nothing; a deploy whose data service is not pinned is refused, naming it, with nothing
changed, and so is one that leaves a node of the swarm out of the selection (it would
lack the images); the stack deploys (``deploy:`` keys as written) and verifies on every
node; the stack's lock held on any node stops a deploy, none left behind; ``inv
verify`` names the node whose task is not running; a changed variable updates the
backend only; an upgrade whose backend exits at start is rolled back by Swarm's own
``failure_action: rollback`` and reported, the swarm back on the release before;
``inv rollback`` returns to the first release; ``inv backup`` runs on the data node
and ``inv restore`` puts its data back on every node's view.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from devkit import sandbox as sandbox_mod
from devkit.images import derive_image
from stack_e2e import STACKS, Hosts, bundle, deploy_stack, http, inv_cli

pytestmark = pytest.mark.e2e
STACK = "llm-chat-swarm"
NODES = ["swarm-1", "swarm-2", "swarm-3"]


@pytest.fixture(scope="module")
def cluster():
    """Three fresh swarm hosts, the sandbox's other hosts left as they are."""
    existing = sandbox_mod.status()
    return sandbox_mod.up(count=len(existing.hosts) if existing else 1,
                          nodpkg=len(existing.nodpkg) if existing else 0, swarm=3, fresh_swarm=True)


@pytest.fixture(scope="module")
def hosts(cluster):
    return Hosts(cluster.inventory)


@pytest.fixture(scope="module")
def bundles(cluster, tmp_path_factory):
    """v1 (1.0.0) and v3 (1.2.0: a backend that exits at start) of llm-chat-swarm."""
    tmp = tmp_path_factory.mktemp("swarm")
    dist = tmp / "dist"
    derive_image("llm-chat-backend:1.0.0", "llm-chat-backend:1.2.0",
                 ['CMD ["sh", "-c", "echo FATAL: model registry unreachable >&2; exit 1"]'])
    v1 = bundle(STACKS / STACK, dist)
    d = tmp / STACK
    shutil.copytree(STACKS / STACK, d)
    text = (d / "stack.yml").read_text()
    text = re.sub(r'(?m)^version:.*$', 'version: "1.2.0"', text).replace(
        "backend: llm-chat-backend:1.0.0", "backend: llm-chat-backend:1.2.0")
    (d / "stack.yml").write_text(text)
    return {"v1": v1, "v3": bundle(d, dist)}


def cli(cluster, *args: str, stack: bool = True):
    return inv_cli(*args, "-i", str(cluster.inventory), *(["--stack", STACK] if stack else []), timeout=1800)


def nodes(hosts) -> list[dict]:
    out = hosts.sh("swarm-1", "docker node ls -q | xargs docker node inspect")
    return json.loads(out)


def tasks(hosts) -> dict[str, set[str]]:
    """service -> IDs of its tasks Swarm wants running."""
    out = hosts.sh("swarm-1", f"for s in $(docker service ls -q --filter label=com.docker.stack.namespace={STACK}); "
                              "do docker service ps -q --no-trunc --filter desired-state=running \"$s\" | "
                              "sed \"s/^/$(docker service inspect -f '{{.Spec.Name}}' $s) /\"; done")
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        name, task = line.split()
        found.setdefault(name.removeprefix(STACK + "_"), set()).add(task)
    return found


def current(hosts, node: str) -> str:
    return hosts.sh(node, f"readlink /opt/ferry/stacks/{STACK}/current").strip().rsplit("/", 1)[-1]


def health(hosts) -> dict[str, dict]:
    return {n: json.loads(http(f"http://{hosts.ip(n)}/api/health")[1]) for n in NODES}


def test_setup_forms_the_swarm_and_again_changes_nothing(cluster, hosts, bundles):
    assert [h.name for h in cluster.swarm] == NODES
    for n in NODES:
        assert "no docker" in hosts.sh(n, "command -v docker || echo no docker")
    first = cli(cluster, "swarm.setup", "--host", "swarm", "--bundle", str(bundles["v1"]))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = {n: re.search(rf"^{n}: uploaded .*; swarm: (.*); changed: .*swarm-cluster$", first.stdout, re.M)
               for n in NODES}
    assert all(summary.values()), first.stdout[-3000:]
    assert [m.group(1) for m in summary.values()] == [
        "initialised the swarm advertising 10.231.0.221; labelled llm-chat-data=true".replace(
            "10.231.0.221", hosts.ip("swarm-1")), "joined the swarm as manager", "joined the swarm as manager"]
    found = nodes(hosts)
    assert sorted(n["Description"]["Hostname"] for n in found) == NODES
    assert all(n["Status"]["State"] == "ready" and n["Spec"]["Role"] == "manager" for n in found)
    assert all(n["ManagerStatus"]["Reachability"] == "reachable" for n in found)
    labels = {n["Description"]["Hostname"]: n["Spec"]["Labels"] for n in found}
    assert labels == {"swarm-1": {"llm-chat-data": "true"}, "swarm-2": {}, "swarm-3": {}}
    ids = sorted(n["ID"] for n in found)
    again = cli(cluster, "swarm.setup", "--host", "swarm", "--bundle", str(bundles["v1"]))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for n in NODES:
        assert re.search(rf"^{n}: uploaded 0 B; swarm: in the swarm as manager.*; nothing changed$", again.stdout, re.M), \
            again.stdout[-3000:]
    assert sorted(n["ID"] for n in nodes(hosts)) == ids
    status = cli(cluster, "swarm.status", "--host", "swarm", "--json", stack=False)
    assert status.returncode == 0, status.stdout + status.stderr
    shown = json.loads(status.stdout)
    assert sorted((n["host"], n["role"], n["manager"]) for n in shown["nodes"]) == \
        [(n, "manager", "reachable") for n in NODES]
    # the join token never reached a command line: the audit log and the hosts' process
    # arguments cannot have it, and no output printed it
    token = hosts.sh("swarm-1", "docker swarm join-token -q manager").strip()
    assert token and token not in first.stdout + first.stderr + again.stdout


def test_unpinned_data_service_is_refused_and_nothing_changes(cluster, hosts, bundles):
    before = {n: hosts.sh(n, "ls /opt/ferry/stacks 2>/dev/null; docker service ls -q") for n in NODES}
    refused = cli(cluster, "deploy", "--host", "swarm", "--bundle", str(bundles["v1"]), "--set",
                  "data_node_label=nowhere")
    assert refused.returncode == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: services.backend: holds data") and "not pinned to one node" in line, line
    assert "allow no node" in line
    assert {n: hosts.sh(n, "ls /opt/ferry/stacks 2>/dev/null; docker service ls -q") for n in NODES} == before


def test_a_node_of_the_swarm_outside_the_selection_is_refused_before_any_change(cluster, hosts, bundles):
    """swarm-3 is in the swarm but not selected: it would not get the bundle's images, so
    ``--resolve-image never`` would start tasks there that find none: refused, named,
    before anything is uploaded or changed on any node."""
    before = {n: hosts.state(n) + hosts.sh(n, "docker images -q | sort") for n in NODES}
    refused = cli(cluster, "deploy", "--host", "swarm:!swarm-3", "--bundle", str(bundles["v1"]))
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: node swarm-3 ({hosts.ip('swarm-3')}) of the swarm is not among the selected "
                           "hosts, so it would lack the bundle's images"), line
    assert line.endswith("nothing was deployed"), line
    # swarm.setup of a part of the swarm would take the default roles from that part
    # (two hosts: one manager) and demote swarm-2: refused the same way
    setup = cli(cluster, "swarm.setup", "--host", "swarm:!swarm-3", "--bundle", str(bundles["v1"]))
    assert setup.returncode == 1, setup.stdout[-3000:] + setup.stderr[-3000:]
    line = setup.stderr.strip().splitlines()[-1]
    assert line.startswith("error: node swarm-3 (") and "swarm.setup takes the default roles" in line, line
    assert {n: hosts.state(n) + hosts.sh(n, "docker images -q | sort") for n in NODES} == before
    assert all(n["Spec"]["Role"] == "manager" for n in nodes(hosts))       # swarm-2 was not demoted


def test_deploy_verified_on_every_node(cluster, hosts, bundles):
    d = deploy_stack(cluster.inventory, "swarm", STACK, bundles["v1"]).assert_green()
    assert "data services pinned: backend -> swarm-1" in d.out
    checks = [c for r in d.reports for c in r.checks]
    assert {c.host for c in checks} == set(NODES)
    assert sorted(c.target for c in checks if c.kind == "replicas") == ["backend", "frontend", "nginx"]
    assert len([c for c in checks if c.kind == "task"]) == 7            # 2 backend + 2 frontend + 3 nginx
    assert {c.host for c in checks if c.kind == "http"} == set(NODES)
    backend_nodes = hosts.sh("swarm-1", f"docker service ps --filter desired-state=running --format '{{{{.Node}}}}' "
                                        f"{STACK}_backend").split()
    assert backend_nodes == ["swarm-1", "swarm-1"]
    spec = json.loads(hosts.sh("swarm-1", f"docker service inspect -f '{{{{json .Spec}}}}' {STACK}_backend"))
    assert spec["Mode"]["Replicated"]["Replicas"] == 2                                   # deploy.replicas
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.llm-chat-data == true"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback" and spec["UpdateConfig"]["Order"] == "stop-first"
    assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 256 * 1024 * 1024
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "llm-chat-backend:1.0.0"   # --resolve-image never: no digest
    nginx = json.loads(hosts.sh("swarm-1", f"docker service inspect -f '{{{{json .Spec}}}}' {STACK}_nginx"))
    assert "Global" in nginx["Mode"] and nginx["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    for n, h in health(hosts).items():
        assert h["status"] == "ok" and h["model"] == "gpt-4o-mini", (n, h)
    for n in NODES:
        assert current(hosts, n) == d.reports[0].release
    verify = cli(cluster, "verify", "--host", "swarm", "--json")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    assert {c["host"] for c in json.loads(verify.stdout)} == set(NODES)
    again = deploy_stack(cluster.inventory, "swarm", STACK, bundles["v1"]).assert_green()
    assert "updated 0 services" in again.out and all("nothing changed" in line for line in again.summary.splitlines())


LOCK = f"/opt/ferry/locks/{STACK}"


def test_the_lock_of_any_node_stops_a_deploy_and_none_is_left_behind(cluster, hosts, bundles):
    before = tasks(hosts)
    hosts.sh("swarm-3", f"mkdir -p {LOCK} && echo '{{\"who\": \"ops@console\", \"task\": \"backup\", "
                        f"\"message\": \"by hand\"}}' > {LOCK}/info.json")
    try:
        refused = cli(cluster, "deploy", "--host", "swarm", "--bundle", str(bundles["v1"]), "--set", "llm_model=gpt-4o")
    finally:
        hosts.sh("swarm-3", f"rm -rf {LOCK}")
    assert refused.returncode == 1, refused.stdout[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert f"swarm-3: stack '{STACK}' is locked: held by ops@console" in line and '"by hand"' in line, line
    assert tasks(hosts) == before and all(h["model"] == "gpt-4o-mini" for h in health(hosts).values())
    for n in NODES:      # the locks taken on swarm-1 and swarm-2 before swarm-3 refused were given back
        assert hosts.sh(n, f"test -e {LOCK} && echo held || echo free").strip() == "free", n


def test_verify_names_the_node_whose_task_is_not_running(cluster, hosts, bundles):
    nginx = hosts.sh("swarm-3", f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_nginx").split()
    assert len(nginx) == 1
    hosts.sh("swarm-3", f"docker pause {nginx[0]}")
    try:
        bad = cli(cluster, "verify", "--host", "swarm", "--json")
    finally:
        hosts.sh("swarm-3", f"docker unpause {nginx[0]} 2>/dev/null; true")
    assert bad.returncode == 1, bad.stdout[-3000:]
    failed = {(c["host"], c["kind"]) for c in json.loads(bad.stdout) if not c["ok"]}
    assert ("swarm-3", "task") in failed and ("swarm-3", "http") in failed, failed
    assert all(host == "swarm-3" for host, _ in failed), failed
    deadline = time.monotonic() + 180           # paused long enough, Swarm may have replaced it
    while True:
        good = cli(cluster, "verify", "--host", "swarm", "--json")
        if good.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert good.returncode == 0, good.stdout[-3000:]


def test_changed_variable_updates_the_backend_only(cluster, hosts, bundles):
    before = tasks(hosts)
    d = deploy_stack(cluster.inventory, "swarm", STACK, bundles["v1"], {"llm_model": "gpt-4o"}).assert_green()
    after = tasks(hosts)
    assert {s for s in after if after[s] != before[s]} == {"backend"}, (before, after)
    assert "updated 1 services (backend)" in d.out
    assert all(h["model"] == "gpt-4o" for h in health(hosts).values())


def test_failing_upgrade_is_rolled_back_by_swarm(cluster, hosts, bundles):
    running = current(hosts, "swarm-1")
    d = deploy_stack(cluster.inventory, "swarm", STACK, bundles["v3"], {"llm_model": "gpt-4o"})
    primary = d.reports[0]
    assert primary.status == "rolled-back", d.out[-4000:]
    assert "Swarm rolled its update back (failure_action: rollback)" in primary.error, primary.error
    assert "rollback completed" in primary.error
    assert "task: non-zero exit (1)" in d.out
    assert "FATAL: model registry unreachable" in d.out                  # the failing task's log
    assert f"the swarm runs {running} again" in primary.error
    for n in NODES:
        assert current(hosts, n) == running
    images = hosts.sh("swarm-1", f"docker service inspect -f '{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}' "
                                 f"{STACK}_backend").strip()
    assert images == "llm-chat-backend:1.0.0"
    assert all(h["status"] == "ok" and h["model"] == "gpt-4o" for h in health(hosts).values())
    audit = hosts.sh("swarm-1", "tail -n 5 /opt/ferry/audit.log")
    assert '"task": "deploy"' in audit and '"result": "rolled-back"' in audit


def test_rollback_returns_to_the_previous_release(cluster, hosts, bundles):
    history = json.loads(cli(cluster, "releases", "--host", "swarm-1", "--json").stdout)
    ids = sorted(r["release"] for r in history if r["host"] == "swarm-1")
    now = current(hosts, "swarm-1")
    target = ids[ids.index(now) - 1]
    res = cli(cluster, "rollback", "--host", "swarm")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"{now} -> {target}" in res.stdout
    for n in NODES:
        assert current(hosts, n) == target
    assert all(h["model"] == "gpt-4o-mini" for h in health(hosts).values())
    status = cli(cluster, "status", "--host", "swarm", "--json")
    assert status.returncode == 0, status.stdout[-2000:]
    shown = json.loads(status.stdout)[0]
    assert shown["release"] == target and shown["healthy"]
    assert shown["services"]["backend"]["state"] == "2/2 ready (replicated)"


def conversations(hosts, node: str) -> list[str]:
    return [c["title"] for c in json.loads(http(f"http://{hosts.ip(node)}/api/conversations")[1])]


def test_backup_runs_on_the_data_node_and_restore_puts_the_data_back(cluster, hosts, bundles):
    status, _ = http(f"http://{hosts.ip('swarm-2')}/api/conversations", json.dumps({"title": "kept"}).encode(),
                     {"Content-Type": "application/json"})
    assert status == 201
    res = cli(cluster, "backup", "--host", "swarm")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "backend run on swarm-1: backing up there" in res.stdout
    archives = hosts.sh("swarm-1", f"ls /var/backups/ferry/{STACK}/ 2>/dev/null")
    assert ".ferry-backup.tar" in archives
    for n in NODES[1:]:          # no archive on the nodes that do not run the data (no directory at all)
        assert not hosts.sh(n, "find /var/backups/ferry -name '*.ferry-backup*' 2>/dev/null; true").strip(), n
    status, _ = http(f"http://{hosts.ip('swarm-3')}/api/conversations", json.dumps({"title": "after"}).encode(),
                     {"Content-Type": "application/json"})
    assert status == 201 and {"kept", "after"} <= set(conversations(hosts, "swarm-1"))
    res = cli(cluster, "restore", "--host", "swarm")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "scaling backend to 0 (their data is on swarm-1)" in res.stdout and "checks passed" in res.stdout
    for n in NODES:
        titles = conversations(hosts, n)
        assert "kept" in titles and "after" not in titles, (n, titles)
    assert tasks(hosts)["backend"] and len(tasks(hosts)["backend"]) == 2
