"""Fact parsers against real command output captured from sandbox hosts."""

from ferry.host.containers import Container, parse_compose_ps, parse_images, parse_project_containers
from ferry.model.configdiff import parse_dotenv
from ferry.host.system import parse_dpkg_status, parse_host_facts


def test_host_facts_fresh_host_and_docker_host():
    fresh = parse_host_facts("x86_64\namd64\nsystemd\nno-docker\nno-compose\ninactive\n")
    assert fresh.machine == "x86_64" and fresh.systemd and fresh.docker_version is None
    assert fresh.compose_version is None and not fresh.docker_active
    ready = parse_host_facts("x86_64\namd64\nsystemd\nDocker version 20.10.24+dfsg1, build 5d6db84\n"
                             "2.40.3\nactive\n")
    assert ready.docker_version == "20.10.24+dfsg1" and ready.compose_version == "2.40.3"
    assert ready.docker_active
    nosd = parse_host_facts("aarch64\n-\nno-systemd\nno-docker\nno-compose\n")
    assert not nosd.systemd and nosd.dpkg_arch is None and nosd.machine == "aarch64"


def test_images_and_dpkg():
    text = ("sha256:aaa\tnginx:1.22\nsha256:aaa\tnginx:latest\nsha256:bbb\t<none>:<none>\n")
    assert parse_images(text) == {"sha256:aaa": {"nginx:1.22", "nginx:latest"}, "sha256:bbb": set()}
    dpkg = "docker.io 20.10.24+dfsg1-1+deb12u1 ii \nrunc 1.1.5 rc \n"
    assert parse_dpkg_status(dpkg) == {"docker.io": "20.10.24+dfsg1-1+deb12u1"}


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


def test_up_dry_run_tells_running_from_drift():
    from ferry.host.containers import parse_up_dry_run
    text = (" DRY-RUN MODE -  Container llm-chat-backend-1  Running\n"
            " DRY-RUN MODE -  Container llm-chat-nginx-1  Recreate\n"
            " DRY-RUN MODE -  Container llm-chat-frontend-1  Starting\n"
            " DRY-RUN MODE -  Container llm-chat-frontend-1  Started\n"
            " DRY-RUN MODE -  Container llm-chat-backend-1  Healthy\n")
    assert parse_up_dry_run(text) == {"llm-chat-backend-1": "Running", "llm-chat-nginx-1": "Recreate",
                                      "llm-chat-frontend-1": "Starting"}
