"""End to end: uni-load (gpt-load, uni-api, uni-load-improved) on sandbox-2; a change
of api.yaml restarts uni-api and what depends on it, nothing else."""

from __future__ import annotations

import json

import pytest

from stack_e2e import assert_noop_redeploy, changed_services, deploy_stack, http, stack_fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.hosts("sandbox-2")]
HOST = "sandbox-2"
STACK = "uni-load"
SETS = {"gpt_load_auth_key": "gl-auth-e2e", "uni_api_keys": ["sk-uni-e2e"]}


hosts, stack_bundle, first = stack_fixtures(STACK, HOST, SETS)


def test_first_deploy_is_green_and_the_chain_works(first, hosts):
    first.assert_green()
    print(f"\nuni-load first deploy: {first.seconds:.1f}s")
    checks = {(c.kind, c.target) for r in first.reports for c in r.checks}
    assert ("http", "gpt-load http://127.0.0.1:3001/health") in checks
    assert ("http", "uni-load-improved http://127.0.0.1:8080/api/v1/health") in checks
    ip = hosts.ip(HOST)
    assert json.loads(http(f"http://{ip}:3001/health")[1])["status"] == "healthy"
    status, body = http(f"http://{ip}:8080/api/v1/health")
    assert status == 200 and json.loads(body)["services"] == {"gpt-load": "healthy", "uni-api": "healthy"}
    # AUTH_KEY arrived: uni-load-improved reads gpt-load's groups with it; a wrong key is refused
    assert json.loads(http(f"http://{ip}:8080/api/v1/groups")[1])["data"] == [{"name": "default"}]
    assert http(f"http://{ip}:3001/api/groups", headers={"Authorization": "Bearer wrong"})[0] == 401
    # api.yaml arrived: the client key works, the completion goes uni-api -> gpt-load
    auth = {"Authorization": "Bearer sk-uni-e2e", "Content-Type": "application/json"}
    status, body = http(f"http://{ip}:8000/v1/chat/completions", json.dumps({"model": "gpt-4o-mini"}).encode(), auth)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "gpt-load group default: ok"
    host = hosts.host(HOST)
    assert host.file(f"/opt/ferry/stacks/{STACK}/data/gpt-load/gpt-load.db").exists
    assert host.file(f"/opt/ferry/stacks/{STACK}/data/uni-api/stats.db").exists
    assert host.file(f"/opt/ferry/stacks/{STACK}/current/api.yaml").mode == 0o600
    assert "gl-auth-e2e" not in first.out and "sk-uni-e2e" not in first.out


def test_uni_load_improved_started_after_both_were_healthy(first, hosts):
    out = hosts.sh(HOST, "for s in gpt-load uni-api uni-load-improved; do docker inspect --format "
                         "'{{.State.StartedAt}}' uni-load-$s-1; done").split()
    gpt_load, uni_api, improved = out
    assert improved > gpt_load and improved > uni_api


def test_second_deploy_is_a_noop(sandbox, hosts, stack_bundle, first):
    assert_noop_redeploy(sandbox.inventory, hosts, HOST, STACK, stack_bundle, SETS)


def test_api_yaml_change_restarts_uni_api_and_its_dependent_only(sandbox, hosts, stack_bundle, first):
    ip = hosts.ip(HOST)
    before = hosts.containers(HOST, STACK)
    sha_before = json.loads(http(f"http://{ip}:8000/v1/models", headers={"Authorization": "Bearer sk-uni-e2e"})[1])["config_sha256"]
    d = deploy_stack(sandbox.inventory, HOST, STACK, stack_bundle,
                     {**SETS, "uni_api_keys": ["sk-uni-e2e", "sk-second"]}).assert_green()
    after = hosts.containers(HOST, STACK)
    assert changed_services(before, after) == {"uni-api", "uni-load-improved"}
    assert after["gpt-load"] == before["gpt-load"]                       # same container, same start time
    assert "api.yaml (secret, 0600): changed keys: api_keys[1].api" in d.out
    # the new api.yaml is what uni-api runs with now (it reads it only at start)
    status, body = http(f"http://{ip}:8000/v1/models", headers={"Authorization": "Bearer sk-second"})
    assert status == 200 and json.loads(body)["config_sha256"] != sha_before
    # and a gpt-load setting restarts gpt-load alone
    before = after
    deploy_stack(sandbox.inventory, HOST, STACK, stack_bundle,
                 {**SETS, "uni_api_keys": ["sk-uni-e2e", "sk-second"], "gpt_load_log_level": "debug"}).assert_green()
    assert changed_services(before, hosts.containers(HOST, STACK)) == {"gpt-load"}
