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
