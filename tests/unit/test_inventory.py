"""Inventory: Ansible YAML format, host/group selection, variable precedence."""

import textwrap

import pytest

from ferry.errors import FerryError
from ferry.controller.inventory import Inventory, merge_vars, parse_set_args

INV = """
all:
  vars:
    ansible_user: root
    llm_model: from-all
    tier: all
  children:
    prod:
      vars:
        llm_model: from-prod
      hosts:
        web-1:
          ansible_host: 10.0.0.5
          llm_model: from-host
        web-2:
          ansible_host: 10.0.0.6
      children:
        prod_eu:
          vars:
            tier: eu
          hosts:
            web-3: {ansible_host: 10.0.0.7}
    staging:
      hosts:
        stage-1: {ansible_host: 10.0.1.5, ansible_port: 2222}
"""


@pytest.fixture
def inv(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text(INV)
    return Inventory(p)


def test_group_selects_its_hosts_and_children(inv):
    assert [h.name for h in inv.select("prod")] == ["web-1", "web-2", "web-3"]
    assert [h.name for h in inv.select("staging,web-1")] == ["stage-1", "web-1"]
    assert [h.name for h in inv.select("all")] == ["web-1", "web-2", "web-3", "stage-1"]


def test_precedence_host_over_child_group_over_parent_over_all(inv):
    assert inv.hosts["web-1"].vars["llm_model"] == "from-host"
    assert inv.hosts["web-2"].vars["llm_model"] == "from-prod"
    assert inv.hosts["stage-1"].vars["llm_model"] == "from-all"
    assert inv.hosts["web-3"].vars["tier"] == "eu"          # child group beats parent/all
    assert inv.hosts["web-3"].vars["llm_model"] == "from-prod"
    assert inv.hosts["stage-1"].vars["ansible_port"] == 2222


def test_set_overrides_everything(inv):
    merged = merge_vars({"llm_model": "default"}, inv.hosts["web-1"].vars,
                        parse_set_args(["llm_model=cli", "http_port=8080"]))
    assert merged["llm_model"] == "cli"
    assert merged["http_port"] == "8080"    # text; host_variables converts it to the declared type (test_vars)


def test_unknown_host_lists_known_ones(inv):
    with pytest.raises(FerryError) as e:
        inv.select("prdo")
    msg = str(e.value)
    assert "unknown host or group 'prdo'" in msg and "prod" in msg and "web-1" in msg
    assert "\n" not in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("all:\n  hosts:\n    web-1: {ansible_host: 1.2.3.4\n    web-2:\n")
    with pytest.raises(FerryError) as e:
        Inventory(p)
    assert str(e.value).startswith(f"{p}:")
    assert ":4:" in str(e.value) or ":3:" in str(e.value)


def test_group_vars_and_host_vars_dirs(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "hosts.yml").write_text(INV)
    (tmp_path / "group_vars" / "staging.yml").write_text("llm_model: gv-staging\n")
    (tmp_path / "host_vars" / "web-2.yml").write_text("llm_model: hv-web2\n")
    inv = Inventory(tmp_path / "hosts.yml")
    assert inv.hosts["stage-1"].vars["llm_model"] == "gv-staging"
    assert inv.hosts["web-2"].vars["llm_model"] == "hv-web2"


def test_bad_shapes_are_one_line_errors(tmp_path):
    p = tmp_path / "x.yml"
    p.write_text(textwrap.dedent("""
        all:
          hostz: {}
    """))
    with pytest.raises(FerryError, match="unknown key 'hostz'"):
        Inventory(p)
    with pytest.raises(FerryError, match="expected key=value"):
        parse_set_args(["novalue"])
