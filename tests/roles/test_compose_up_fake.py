"""compose-up against a fake host: facts in (Docker 20.10 inspect JSON), exact commands out.

The readiness rules: a container with a healthcheck must be healthy (``up --wait`` in
``ferry-activate``); one without must stay the same running container for
``compose_settle_seconds``; a restart loop fails the role with the logs shown, marked
activated so that deploy switches back. Check mode runs nothing but reads. Preflight
refuses ports another stack holds.
"""

import json

import pytest

from ferry.controller.composecli import resolver
from ferry.errors import HostError
from ferry.host import containers
from ferry.host.activate import activate
from ferry.host.transport.fake import FakeTransport
from ferry.model.render import render_release, template_context
from ferry.roles import load_role

PROJECT = "llm-chat"
CURRENT = "/opt/ferry/stacks/llm-chat/current"
UP = activate("/opt/ferry", PROJECT, "r1", None, 120, 20)
STATE = containers.project_containers(PROJECT)


def inspect(cid, service, status="running", health="healthy", started="2026-11-22T03:00:00Z", restarts=0):
    state = {"Status": status, "Running": status == "running", "StartedAt": started, "ExitCode": 0}
    if health:
        state["Health"] = {"Status": health}          # absent on 20.10 without a healthcheck
    return {"Id": cid, "Name": f"/{PROJECT}-{service}-1", "RestartCount": restarts, "State": state,
            "Config": {"Labels": {"com.docker.compose.service": service, "com.docker.compose.project": PROJECT}},
            "NetworkSettings": {"Ports": {}}, "Image": "sha256:x"}


class Host:
    """Answers project_containers from a list of successive states; records everything else."""

    def __init__(self, states, up_rc=0):
        self.states, self.up_rc, self.seen = list(states), up_rc, 0

    def __call__(self, argv, data):
        if argv == STATE:
            now, items = self.states[min(self.seen, len(self.states) - 1)]
            self.seen += 1
            return 0, f"{now}\n{json.dumps(items)}\n", ""
        if argv == UP:
            return self.up_rc, f"ferry-activate: {'ok' if not self.up_rc else 'stopped'}\n", ""
        if argv[:2] == ["docker", "compose"] and "ps" in argv:
            return 0, "", ""
        if argv[:2] == ["docker", "compose"] and "logs" in argv:
            return 0, "redis | Bad directive\n", ""
        if argv[0] == "sh" and "up.json" in argv[-1]:
            return 0, "", ""
        raise AssertionError(argv)


@pytest.fixture
def ctx_for(make_ctx):
    def make(host, check=False, **over):
        ctx = make_ctx(FakeTransport(host), check=check, compose_settle_seconds=1, **over)
        rel = render_release(ctx.stack, template_context(ctx.vars, ctx.stack, ctx.paths.for_templates(),
                                                         {"SECRET_KEY": "k"}, ctx.host), ctx.host, resolver())
        ctx.state.model, ctx.state.rendered, ctx.state.release, ctx.state.release_changed = \
            rel.model, rel.files, "r1", True
        ctx.state.planned_model = rel.model
        return ctx
    return make


T0 = 1795316400          # 2026-11-22T03:00:00Z
BEFORE = (T0, [])
READY = [inspect("b1", "backend"), inspect("f1", "frontend", health=""), inspect("n1", "nginx")]


def test_first_up_waits_the_settle_time_for_a_container_without_healthcheck(ctx_for):
    host = Host([BEFORE, (T0 + 0, READY), (T0 + 2, READY)])       # frontend: no Health key at all
    ctx = ctx_for(host)
    result = load_role("compose-up").run(ctx)
    argvs = ctx.t.commands()
    assert argvs[:4] == [STATE, UP, STATE, STATE] and "up.json" in argvs[4][-1] and len(argvs) == 5
    assert "--pull never" in UP[2]                 # ferry-activate's up never reaches for a registry
    up_json = json.loads(ctx.t.calls[4].input)
    assert up_json == {"release": "r1", "containers": {"backend": "b1", "frontend": "f1", "nginx": "n1"}}
    assert result.changed and "recreated 3 containers" in result.summary and ctx.state.activated
    assert "images from the bundle only (--pull never)" in result.summary


def test_settled_containers_need_no_second_look(ctx_for):
    long_up = [inspect("f1", "frontend", health="", started="2026-11-22T02:00:00Z")] + READY[::2]
    host = Host([BEFORE, (T0, long_up)])
    ctx = ctx_for(host)
    load_role("compose-up").run(ctx)
    assert ctx.t.commands()[:3] == [STATE, UP, STATE] and len(ctx.t.commands()) == 4


def test_a_restart_loop_without_healthcheck_fails_with_logs(ctx_for, out):
    looping = [inspect("f1", "frontend", health="", started="2026-11-22T03:00:01Z", restarts=1)] + READY[::2]
    host = Host([BEFORE, (T0, READY), (T0 + 2, looping)])
    ctx = ctx_for(host)
    with pytest.raises(HostError, match=r"did not stay running for the settle time \(1s, no healthcheck\): "
                                        r"frontend: running, 1 restarts"):
        load_role("compose-up").run(ctx)
    assert not any("up.json" in c[-1] for c in ctx.t.commands())          # not recorded as a good up
    assert ctx.state.activated                                             # so deploy switches back
    assert any("logs" in c for c in ctx.t.commands()) and "Bad directive" in out.getvalue()


def test_check_mode_reads_only(ctx_for):
    host = Host([BEFORE])
    ctx = ctx_for(host, check=True)
    result = load_role("compose-up").run(ctx)
    assert ctx.t.commands() == [STATE]
    assert result.changed and result.summary.startswith("would run compose up")


def test_unchanged_release_and_containers_skip_up(ctx_for):
    host = Host([(T0, READY)])
    ctx = ctx_for(host)
    ctx.state.release_changed = False
    ctx.state.last_up = {"release": "r1", "containers": {"backend": "b1", "frontend": "f1", "nginx": "n1"}}
    result = load_role("compose-up").run(ctx)
    assert ctx.t.commands() == [STATE] and not result.changed


def test_pull_policy_always_is_overridden_and_said(ctx_for):
    host = Host([BEFORE, (T0, READY), (T0 + 2, READY)])
    ctx = ctx_for(host)
    ctx.state.model.services["backend"].raw["pull_policy"] = "always"
    result = load_role("compose-up").run(ctx)
    assert "--pull never; pull_policy always of backend overridden" in result.summary


def test_preflight_refuses_a_port_another_stack_publishes(ctx_for):
    other = inspect("x1", "web", started="2026-11-22T01:00:00Z")
    other["Config"]["Labels"]["com.docker.compose.project"] = "shop"
    other["Name"] = "/shop-web-1"
    other["NetworkSettings"]["Ports"] = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}]}

    def host(argv, data):
        assert argv == containers.host_facts(), argv                     # one read-only command
        return 0, "==containers\n" + json.dumps([other]) + "\n==networks\n[]\n==sockets\n", ""
    ctx = ctx_for(Host([BEFORE]))
    ctx.t.handler = host
    with pytest.raises(HostError, match=r"llm-chat: host port 80/tcp \(service nginx\) is already published by "
                                        r"stack 'shop' \(container shop-web-1\).*nothing was changed"):
        load_role("compose-up").preflight(ctx)


# -- the folded path: activation as the gate of the round trip that reads what follows ----

def test_activation_reads_the_containers_and_verification_facts_in_the_same_round_trip(ctx_for):
    """On a session's transport (facts gathered ahead), ``up`` is the gate of one batch
    that, once the release is up, reads the project's containers and the action's
    ``after_up`` facts; a release whose containers all have healthchecks needs no other
    round trip, and ``up.json`` waits for the session's last round trip."""
    from ferry.host.facts import Prefetched
    from ferry.host.verify import SOCKETS
    healthy = [inspect("b1", "backend"), inspect("f1", "frontend"), inspect("n1", "nginx")]
    host = Host([BEFORE, (T0, healthy)])
    asked = []

    def answer(argv, data):
        if argv == ["sh", "-c", SOCKETS] or argv == SOCKETS.split():
            asked.append("sockets")
            return 0, "", ""
        return host(argv, data)
    fake = FakeTransport(answer, unbatch=True)
    ctx = ctx_for(host)
    ctx.t = Prefetched(fake)
    ctx.state.after_up = [SOCKETS]
    result = load_role("compose-up").run(ctx)
    assert len(fake.calls) == 2                                  # the containers before, then ONE batch
    gated = fake.calls[1].batch
    assert gated[0] == UP and gated[1] == STATE and asked == ["sockets"]
    assert result.changed and "recreated 3 containers" in result.summary and ctx.state.activated
    assert ctx.t.run(["sh", "-c", SOCKETS]).rc == 0 and len(fake.calls) == 2      # kept for verification
    [write] = ctx.t.deferred()
    assert write[-1] == json.dumps({"release": "r1", "containers": {"backend": "b1", "frontend": "f1",
                                                                    "nginx": "n1"}})
    assert "up.json" in write[2] and ctx.t.deferred() == []


def test_a_failed_activation_reads_nothing_after_it(ctx_for):
    """The gate failed: the release is not up, no fact is read after it, nothing deferred."""
    from ferry.host.facts import Prefetched
    host = Host([BEFORE], up_rc=1)
    fake = FakeTransport(host, unbatch=True)
    ctx = ctx_for(host)
    ctx.t = Prefetched(fake)
    with pytest.raises(HostError, match="did not become healthy"):
        load_role("compose-up").run(ctx)
    assert fake.calls[1].batch == [UP] and ctx.t.deferred() == [] and not ctx.state.activated


def test_a_settle_wait_reads_the_containers_again_not_the_kept_answer(ctx_for):
    """A container without healthcheck must be seen again after the settle time: the
    answer read right after ``up`` is dropped, so settle and verification see the host
    as it is then."""
    from ferry.host.facts import Prefetched
    looping = [inspect("f1", "frontend", health="", started="2026-11-22T03:00:01Z", restarts=1)] + READY[::2]
    host = Host([BEFORE, (T0, READY), (T0 + 2, looping)])
    fake = FakeTransport(host, unbatch=True)
    ctx = ctx_for(host)
    ctx.t = Prefetched(fake)
    with pytest.raises(HostError, match="did not stay running for the settle time"):
        load_role("compose-up").run(ctx)
    assert fake.calls[2].argv == STATE and ctx.t.deferred() == []
