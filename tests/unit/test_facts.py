"""Fact parsers against real command output captured from sandbox hosts."""

from ferry.host.containers import Container, parse_compose_ps, parse_images, parse_project_containers
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


def test_project_containers_and_dotenv():
    out = "id1\tbackend\t2026-11-22T03:00:00Z\trunning\thealthy\nid2\tnginx\t2026-11-22T03:00:01Z\texited\t\n"
    found = parse_project_containers(out)
    assert found["backend"].id == "id1" and found["backend"].healthy
    assert found["nginx"].status == "exited" and found["nginx"].health == "" and not found["nginx"].healthy
    env = parse_dotenv("# c\nA='x y'\nB=\"q\"\nC=plain\n\n")
    assert env == {"A": "x y", "B": "q", "C": "plain"}
