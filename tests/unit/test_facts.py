"""Fact parsers against real command output captured from sandbox hosts."""

import json

from ferry.host.containers import Container, parse_compose_ps, parse_images, parse_project_containers, parse_project_state
from ferry.model.configdiff import parse_dotenv


def test_images():
    text = ("sha256:aaa\tnginx:1.22\nsha256:aaa\tnginx:latest\nsha256:bbb\t<none>:<none>\n")
    assert parse_images(text) == {"sha256:aaa": {"nginx:1.22", "nginx:latest"}, "sha256:bbb": set()}


def test_compose_ps_json_lines_and_array():
    line = ('{"ID":"abc","Name":"llm-chat-backend-1","Service":"backend","State":"running",'
            '"Health":"healthy","Publishers":[{"URL":"0.0.0.0","TargetPort":8000,"PublishedPort":8000}]}')
    a = parse_compose_ps(line + "\n" + line.replace("backend", "frontend"))
    b = parse_compose_ps("[" + line + "]")
    assert [c.service for c in a] == ["backend", "frontend"]
    assert b[0].health == "healthy" and b[0].state == "running"
    assert parse_compose_ps("") == []


def _inspect(cid, service, status, health=None, started="2026-11-22T03:00:00.5Z", restarts=0, ports=None):
    state = {"Status": status, "Running": status == "running", "StartedAt": started, "ExitCode": 0}
    if health is not None:          # Docker 20.10 has no "Health" key at all without a healthcheck
        state["Health"] = {"Status": health}
    return {"Id": cid, "Name": f"/p-{service}-1", "RestartCount": restarts, "State": state, "Image": "sha256:i",
            "Config": {"Labels": {"com.docker.compose.service": service, "com.docker.compose.project": "p"}},
            "NetworkSettings": {"Ports": ports or {}}}


def test_project_containers_and_dotenv():
    out = "1795000000\n" + json.dumps([_inspect("id1", "backend", "running", "healthy"),
                                       _inspect("id2", "nginx", "exited"),
                                       _inspect("id3", "redis", "running", restarts=2,
                                                ports={"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "6379"}]})])
    now, found = parse_project_state(out)
    assert now == 1795000000 and found == parse_project_containers(out)
    assert found["backend"].id == "id1" and found["backend"].healthy and found["backend"].health == "healthy"
    assert found["nginx"].status == "exited" and found["nginx"].health == "" and not found["nginx"].healthy
    assert found["redis"].healthy and found["redis"].restarts == 2 and found["redis"].ports == (("0.0.0.0", 6379, "tcp"),)
    assert found["redis"].started == 1795316400.5 and found["redis"].name == "p-redis-1"
    assert parse_project_state("1795000000\n[]\n") == (1795000000, {})
    env = parse_dotenv("# c\nA='x y'\nB=\"q\"\nC=plain\n\n")
    assert env == {"A": "x y", "B": "q", "C": "plain"}


def test_up_dry_run_tells_running_from_drift():
    from ferry.host.containers import parse_up_dry_run
    text = (" DRY-RUN MODE -  Container llm-chat-backend-1  Running\n"
            " DRY-RUN MODE -  Container llm-chat-nginx-1  Recreate\n"
            " DRY-RUN MODE -  Container llm-chat-frontend-1  Starting\n"
            " DRY-RUN MODE -  Container llm-chat-frontend-1  Started\n"
            " DRY-RUN MODE -  Container llm-chat-backend-1  Healthy\n")
    assert parse_up_dry_run(text) == {"llm-chat-backend-1": "Running", "llm-chat-nginx-1": "Recreate",
                                      "llm-chat-frontend-1": "Starting"}
