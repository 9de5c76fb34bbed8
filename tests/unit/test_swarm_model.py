"""The swarm's pure rules: the cluster an inventory describes (roles, quorum, advertise
addresses, labels), data services pinned to one node, and the Compose file format 3.8
``docker stack deploy`` reads, made from Compose's own normalized model."""

from __future__ import annotations

import json

import pytest

from ferry.controller import composecli
from ferry.errors import FerryError
from ferry.model.compose import ComposeModel
from ferry.model.stack import load_stack
from ferry.model.swarm import (NodeFacts, data_pins, data_services, eligible_nodes, plan_cluster, selection_engine,
                               stack_file)
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hosts(n: int, **per: dict) -> list[tuple[str, dict]]:
    return [(f"h{i}", per.get(f"h{i}", {})) for i in range(1, n + 1)]


def plan(n: int, **per: dict):
    """The cluster of n hosts h1..hn at 10.0.0.i (their connection's address)."""
    addresses = {f"h{i}": per.get(f"h{i}", {}).pop("address", f"10.0.0.{i}") for i in range(1, n + 1)}
    return plan_cluster(hosts(n, **per), addresses)


@pytest.mark.parametrize("n,managers", [(1, ["h1"]), (2, ["h1"]), (3, ["h1", "h2", "h3"]), (5, ["h1", "h2", "h3"])])
def test_default_roles_give_one_manager_or_three_for_quorum(n, managers):
    c = plan(n)
    assert [m.host for m in c.managers] == managers
    assert c.primary.host == "h1"
    assert [x.host for x in c.nodes if x.role == "worker"] == [f"h{i}" for i in range(len(managers) + 1, n + 1)]
    assert not c.warnings


def test_a_host_that_says_manager_makes_the_others_workers():
    c = plan(4, h3={"swarm_role": "manager"})
    assert [m.host for m in c.managers] == ["h3"] and c.primary.host == "h3"
    assert all(n.role == "worker" for n in c.nodes if n.host != "h3")


def test_explicit_workers_leave_the_default_managers_to_the_rest():
    c = plan(4, h1={"swarm_role": "worker"})
    assert [m.host for m in c.managers] == ["h2", "h3", "h4"] and c.node("h1").role == "worker"


def test_even_number_of_managers_is_warned():
    c = plan(2, h1={"swarm_role": "manager"}, h2={"swarm_role": "manager"})
    assert len(c.managers) == 2 and "even number" in c.warnings[0]


@pytest.mark.parametrize("per,message", [
    ({"h2": {"swarm_role": "leader"}}, "h2: swarm_role: 'leader' must be manager or worker"),
    ({"h1": {"swarm_role": "worker"}, "h2": {"swarm_role": "worker"}}, "no host of the swarm is a manager"),
    ({"h2": {"address": "db.example"}}, "h2: ansible_host 'db.example' is not an IP address"),
    ({"h2": {"swarm_advertise_addr": "eth0"}}, "h2: swarm_advertise_addr 'eth0' is not an IP address"),
    ({"h2": {"swarm_advertise_addr": "10.0.0.1"}}, "h2: advertise address 10.0.0.1 is also h1's"),
    ({"h1": {"swarm_labels": ["a"]}}, "h1: swarm_labels must be a mapping"),
    ({"h1": {"swarm_labels": {"bad key": "x"}}}, "h1: swarm_labels: 'bad key' is not a valid label name"),
    ({"h1": {"swarm_labels": {"k": "a\nb"}}}, "h1: swarm_labels.k: the value holds control characters"),
    ({"h1": {"swarm_labels": {"k": {"x": 1}}}}, "h1: swarm_labels.k must be a string"),
])
def test_bad_swarm_variables_are_one_line_naming_host_and_variable(per, message):
    with pytest.raises(FerryError) as exc:
        plan(2, **per)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_advertise_address_and_labels_from_the_inventory():
    c = plan(2, h2={"swarm_advertise_addr": "192.168.5.2", "swarm_labels": {"disk": "ssd", "gpu": True}})
    n = c.node("h2")
    assert n.addr == "192.168.5.2" and n.labels == {"disk": "ssd", "gpu": "true"}
    assert c.by_addr("10.0.0.1").host == "h1" and c.by_addr("10.9.9.9") is None


def test_engines_are_not_mixed_in_one_command():
    assert selection_engine([("a", {}), ("b", {"ferry_engine": "compose"})]) == "compose"
    assert selection_engine([("a", {"ferry_engine": "swarm"})]) == "swarm"
    with pytest.raises(FerryError, match="two engines: ferry_engine compose: a; ferry_engine swarm: b"):
        selection_engine([("a", {}), ("b", {"ferry_engine": "swarm"})])
    with pytest.raises(FerryError, match="c: ferry_engine: 'k8s' must be one of compose, swarm"):
        selection_engine([("c", {"ferry_engine": "k8s"})])


# -- placement -------------------------------------------------------------------------

NODES = [NodeFacts("h1", "node-a", "manager", {"llm-chat-data": "true"}, "id1"),
         NodeFacts("h2", "node-b", "manager", {}, "id2"),
         NodeFacts("h3", "node-c", "worker", {"zone": "b"}, "")]


@pytest.mark.parametrize("constraints,eligible", [
    ([], ["h1", "h2", "h3"]),
    (["node.hostname == node-b"], ["h2"]),
    (["node.hostname==NODE-C"], ["h3"]),
    (["node.labels.llm-chat-data == true"], ["h1"]),
    (["node.labels.zone != b"], ["h1", "h2"]),
    (["node.role == manager"], ["h1", "h2"]),
    (["node.role == manager", "node.hostname != node-a"], ["h2"]),
    (["node.id == id2"], ["h2", "h3"]),                 # h3 has no node ID yet: Ferry cannot tell
    (["node.id == id9"], ["h3"]),
    (["engine.labels.x == y"], ["h1", "h2", "h3"]),     # Ferry cannot tell: never too few
])
def test_eligible_nodes(constraints, eligible):
    assert eligible_nodes(constraints, NODES) == eligible


def _model(services: dict) -> ComposeModel:
    from ferry.model.compose import parse_model
    return parse_model({"name": "s", "services": services, "volumes": {"vol": {}}})


class _Stack:
    class backup:
        sqlite = [{"service": "app", "file": "db/app.db"}]
        mysql: list = []
        redis: list = []


def test_data_services_are_volumes_data_binds_and_backup_entries():
    model = _model({
        "app": {"image": "x"},
        "db": {"image": "y", "volumes": [{"type": "volume", "source": "vol", "target": "/var/lib/mysql"}]},
        "files": {"image": "z", "volumes": [{"type": "bind", "source": "/opt/ferry/stacks/s/data/up", "target": "/u"}]},
        "web": {"image": "w", "volumes": [{"type": "bind", "source": "/opt/ferry/stacks/s/current/n.conf",
                                           "target": "/etc/n.conf"}]}})
    found = data_services(model, _Stack, ["/opt/ferry/stacks/s/data"])
    assert sorted(found) == ["app", "db", "files"]
    assert found["db"] == "volume s_vol" and "stack.yml backup.sqlite" in found["app"]


def test_data_service_must_be_pinned_to_one_node():
    pinned = _model({"app": {"image": "x", "deploy": {"placement": {"constraints": ["node.labels.llm-chat-data == true"]}}}})
    assert data_pins(pinned, _Stack, [], NODES) == {"app": "h1"}
    loose = _model({"app": {"image": "x", "deploy": {"replicas": 2}}})
    with pytest.raises(FerryError) as exc:
        data_pins(loose, _Stack, [], NODES)
    assert str(exc.value).startswith("services.app: holds data (stack.yml backup.sqlite) but is not pinned to one node")
    assert "it has no placement constraint" in str(exc.value)
    two = _model({"app": {"image": "x", "deploy": {"placement": {"constraints": ["node.role == manager"]}}}})
    with pytest.raises(FerryError, match=r"constraints \['node.role == manager'\] allow h1, h2"):
        data_pins(two, _Stack, [], NODES)
    nowhere = _model({"app": {"image": "x", "deploy": {"placement": {"constraints": ["node.labels.x == y"]}}}})
    with pytest.raises(FerryError, match="allow no node"):
        data_pins(nowhere, _Stack, [], NODES)
    everywhere = _model({"app": {"image": "x", "deploy": {"mode": "global"}}})
    with pytest.raises(FerryError, match="runs on every node"):
        data_pins(everywhere, _Stack, [], NODES)


# -- the stack file, from Compose's own model ----------------------------------------------

CURRENT = "/opt/ferry/stacks/app/current"


def normalized(compose: str, env: str = "") -> dict:
    files = {"compose.yml": compose.encode()}
    if env:
        files[".env"] = env.encode()
    return json.loads(composecli.config_json(files, "app", CURRENT))


def test_stack_file_keeps_swarm_keys_and_drops_what_swarm_does_its_own_way():
    config = normalized("""
services:
  api:
    image: api:1
    restart: unless-stopped
    pull_policy: always
    env_file: .env
    command: ["serve", "--port", "8000"]
    ports: ["8000-8001:9000-9001", {target: 80, published: "8080", mode: host}]
    volumes: ["./data:/data", "/opt/ferry/stacks/app/current/api.yaml:/etc/api.yaml:ro"]
    depends_on: {db: {condition: service_healthy}}
    healthcheck: {test: ["CMD", "true"], interval: 2s, start_period: 5s}
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement: {constraints: ["node.labels.data == true"], max_replicas_per_node: 2}
      update_config: {failure_action: rollback, monitor: 10s, order: start-first, parallelism: 1}
      rollback_config: {parallelism: 0}
      resources: {limits: {cpus: "0.5", memory: 256M}, reservations: {memory: 64M}}
      restart_policy: {condition: on-failure, max_attempts: 3}
  db:
    image: mariadb:10.11
    container_name: db
    volumes: [dbdata:/var/lib/mysql]
volumes:
  dbdata: {}
""", "TOKEN=s3cret\n".replace("TOKEN", "API_TOKEN"))
    doc, notes = stack_file(config)
    assert doc["version"] == "3.8" and "name" not in doc
    api = doc["services"]["api"]
    assert api["environment"]["API_TOKEN"] == "s3cret"                 # env_file inlined by Compose
    assert api["command"] == ["serve", "--port", "8000"]
    assert api["ports"] == [{"mode": "ingress", "protocol": "tcp", "target": 9000, "published": 8000},
                            {"mode": "ingress", "protocol": "tcp", "target": 9001, "published": 8001},
                            {"mode": "host", "protocol": "tcp", "target": 80, "published": 8080}]
    assert api["volumes"][0] == {"type": "bind", "source": f"{CURRENT}/data", "target": "/data"}
    assert api["volumes"][1]["read_only"] is True and "bind" not in api["volumes"][1]   # create_host_path: not 3.8
    deploy = api["deploy"]
    assert deploy["replicas"] == 2 and deploy["endpoint_mode"] == "dnsrr"
    assert deploy["placement"] == {"constraints": ["node.labels.data == true"], "max_replicas_per_node": 2}
    assert deploy["update_config"] == {"failure_action": "rollback", "monitor": "10s", "order": "start-first",
                                       "parallelism": 1}
    assert deploy["resources"] == {"limits": {"cpus": "0.5", "memory": "268435456"},
                                   "reservations": {"memory": "67108864"}}
    assert deploy["restart_policy"] == {"condition": "on-failure", "max_attempts": 3}
    assert api["healthcheck"] == {"test": ["CMD", "true"], "interval": "2s", "start_period": "5s"}
    for key in ("container_name", "restart", "pull_policy", "depends_on", "env_file"):
        assert key not in api
    assert "container_name" not in doc["services"]["db"]
    assert any(n.startswith("services.db.container_name: left out: Swarm names containers itself") for n in notes)
    assert any("services.api.depends_on: left out: Swarm starts services in no order" in n for n in notes)
    assert doc["volumes"] == {"dbdata": {"name": "app_dbdata"}}
    assert doc["services"]["db"]["volumes"] == [{"type": "volume", "source": "dbdata", "target": "/var/lib/mysql"}]


@pytest.mark.parametrize("service,message", [
    ("privileged: true", "services.api.privileged: Swarm services cannot run privileged"),
    ("devices: [/dev/dri:/dev/dri]", "services.api.devices: Swarm services cannot map host devices"),
    ("network_mode: host", "services.api.network_mode: Swarm services cannot use network_mode"),
    ("ports: ['127.0.0.1:8000:8000']", "services.api.ports[0]: Swarm publishes on every address; host_ip 127.0.0.1"),
])
def test_what_swarm_services_cannot_do_is_refused_naming_the_key(service, message):
    config = normalized(f"services:\n  api:\n    image: api:1\n    {service}\n")
    with pytest.raises(FerryError) as exc:
        stack_file(config)
    assert str(exc.value).startswith(message)


def test_the_swarm_variant_of_llm_chat_pins_its_data_and_publishes_in_host_mode():
    from ferry.model.paths import HostPaths
    from ferry.model.render import render_release, template_context
    from ferry.roles import all_role_defaults
    stack = load_stack(ROOT / "stacks" / "llm-chat-swarm")
    paths = HostPaths("/opt/ferry", stack.name, "b")
    context = template_context({**all_role_defaults(), **stack.defaults}, stack, paths.for_templates(),
                               {"SECRET_KEY": "k" * 64}, "swarm-1")
    release = render_release(stack, context, "swarm-1", composecli.resolver(None))
    doc, notes = stack_file(json.loads(composecli.config_json(release.files, stack.name, paths.current)))
    assert not notes
    s = doc["services"]
    assert s["backend"]["deploy"]["replicas"] == 2 and s["frontend"]["deploy"]["replicas"] == 2
    assert s["backend"]["deploy"]["placement"]["constraints"] == ["node.labels.llm-chat-data == true"]
    assert s["backend"]["deploy"]["update_config"]["failure_action"] == "rollback"
    assert s["nginx"]["deploy"]["mode"] == "global"
    assert s["nginx"]["ports"] == [{"mode": "host", "protocol": "tcp", "target": 80, "published": 80}]
    assert {x["deploy"]["endpoint_mode"] for x in s.values()} == {"dnsrr"}
    assert s["backend"]["environment"]["SECRET_KEY"] == "k" * 64
    nodes = [NodeFacts("swarm-1", "swarm-1", "manager", {"llm-chat-data": "true"}),
             NodeFacts("swarm-2", "swarm-2", "manager", {})]
    assert data_pins(release.model, stack, [paths.data], nodes) == {"backend": "swarm-1"}
