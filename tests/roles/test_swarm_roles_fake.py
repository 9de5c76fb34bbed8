"""swarm-cluster with the fake transport: a small pretend swarm answers ``docker info``,
``docker node inspect`` and the Engine API the way Docker 20.10 does. The primary
initialises, the others join with the token of their role (read from the primary, sent
on stdin only: it is in no command line), roles and labels follow the inventory, a
second run changes nothing, check mode changes nothing, a node of another swarm is
refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ferry.errors import HostError
from ferry.host import swarm as hs
from ferry.host.transport.fake import FakeTransport
from ferry.model.swarm import plan_cluster
from ferry.roles import load_role

TOKENS = {"manager": "SWMTKN-1-abc-MANAGERSECRET", "worker": "SWMTKN-1-abc-WORKERSECRET"}
ROOT = Path(__file__).resolve().parents[2]


class PretendSwarm:
    """Hosts of one pretend swarm: ``join``/``init`` change it, facts read it."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}        # host -> node info
        self.commands: list[tuple[str, list[str], bytes]] = []

    def node_json(self, host: str) -> dict:
        n = self.nodes[host]
        info = {"ID": n["id"], "Version": {"Index": 5}, "Description": {"Hostname": host, "Engine": {"EngineVersion": "20.10.24"}},
                "Spec": {"Role": n["role"], "Availability": "active", "Labels": dict(n["labels"])},
                "Status": {"State": "ready", "Addr": n["addr"]}}
        if n["role"] == "manager":
            info["ManagerStatus"] = {"Leader": n.get("leader", False), "Reachability": "reachable",
                                     "Addr": f"{n['addr']}:2377"}
        return info

    def handler(self, host: str, addr: str, foreign: bool = False):
        def handle(argv: list[str], data: bytes):
            self.commands.append((host, argv, data))
            if argv[:2] == ["sh", "-c"] and "docker info" in argv[2]:
                if foreign:
                    swarm = {"LocalNodeState": "active", "NodeID": "zzz", "ControlAvailable": False,
                             "RemoteManagers": [{"Addr": "192.168.9.9:2377"}]}
                    return 0, f"==hostname\n{host}\n==swarm\n{json.dumps(swarm)}\n==nodes\n[]\n", ""
                n = self.nodes.get(host)
                swarm = {"LocalNodeState": "active" if n else "inactive", "NodeID": n["id"] if n else "",
                         "NodeAddr": addr if n else "", "ControlAvailable": bool(n and n["role"] == "manager"),
                         "Cluster": {"ID": "cluster1"} if n and n["role"] == "manager" else None}
                nodes = [self.node_json(h) for h in self.nodes] if n and n["role"] == "manager" else []
                return 0, f"==hostname\n{host}\n==swarm\n{json.dumps(swarm)}\n==nodes\n{json.dumps(nodes)}\n", ""
            if argv[0] == "curl":
                url = argv[-1]
                if url.endswith("/swarm/init"):
                    body = json.loads(data)
                    self.nodes[host] = {"id": f"id-{host}", "role": "manager", "addr": body["AdvertiseAddr"].split(":")[0],
                                        "labels": {}, "leader": True}
                    return 0, '"id"\n200', ""
                if url.endswith("/swarm/join"):
                    body = json.loads(data)
                    role = "manager" if body["JoinToken"] == TOKENS["manager"] else "worker"
                    self.nodes[host] = {"id": f"id-{host}", "role": role, "addr": body["AdvertiseAddr"].split(":")[0],
                                        "labels": {}}
                    return 0, "\n200", ""
                if url.endswith("/swarm"):
                    return 0, json.dumps({"JoinTokens": {"Manager": TOKENS["manager"], "Worker": TOKENS["worker"]}}) \
                        + "\n200", ""
            if argv[:3] == ["docker", "node", "update"]:
                target = next(h for h, n in self.nodes.items() if n["id"] == argv[-1])
                for i, a in enumerate(argv):
                    if a == "--role":
                        self.nodes[target]["role"] = argv[i + 1]
                    if a == "--label-add":
                        k, _, v = argv[i + 1].partition("=")
                        self.nodes[target]["labels"][k] = v
                return 0, argv[-1], ""
            raise AssertionError(f"unexpected command on {host}: {argv}")
        return handle


@pytest.fixture
def swarm():
    return PretendSwarm()


def run_setup(swarm: PretendSwarm, make_ctx, inventory: list[tuple[str, dict]], check: bool = False,
              foreign: str = ""):
    cluster = plan_cluster(inventory, {name: v["ansible_host"] for name, v in inventory})
    role = load_role("swarm-cluster")
    run = role.ClusterRun(cluster)
    results = {}
    order = [cluster.primary.host] + [n.host for n in cluster.nodes if n is not cluster.primary]
    for host in order:
        node = cluster.node(host)
        t = FakeTransport(swarm.handler(host, node.addr, foreign=host == foreign), host=host)
        ctx = make_ctx(t, check=check)
        ctx.host = host
        ctx.state.cluster = run
        results[host] = role.run(ctx)
    return results


INVENTORY = [("n1", {"ansible_host": "10.1.0.1", "swarm_labels": {"data": "true"}}),
             ("n2", {"ansible_host": "10.1.0.2"}),
             ("n3", {"ansible_host": "10.1.0.3"}),
             ("n4", {"ansible_host": "10.1.0.4"})]


def test_forms_the_swarm_then_a_second_run_changes_nothing(swarm, make_ctx):
    first = run_setup(swarm, make_ctx, INVENTORY)
    assert first["n1"].summary == "initialised the swarm advertising 10.1.0.1; labelled data=true"
    assert [first[h].summary for h in ("n2", "n3")] == ["joined the swarm as manager"] * 2
    assert first["n4"].summary == "joined the swarm as worker"
    assert {h: (n["role"], n["labels"]) for h, n in swarm.nodes.items()} == {
        "n1": ("manager", {"data": "true"}), "n2": ("manager", {}), "n3": ("manager", {}), "n4": ("worker", {})}
    init = next(json.loads(d) for h, a, d in swarm.commands if a[-1].endswith("/swarm/init"))
    assert init == {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.1.0.1:2377"}
    joins = [(h, json.loads(d)) for h, a, d in swarm.commands if a[-1].endswith("/swarm/join")]
    assert [(h, b["RemoteAddrs"], b["AdvertiseAddr"]) for h, b in joins] == [
        ("n2", ["10.1.0.1:2377"], "10.1.0.2:2377"), ("n3", ["10.1.0.1:2377"], "10.1.0.3:2377"),
        ("n4", ["10.1.0.1:2377"], "10.1.0.4:2377")]
    # the tokens travel on stdin only: no command line holds one
    for _, argv, _ in swarm.commands:
        assert not any("SWMTKN" in a for a in argv)
    assert sum(1 for h, a, _ in swarm.commands if a[-1].endswith("/swarm") and h == "n1") == 1   # read once
    swarm.commands.clear()
    again = run_setup(swarm, make_ctx, INVENTORY)
    assert not any(r.changed for r in again.values())
    assert again["n1"].summary == "in the swarm as manager (leader), active, labels up to date"
    assert again["n4"].summary == "in the swarm as worker, active, labels up to date"
    assert all("docker info" in a[2] for _, a, _ in swarm.commands)            # facts only


def test_roles_and_labels_follow_the_inventory(swarm, make_ctx):
    run_setup(swarm, make_ctx, INVENTORY)
    swarm.commands.clear()
    changed = [("n1", {"ansible_host": "10.1.0.1", "swarm_labels": {"data": "true"}}),
               ("n2", {"ansible_host": "10.1.0.2", "swarm_role": "worker"}),
               ("n3", {"ansible_host": "10.1.0.3", "swarm_role": "manager", "swarm_labels": {"zone": "b"}}),
               ("n4", {"ansible_host": "10.1.0.4", "swarm_role": "manager"})]
    # n1 has no explicit role and n3/n4 say manager: n1 becomes a worker by the rules, but
    # the primary is n3 now; n1 is demoted through it
    result = run_setup(swarm, make_ctx, changed)
    assert result["n2"].summary == "demoted to worker"
    assert result["n3"].summary == "labelled zone=b"
    assert result["n4"].summary == "promoted to manager"
    assert result["n1"].summary == "demoted to worker"
    assert swarm.nodes["n2"]["role"] == "worker" and swarm.nodes["n4"]["role"] == "manager"
    updates = [a for h, a, _ in swarm.commands if a[:3] == ["docker", "node", "update"]]
    assert ["docker", "node", "update", "--role", "worker", "id-n2"] in updates
    assert all(h == "n3" for h, a, _ in swarm.commands if a[:3] == ["docker", "node", "update"])


def test_check_mode_changes_nothing(swarm, make_ctx):
    result = run_setup(swarm, make_ctx, INVENTORY, check=True)
    assert result["n1"].summary == "would initialise the swarm advertising 10.1.0.1"
    assert result["n4"].summary == "would join the swarm as worker (manager 10.1.0.1)"
    assert not swarm.nodes
    assert not [a for _, a, _ in swarm.commands if a[0] != "sh"]


def test_a_node_of_another_swarm_is_refused(swarm, make_ctx):
    with pytest.raises(HostError) as exc:
        run_setup(swarm, make_ctx, INVENTORY[:2], foreign="n2")
    assert str(exc.value).startswith("n2: belongs to another swarm (node zzz, managers 192.168.9.9)")
    assert "docker swarm leave --force" in str(exc.value)


def test_docker_refusing_a_join_is_one_line_without_the_token():
    text = '{"message":"rpc error: code = Unknown desc = The swarm does not have a leader."}\n503'
    with pytest.raises(HostError) as exc:
        hs.parse_api("n2", "docker swarm join", text)
    assert str(exc.value) == "n2: docker swarm join: rpc error: code = Unknown desc = The swarm does not have a leader."
    assert hs.parse_api("n1", "x", '"abc"\n200') == "abc"
    argv = hs.swarm_api("POST", "/swarm/join", body=True)
    assert "--data-binary" in argv and argv[argv.index("--data-binary") + 1] == "@-"


# -- ferry-swarm-activate, run for real against a stub docker ---------------------------------

def _activate_env(tmp_path: Path, fail_on: str = "") -> tuple[Path, dict]:
    root = tmp_path / "ferry"
    for rel in ("r1", "r2"):
        d = root / "stacks" / "app" / "releases" / rel
        d.mkdir(parents=True)
        (d / "swarm-stack.json").write_text("{}")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker").write_text("#!/bin/sh\necho \"docker $*\" >> \"$DOCKER_LOG\"\n"
                                 "case \"$*\" in *\"$FAIL_ON\"*) [ -n \"$FAIL_ON\" ] && { echo 'failed to update "
                                 "service app_api: no such image' >&2; exit 1; } ;; esac\nexit 0\n")
    (stub / "docker").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "DOCKER_LOG": str(tmp_path / "docker.log"), "FAIL_ON": fail_on}
    return root, env


def _activate(root: Path, env: dict, release: str, mode: str) -> subprocess.CompletedProcess:
    argv = hs.activate(str(root), "app", release, mode == "deploy")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_activate_switches_current_and_deploys_the_release(tmp_path):
    root, env = _activate_env(tmp_path)
    res = _activate(root, env, "r1", "deploy")
    assert res.returncode == 0 and hs.parse_activation(res.stdout)[0] == "ok"
    current = root / "stacks" / "app" / "current"
    assert current.is_symlink() and str(current.readlink()) == "releases/r1"
    log = (tmp_path / "docker.log").read_text().splitlines()
    assert log == [f"docker stack deploy --prune --resolve-image never -c {root}/stacks/app/releases/r1/swarm-stack.json app"]
    res = _activate(root, env, "r2", "switch")
    assert res.returncode == 0 and str(current.readlink()) == "releases/r2"
    assert len((tmp_path / "docker.log").read_text().splitlines()) == 1      # a switch deploys nothing
    audit = (root / "audit.log").read_text().splitlines()
    assert json.loads(audit[-1])["result"] == "ok" and json.loads(audit[-1])["release"] == "r2"


def test_a_failed_stack_deploy_switches_back_and_deploys_the_previous_release(tmp_path):
    root, env = _activate_env(tmp_path)
    assert _activate(root, env, "r1", "deploy").returncode == 0
    env["FAIL_ON"] = "releases/r2/"
    res = _activate(root, env, "r2", "deploy")
    result, log = hs.parse_activation(res.stdout)
    assert res.returncode == 1 and result == "failed" and "no such image" in log
    assert str((root / "stacks" / "app" / "current").readlink()) == "releases/r1"
    deploys = (tmp_path / "docker.log").read_text().splitlines()
    assert deploys[-1].endswith("releases/r1/swarm-stack.json app")
    record = json.loads((root / "stacks" / "app" / "activate.json").read_text())
    assert record["running"] == "r1" and record["result"] == "failed"


def test_a_failed_first_deploy_removes_the_stack(tmp_path):
    root, env = _activate_env(tmp_path, fail_on="stack deploy")
    res = _activate(root, env, "r1", "deploy")
    assert res.returncode == 1
    assert not (root / "stacks" / "app" / "current").exists()
    assert (tmp_path / "docker.log").read_text().splitlines()[-1] == "docker stack rm app"


def test_activate_refuses_bad_identifiers(tmp_path):
    root, env = _activate_env(tmp_path)
    argv = hs.activate(str(root), "app", "../../etc", True)
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "bad identifier" in res.stderr
