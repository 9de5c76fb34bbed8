"""Which engine a command runs on, from the inventory: ``ferry_engine: swarm`` on a group
sends deploy, rollback, verify, status, backup and restore to the swarm module, refuses
the Compose-only commands in one line, and refuses a selection that mixes engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.actions import engines, swarm
from ferry.errors import FerryError
from ferry.model.stack import load_stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {ansible_host: 10.9.0.1}\n"
                    "    chat:\n      vars: {ferry_engine: swarm}\n      hosts:\n"
                    "        chat-1: {ansible_host: 10.9.0.11}\n        chat-2: {ansible_host: 10.9.0.12}\n")
    return path


def test_the_engine_comes_from_the_inventory(inventory):
    stack = load_stack(ROOT / "stacks" / "llm-chat-swarm")
    assert engines.for_selection(inventory, "chat", stack, {}) is swarm
    assert engines.for_selection(inventory, "web", stack, {}) is None
    with pytest.raises(FerryError, match="two engines: ferry_engine compose: web-1; ferry_engine swarm: chat-1, chat-2"):
        engines.for_selection(inventory, "all", stack, {})
    with pytest.raises(FerryError, match="key 'ferry_engine'"):
        engines.for_selection(inventory, "chat", stack, {"ferry_engine": "k8s"})


@pytest.mark.parametrize("command,hint", [("remove", "docker stack rm llm-chat-swarm"),
                                          ("logs", "docker service logs llm-chat-swarm_<service>"),
                                          ("restart", "docker service update --force")])
def test_compose_only_commands_are_refused_on_a_swarm(inventory, command, hint):
    stack = load_stack(ROOT / "stacks" / "llm-chat-swarm")
    with pytest.raises(FerryError) as exc:
        engines.compose_only(inventory, "chat", stack, {}, command)
    assert str(exc.value).startswith(f"{command} acts on Compose projects; chat is a swarm") and hint in str(exc.value)
    engines.compose_only(inventory, "web", stack, {}, command)          # Compose hosts: nothing to say


def _node(host: str, addr: str, availability: str = "active", state: str = "ready"):
    from ferry.host import swarm as hs
    return hs.SwarmNode(f"id-{host}", host, addr, "worker", availability, state)


def _cluster():
    from ferry.model.swarm import plan_cluster
    return plan_cluster([("chat-1", {}), ("chat-2", {})], {"chat-1": "10.9.0.11", "chat-2": "10.9.0.12"})


def test_a_node_of_the_swarm_outside_the_selection_is_refused_by_name():
    cluster = _cluster()
    swarm.refuse_unselected(cluster, [_node("chat-1", "10.9.0.11"), _node("chat-2", "10.9.0.12"),
                                      _node("chat-9", "10.9.0.19", availability="drain"),
                                      _node("chat-8", "10.9.0.18", state="down")])   # not schedulable: fine
    with pytest.raises(FerryError, match=r"^node chat-3 \(10\.9\.0\.13\) of the swarm is not among the selected "
                                         r"hosts, so it would lack the bundle's images.*availability drain chat-3"):
        swarm.refuse_unselected(cluster, [_node("chat-1", "10.9.0.11"), _node("chat-3", "10.9.0.13")])
    with pytest.raises(FerryError, match=r"^node chat-3 .* swarm\.setup takes the default roles \(swarm_role\) from "
                                         r"the hosts selected: select the swarm's whole group.*nothing was changed$"):
        swarm.refuse_unselected(cluster, [_node("chat-3", "10.9.0.13")], "swarm.setup")


def test_a_selected_node_lacking_an_image_by_id_is_refused_naming_node_and_image():
    from ferry.errors import HostError
    from ferry.host.session import HostSession
    from ferry.host.transport.fake import FakeTransport
    from ferry.model.paths import HostPaths
    images = [{"ref": "llm-chat-backend:1.0.0", "id": "sha256:" + "a" * 64},
              {"ref": "nginx:1.27", "id": "sha256:" + "b" * 64}]
    listing = {"chat-1": f"sha256:{'a' * 64}\tllm-chat-backend:1.0.0\nsha256:{'b' * 64}\tnginx:1.27\n",
               # same tag, another ID: what a node holding an older build of the image has
               "chat-2": f"sha256:{'c' * 64}\tllm-chat-backend:1.0.0\nsha256:{'b' * 64}\tnginx:1.27\n"}

    def session(name):
        def handle(argv, data):
            assert argv[:2] == ["docker", "images"]
            return 0, listing[name], ""
        return HostSession(name, FakeTransport(handle, name), {}, HostPaths("/opt/ferry", "llm-chat-swarm", ""))

    nodes = [_node("chat-1", "10.9.0.11"), _node("chat-2", "10.9.0.12")]
    with pytest.raises(HostError) as exc:
        swarm.check_images([session("chat-1"), session("chat-2")], _cluster(), nodes, images)
    assert exc.value.host == "chat-2"
    assert "lacks image llm-chat-backend:1.0.0 (by ID)" in str(exc.value) and "nginx" not in str(exc.value)
    listing["chat-2"] = listing["chat-1"]
    swarm.check_images([session("chat-1"), session("chat-2")], _cluster(), nodes, images)
