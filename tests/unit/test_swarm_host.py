"""Swarm facts and stack state: the builders' shape and their parsers, on JSON in the
shape Docker 20.10 prints (``docker info``'s ``Swarm``, ``docker node inspect``,
``docker service inspect``, ``docker inspect --type task``), and the health gate's rule
per service."""

from __future__ import annotations

import json

from ferry.host import containers, swarm as hs

STACK = "app"


def task(tid: str, service: str, node: str, state: str, desired: str = "running", ts: str = "2026-11-23T21:00:00Z",
         slot: int = 1, err: str = "", image: str = "api:1", env=("A=1",), healthcheck: bool = True) -> dict:
    return {"ID": tid, "ServiceID": f"svc-{service}", "Slot": slot, "NodeID": node, "DesiredState": desired,
            "CreatedAt": ts, "Status": {"Timestamp": ts, "State": state, "Err": err, "Message": state,
                                        "ContainerStatus": {"ContainerID": f"c-{tid}"}},
            "Spec": {"ContainerSpec": {"Image": image, "Labels": {"com.docker.stack.namespace": STACK},
                                       "Env": list(env),
                                       **({"Healthcheck": {"Test": ["CMD", "true"]}} if healthcheck else {})},
                     "Networks": [{"Target": "n1", "Aliases": [service]}]}}


def service(name: str, replicas: int | None = 2, update: dict | None = None, healthcheck: bool = True,
            image: str = "api:1", env=("A=1",), ports=()) -> dict:
    spec = {"Name": f"{STACK}_{name}",
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Labels": {"com.docker.stack.namespace": STACK},
                                               "Env": list(env), "StopGracePeriod": 10000000000, "DNSConfig": {},
                                               **({"Healthcheck": {"Test": ["CMD", "true"]}} if healthcheck else {})},
                             "RestartPolicy": {"Condition": "any"}, "Runtime": "container",
                             "Networks": [{"Target": "n1", "Aliases": [name]}], "ForceUpdate": 0},
            "Mode": {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}},
            "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": p, "PublishMode": "host"}
                                       for p in ports]}}
    if not healthcheck:
        spec["TaskTemplate"]["ContainerSpec"].pop("Healthcheck", None)
    out = {"ID": f"svc-{name}", "Spec": spec}
    if update:
        out["UpdateStatus"] = update
    return out


def node(nid: str, host: str, role: str = "manager") -> dict:
    return {"ID": nid, "Description": {"Hostname": host}, "Spec": {"Role": role, "Availability": "active"},
            "Status": {"State": "ready", "Addr": f"10.0.0.{nid[-1]}"},
            **({"ManagerStatus": {"Reachability": "reachable", "Addr": f"10.0.0.{nid[-1]}:2377"}}
               if role == "manager" else {})}


def state(services: list[dict], tasks: list[dict], now: str = "1795467700") -> hs.StackState:
    nodes = [node("n1", "a"), node("n2", "b", "worker")]
    text = (f"{now}\n==services\n{json.dumps(services)}\n==tasks\n{json.dumps(tasks)}\n"
            f"==nodes\n{json.dumps(nodes)}\n")
    return hs.parse_stack_state(STACK, text)


T0 = containers._epoch("2026-11-23T21:00:00Z")


def test_converged_service_with_healthcheck_is_ready():
    st = state([service("api")], [task("t1", "api", "n1", "running", slot=1), task("t2", "api", "n2", "running", slot=2),
                                  task("t0", "api", "n1", "shutdown", "shutdown", slot=1)])
    svc = st.services["api"]
    assert svc.full == "app_api" and svc.mode == "replicated" and svc.replicas == 2 and svc.healthcheck
    assert [t.id for t in svc.live()] == ["t1", "t2"] and all(t.current for t in svc.live())
    r = hs.service_readiness(st, svc, settle=10)
    assert r.ready and not r.failed and (r.desired, r.running) == (2, 2)
    assert r.detail == "2/2 ready; rule: healthcheck: Swarm runs a task once healthy"
    assert st.node_name("n2") == "b"


def test_a_task_of_the_previous_spec_is_not_ready_yet():
    st = state([service("api", env=("A=2",))], [task("t1", "api", "n1", "running", env=("A=1",)),
                                                 task("t2", "api", "n2", "running", slot=2, env=("A=2",))])
    r = hs.service_readiness(st, st.services["api"], 10)
    assert not r.ready and r.running == 1 and "task 1 on a: runs the previous spec" in r.detail


def test_an_update_under_way_is_not_ready_even_with_every_replica_running():
    upd = {"State": "updating", "StartedAt": "2026-11-23T21:00:05Z", "Message": "update in progress"}
    st = state([service("api", update=upd)], [task("t1", "api", "n1", "running"), task("t2", "api", "n2", "running", slot=2)])
    r = hs.service_readiness(st, st.services["api"], 10)
    assert not r.ready and not r.failed


def test_swarm_rolling_back_during_this_deploy_is_a_failure_with_the_task_error():
    upd = {"State": "rollback_completed", "StartedAt": "2026-11-23T21:00:30Z",
           "Message": "update rolled back due to failure or early termination of task t3"}
    tasks = [task("t1", "api", "n1", "running"), task("t2", "api", "n2", "running", slot=2),
             task("t3", "api", "n1", "failed", "shutdown", ts="2026-11-23T21:00:20Z", err="task: non-zero exit (1)")]
    st = state([service("api", update=upd)], tasks)
    r = hs.service_readiness(st, st.services["api"], 10, since=T0)
    assert r.failed and not r.ready
    assert "Swarm rolled its update back (failure_action: rollback): update rolled back due to failure" in r.detail
    assert "task 1 on a: failed: task: non-zero exit (1)" in r.detail
    # the same status left from an earlier deploy is no failure of this one
    later = hs.service_readiness(st, st.services["api"], 10, since=T0 + 3600)
    assert later.ready and not later.failed


def test_without_healthcheck_a_task_must_have_settled():
    st = state([service("worker", replicas=1, healthcheck=False)],
               [task("t1", "worker", "n2", "running", ts="2026-11-23T21:00:00Z", healthcheck=False)],
               now=str(int(T0) + 4))
    r = hs.service_readiness(st, st.services["worker"], settle=10)
    assert not r.ready and "no healthcheck: running 10s without a restart" in r.detail
    st = state([service("worker", replicas=1, healthcheck=False)],
               [task("t1", "worker", "n2", "running", healthcheck=False)], now=str(int(T0) + 11))
    assert hs.service_readiness(st, st.services["worker"], settle=10).ready


def test_global_service_and_host_mode_ports():
    st = state([service("web", replicas=None, ports=(80,))],
               [task("g1", "web", "n1", "running"), task("g2", "web", "n2", "starting")])
    svc = st.services["web"]
    assert svc.mode == "global" and svc.host_ports == [(80, "tcp")]
    r = hs.service_readiness(st, svc, 10)
    assert (r.desired, r.running) == (2, 1) and not r.ready
    assert "on b: starting (healthcheck not passing yet)" in r.detail


def test_a_task_that_cannot_be_placed_says_why():
    st = state([service("db", replicas=1)], [task("t1", "db", "", "pending",
                                                  err="no suitable node (scheduling constraints not satisfied on 2 nodes)")])
    r = hs.service_readiness(st, st.services["db"], 10)
    assert not r.ready and "on no node: pending: no suitable node (scheduling constraints" in r.detail


def test_node_facts_of_a_fresh_host_a_member_and_a_manager():
    fresh = hs.parse_node_facts("==hostname\nh1\n==swarm\nnull\n==nodes\n[]\n")
    assert fresh.hostname == "h1" and not fresh.docker and not fresh.in_swarm
    inactive = hs.parse_node_facts('==hostname\nh1\n==swarm\n{"NodeID":"","LocalNodeState":"inactive"}\n==nodes\n[]\n')
    assert inactive.docker and inactive.state == "inactive"
    manager = hs.parse_node_facts(
        '==hostname\nh1\n==swarm\n{"NodeID":"n1","NodeAddr":"10.0.0.1","LocalNodeState":"active",'
        '"ControlAvailable":true,"Cluster":{"ID":"c1"},"RemoteManagers":[{"NodeID":"n1","Addr":"10.0.0.1:2377"}]}\n'
        f'==nodes\n{json.dumps([node("n1", "h1"), node("n2", "h2", "worker")])}\n')
    assert manager.in_swarm and manager.control and manager.cluster_id == "c1" and manager.managers == ["10.0.0.1"]
    assert [(n.hostname, n.role, n.addr, n.reachability) for n in manager.nodes] == [
        ("h1", "manager", "10.0.0.1", "reachable"), ("h2", "worker", "10.0.0.2", "")]


def test_builders_quote_every_word_and_keep_secrets_off_the_command_line():
    assert hs.node_update("n2", "manager", {"zone": "b c"}) == ["docker", "node", "update", "--role", "manager",
                                                                "--label-add", "zone=b c", "n2"]
    body = json.loads(hs.join_request("10.0.0.2", "10.0.0.1", "SWMTKN-1-x"))
    assert body == {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "10.0.0.2:2377",
                    "RemoteAddrs": ["10.0.0.1:2377"], "JoinToken": "SWMTKN-1-x"}
    assert json.loads(hs.init_request("10.0.0.1", ["10.20.0.0/16"]))["DefaultAddrPool"] == ["10.20.0.0/16"]
    assert "'label=com.docker.stack.namespace=my stack'" in hs.stack_state("my stack")[2]
    assert hs.join_tokens({"JoinTokens": {"Worker": "w", "Manager": "m"}}) == {"manager": "m", "worker": "w"}
