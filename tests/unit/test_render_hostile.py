"""Structured rendering: every stack rendered with hostile values, *without* the typed
check in front (typed values are the second defence, not the only one). Each value
either is refused in one line, or arrives in the rendered YAML/JSON/.env as an inert
scalar: no key that the benign render lacks, the hostile text intact inside one value."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import yaml

from ferry.actions.common import declarations
from ferry.errors import FerryError
from ferry.model.configdiff import config_values
from ferry.model.paths import HostPaths
from ferry.controller.composecli import config_json, resolver
from ferry.model.render import render, render_files, template_context, to_yaml
from ferry.model.stack import load_stack

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted([*(ROOT / "stacks").glob("*/stack.yml"), *(ROOT / "tests/e2e/stacks").glob("*/stack.yml")])
INVENTORY = {
    "chatgpt-on-wechat": {"wechatmp_token": "tok", "wechatmp_app_id": "wx123"},
    "corp-wechat-gptbot": {"gptbot_we_corp_id": "ww1", "gptbot_we_agent_id": "1000002", "gptbot_we_corp_secret": "cs",
                           "gptbot_we_token": "t", "gptbot_we_encoding_aes_key": "a" * 43},
    "xiaozhi-esp32-server": {"ansible_host": "10.0.0.9"},
    "uni-load": {"gpt_load_auth_key": "ak", "uni_api_keys": ["sk-uni"]},
}
HOSTILE = [
    # out of a YAML block, a JSON string and a quoted scalar; a flow mapping; a list item
    '80\n    privileged: true\n  x", "privileged": true, "y": "\'\n  cap_add: [ALL]\n#{pid: host}\n- /:/host',
    # one line, no quote (what a .env value may hold): comment, shell and Compose
    # interpolation, YAML indicators and tags, odd separators and control characters
    " #c: $HOME $(id) `id` ${X} ; && | &a *a !!python/object:os.system ? % @ {a: b} [c] 你好\u2028\u0085\t\x7f end",
]
"""Two payloads: every variable of every stack gets each, one variable at a time."""


def leaf_paths(obj, prefix=""):
    """Every mapping key path of a parsed document (list indexes collapsed to [])."""
    if isinstance(obj, dict):
        out = set()
        for k, v in obj.items():
            out |= {f"{prefix}.{k}"} | leaf_paths(v, f"{prefix}.{k}")
        return out
    if isinstance(obj, list):
        return set().union(*(leaf_paths(v, prefix + "[]") for v in obj)) if obj else set()
    return set()


def scalars(obj):
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [str(k), *scalars(v)]]
    if isinstance(obj, list):
        return [s for v in obj for s in scalars(v)]
    return [obj]


def compose_unescaped(obj):
    if isinstance(obj, dict):
        return {compose_unescaped(k): compose_unescaped(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [compose_unescaped(v) for v in obj]
    return obj.replace("$$", "$") if isinstance(obj, str) else obj


def parsed(dest: str, data: bytes):
    if dest.endswith(".json"):
        return json.loads(data.decode("utf-8"))
    if dest == "compose.yml":                         # Compose reads $$ as a literal $
        return compose_unescaped(yaml.safe_load(data.decode("utf-8")))
    if dest.endswith((".yml", ".yaml")):
        return yaml.safe_load(data.decode("utf-8"))
    if dest.endswith(".env"):
        lines = [line for line in data.decode("utf-8").split("\n") if line and not line.startswith("#")]
        assert all("=" in line for line in lines), lines
        return {k: {"value": v} for k, v in config_values(dest, data).items()}
    return None


def render_with(stack, root="/opt/ferry", compose=False, **over):
    """The stack's release files for host h1 with ``over`` set, no variable check in
    front: the templates alone (``compose=False``), or also resolved and checked by
    Compose (what deploy does after rendering)."""
    variables = {**declarations(stack).defaults(), **INVENTORY.get(stack.name, {}), **over}
    secrets = {k: "generated" for k in stack.generated_secrets}
    paths = HostPaths(root, stack.name, f"{stack.name}-{stack.version}").for_templates()
    context = template_context(variables, stack, paths, secrets, "h1")
    return render(stack, context, "h1", resolver()) if compose else render_files(stack, context, "h1")


def cases():
    for stack_file in STACKS:
        stack = load_stack(stack_file.parent)
        texts = "".join((stack.dir / "templates" / t.src).read_text() for t in stack.templates)
        for name in sorted(declarations(stack).names() | set(INVENTORY.get(stack.name, {}))):
            if name in texts:                # role variables the templates never read change nothing
                yield pytest.param(stack_file.parent, name, id=f"{stack.name}:{name}")


def text_variables(stack) -> set[str]:
    """String variables whose text a YAML/JSON/.env template writes as (part of) a value."""
    used = "".join((stack.dir / "templates" / t.src).read_text() for t in stack.templates
                   if t.dest.endswith((".yml", ".yaml", ".json", ".env")))
    return {n for n, d in declarations(stack).items.items()
            if d.type in ("string", "secret", "identifier", "enum") and n in used} - {"xiaozhi_public_host"}


TEXT_IN_STRUCTURED_FILES = {p.parent.name: text_variables(load_stack(p.parent)) for p in STACKS}
"""(``xiaozhi_public_host`` is written only when not empty, else ``ansible_host``.)"""


@functools.lru_cache(maxsize=None)
def benign_shapes(stack_dir: Path) -> dict[str, set[str]]:
    files = render_with(load_stack(stack_dir))
    return {dest: leaf_paths(parsed(dest, data)) for dest, data in files.items() if parsed(dest, data) is not None}


@pytest.mark.parametrize("stack_dir,name", list(cases()))
def test_hostile_value_is_refused_in_one_line_or_rendered_as_inert_data(stack_dir, name):
    stack = load_stack(stack_dir)
    shapes = benign_shapes(stack_dir)
    outcomes = []
    for hostile in HOSTILE:
        try:
            files = render_with(stack, **{name: hostile})
        except FerryError as exc:
            assert "\n" not in str(exc), str(exc)
            # the line names the key, or (a loop's item) the template line that printed it
            assert f"'{name}'" in str(exc) or re.search(r"\.j2:\d+: ", str(exc)), str(exc)
            outcomes.append("refused")
            continue
        carried = False
        for dest, shape in shapes.items():
            doc = parsed(dest, files[dest])
            assert leaf_paths(doc) <= shape, f"{dest}: keys not in the benign render: {leaf_paths(doc) - shape}"
            carried |= any(isinstance(s, str) and hostile in s for s in scalars(doc))
            if dest.endswith(".env"):
                carried |= any(hostile in v["value"] for v in doc.values())
        assert carried or name not in TEXT_IN_STRUCTURED_FILES.get(stack.name, ()), \
            f"{name}={hostile!r} rendered but not found as a value"
        outcomes.append("data")
    assert len(outcomes) == len(HOSTILE)


@pytest.mark.parametrize("stack,name,dest,key,payloads", [
    ("xiaozhi-esp32-server", "xiaozhi_timezone", "compose.yml", ("services", "xiaozhi-esp32-server", "environment", "TZ"),
     HOSTILE[1:]),                                     # also in db.env: a newline is refused there
    ("xiaozhi-esp32-server", "xiaozhi_prompt", "data/.config.yaml", ("prompt",), HOSTILE),
    ("chatgpt-on-wechat", "cow_character_desc", "wechat/config.json", ("character_desc",), HOSTILE),
    ("corp-wechat-gptbot", "gptbot_gpt_prompt", "config/config.yaml", ("gptConfig", "prompt"), HOSTILE),
    ("uni-load", "uni_api_keys", "api.yaml", ("api_keys", 0, "api"), HOSTILE),
])
def test_hostile_text_arrives_intact_as_the_value_of_its_key(stack, name, dest, key, payloads):
    for hostile in payloads:
        value = [hostile] if name == "uni_api_keys" else hostile
        doc = parsed(dest, render_with(load_stack(ROOT / "stacks" / stack), **{name: value})[dest])
        for k in key:
            doc = doc[k]
        assert doc == hostile


def test_hostile_env_value_without_newline_or_quote_arrives_intact():
    files = render_with(load_stack(ROOT / "stacks" / "llm-chat"), llm_model=HOSTILE[1])
    assert config_values(".env", files[".env"])["LLM_MODEL"] == HOSTILE[1]
    with pytest.raises(FerryError, match=r"env\.j2:3: .*newline or a single quote \(key 'llm_model', host "):
        render_with(load_stack(ROOT / "stacks" / "llm-chat"), llm_model=HOSTILE[0])


@pytest.mark.parametrize("root", ["/opt/ferry #new", "/opt/x\n      privileged: true", "/a:/etc", "/opt/${HOME}"])
@pytest.mark.parametrize("stack_dir", [p.parent for p in STACKS], ids=lambda p: p.name)
def test_hostile_ferry_root_is_refused_or_inert_on_composes_model(stack_dir, root):
    stack = load_stack(stack_dir)
    benign = yaml.safe_load(render_with(stack, compose=True)["compose.yml"])
    try:
        compose = yaml.safe_load(render_with(stack, root=root, compose=True)["compose.yml"])
    except FerryError as exc:
        assert "\n" not in str(exc)
        return
    assert leaf_paths(compose) <= leaf_paths(benign)
    for svc in compose["services"].values():
        for v in svc.get("volumes") or []:
            assert not v.startswith("/") or v.startswith(root + "/stacks/"), v


def test_a_value_is_never_interpolated_by_compose():
    stack = load_stack(ROOT / "stacks" / "xiaozhi-esp32-server")
    files = render_with(stack, compose=True, xiaozhi_timezone="${MYSQL_ROOT_PASSWORD}$HOME")
    resolved = json.loads(config_json(files, stack.name, "/opt/ferry/stacks/xiaozhi-esp32-server/current"))
    env = resolved["services"]["xiaozhi-esp32-server"]["environment"]
    # `compose config` prints a literal $ as $$; interpolated, TZ would be the password
    assert env["TZ"] == "$${MYSQL_ROOT_PASSWORD}$$HOME"
    assert config_values("db.env", files["db.env"])["TZ"] == "${MYSQL_ROOT_PASSWORD}$HOME"


class Tagged(str):
    """A str subclass, as Ansible's tagged values and Jinja's Markup are."""


@pytest.mark.parametrize("value", [*HOSTILE, None, True, 80, 0.5, "", "yes", "null", "~", "1e3", "0o17",
                                   ["a", {"b": "c\nd"}], {"k": [1, "x: y"]}, "\ud800", Tagged("x: y\n- z")])
def test_to_yaml_is_one_line_that_parses_back_to_the_value(value):
    try:
        text = to_yaml(value)
    except FerryError:
        assert value == "\ud800"
        return
    assert "\n" not in text
    assert yaml.safe_load(f"key: {text}\n")["key"] == value
    assert yaml.safe_load(f"- {text}\n") == [value]
