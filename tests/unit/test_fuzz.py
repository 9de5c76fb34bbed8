"""Fuzz tier (hypothesis): inventory values, ``--set`` strings, command-line numbers,
manifest fields and stack definitions full of shell, YAML and path metacharacters.

Every input is either refused with ONE line (a :class:`FerryError` whose message has no
line break) or accepted; accepted values render as inert data (no key the benign render
lacks) and every path built from them stays inside ``ferry_root``. Anything else (any
other exception) is a traceback a user would see: the test fails.

Profiles: ``ci`` (default: derandomized, so every run tries the same examples; no
example database written) and ``dev`` (``FERRY_FUZZ_PROFILE=dev``: 20x the examples,
random). Both run in seconds / minutes on the unit tier, no Docker.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ferry import cli
from ferry.actions.common import declarations, host_variables
from ferry.controller.inventory import Host
from ferry.errors import FerryError
from ferry.model.manifest import validate_manifest
from ferry.model.paths import HostPaths
from ferry.model.render import render_files, template_context
from ferry.model.stack import load_stack
from ferry.model.vars import parse_set_args
from ferry.model.yamlfile import parse_yaml

settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=800, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("FERRY_FUZZ_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[2]
STACK_DIRS = sorted(p.parent for p in (ROOT / "stacks").glob("*/stack.yml"))
STACKS = {d.name: load_stack(d) for d in STACK_DIRS}
REQUIRED = {   # what an inventory must give each seed stack (no default)
    "chatgpt-on-wechat": {"wechatmp_token": "tok", "wechatmp_app_id": "wx123"},
    "corp-wechat-gptbot": {"gptbot_we_corp_id": "ww1", "gptbot_we_agent_id": "1000002", "gptbot_we_corp_secret": "cs",
                           "gptbot_we_token": "t", "gptbot_we_encoding_aes_key": "a" * 43},
    "uni-load": {"gpt_load_auth_key": "ak", "uni_api_keys": ["sk-uni"]},
}

TOKENS = ["a", "Z", "0", "9", "-", "_", ".", "/", "..", "../", "~", " ", "\t", "\n", "\r", "\r\n", "\x00", "\x7f",
          "\u2028", "\x85", "#", " #", ":", ": ", "{", "}", "[", "]", ",", "&", "*", "!", "|", ">", "%", "@", "?",
          "'", '"', "`", "\\", "$", "${HOME}", "$(id)", ";", "&&", "(", ")", "<", "=", "{{ 7*7 }}", "{%", "---",
          "- ", "\n    privileged: true", '", "privileged": true, "x": "', "你好", "\ud800"]
meta_text = st.lists(st.sampled_from(TOKENS), max_size=8).map("".join) | st.text(max_size=12)
plain = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)
"""Names and words as a user would write them: mixed in, so that inputs are accepted
often enough to check what happens to accepted ones."""
near = (plain | meta_text | st.tuples(plain, st.sampled_from(TOKENS), plain).map("".join)
        | st.tuples(plain, st.sampled_from(TOKENS)).map("".join))
def absolute(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def assignment(kv: tuple[str, str]) -> str:
    return f"{kv[0]}={kv[1]}"


paths_ = st.lists(plain | st.sampled_from(["..", ".", "", " #x", "a:b", "$X", "x\n"]), min_size=1, max_size=4).map(
    absolute)
scalars = meta_text | st.integers(-10, 100_000) | st.floats(allow_nan=False) | st.booleans() | st.none()
values = (near | paths_ | st.integers(0, 70_000) | st.booleans() | scalars | st.lists(near, max_size=3)
          | st.lists(scalars, max_size=3) | st.dictionaries(meta_text, scalars, max_size=3))


REFUSED, ACCEPTED = "refused in one line", "accepted (inert, inside ferry_root)"


def one_line(exc: FerryError) -> None:
    assert "\n" not in str(exc) and "\r" not in str(exc), repr(str(exc))


def inside(root: str, path: str) -> bool:
    root = posixpath.normpath(root)
    return posixpath.normpath(path).startswith(root.rstrip("/") + "/")


def key_paths(obj, prefix=""):
    if isinstance(obj, dict):
        out = set()
        for k, v in obj.items():
            out |= {f"{prefix}.{k}"} | key_paths(v, f"{prefix}.{k}")
        return out
    if isinstance(obj, list):
        return set().union(*(key_paths(v, prefix + "[]") for v in obj)) if obj else set()
    return set()


def parse(dest: str, data: bytes):
    if dest.endswith(".json"):
        return json.loads(data.decode("utf-8"))
    if dest.endswith((".yml", ".yaml")):
        return parse_yaml(data.decode("utf-8"))
    return None


def render(stack, variables):
    paths = HostPaths(variables["ferry_root"], stack.name, f"{stack.name}-{stack.version}")
    secrets = {k: "generated" for k in stack.generated_secrets}
    return paths, render_files(stack, template_context(variables, stack, paths.for_templates(), secrets, "h1"), "h1")


BENIGN = {}
for _name, _stack in STACKS.items():
    _paths, _files = render(_stack, {**declarations(_stack).defaults(), **REQUIRED.get(_name, {})})
    BENIGN[_name] = {d: key_paths(parse(d, b)) for d, b in _files.items() if parse(d, b) is not None}


def accepted_or_refused(stack, inventory: dict, sets: dict) -> str:
    """The property: refused in one line, or checked variables that render as inert
    data with every path inside ferry_root."""
    host = Host("h1", {"all"}, {**REQUIRED.get(stack.name, {}), **inventory},
                {k: "inventory.yml group all" for k in inventory})
    try:
        variables = host_variables(host, stack, sets)
        paths, files = render(stack, variables)
    except FerryError as exc:
        one_line(exc)
        return REFUSED
    root = variables["ferry_root"]
    for p in (paths.store, paths.bundle_dir, paths.stack_dir, paths.releases, paths.current, paths.data,
              *(posixpath.join(paths.current, dest) for dest in files),
              *(posixpath.join(paths.data, d) for d in stack.data_dirs)):
        assert inside(root, p) and not set(p) & set("\n\r\x00"), (root, p)
    for dest, shape in BENIGN[stack.name].items():
        doc = parse(dest, files[dest])
        assert key_paths(doc) <= shape, (dest, key_paths(doc) - shape)
        if dest == "compose.yml":
            for svc in doc["services"].values():
                for v in svc.get("volumes") or []:
                    source = v.split(":")[0]
                    assert not source.startswith("/") or inside(root, source), (root, v)
    return ACCEPTED


# -- inventory values and --set strings ---------------------------------------------------

@given(stack=st.sampled_from(sorted(STACKS)), data=st.data())
def test_inventory_values_are_refused_in_one_line_or_inert(stack, data):
    s = STACKS[stack]
    names = sorted(declarations(s).names()) + ["ferry_root", "not_declared_anywhere"]
    inventory = data.draw(st.dictionaries(st.sampled_from(names), values, min_size=1, max_size=2))
    event(accepted_or_refused(s, inventory, {}))


@given(stack=st.sampled_from(sorted(STACKS)), data=st.data())
def test_set_strings_are_refused_in_one_line_or_inert(stack, data):
    s = STACKS[stack]
    keys = st.sampled_from(sorted(declarations(s).names()) + ["ferry_root"]) | meta_text
    texts = near | paths_ | st.integers(0, 70_000).map(str)
    items = data.draw(st.lists(st.tuples(keys, texts).map(assignment) | meta_text,
                               min_size=1, max_size=2))
    try:
        sets = parse_set_args(items)
    except FerryError as exc:
        one_line(exc)
        event(REFUSED)
        return
    event(accepted_or_refused(s, {}, sets))


@settings(max_examples=20)
@given(option=st.sampled_from(["--serial", "--max-fail", "--lock-wait"]), value=meta_text | st.integers().map(str))
def test_command_line_numbers_are_refused_in_one_line(option, value, capsys):
    with tempfile.TemporaryDirectory() as project:
        os.environ["FERRY_PROJECT"] = project
        try:
            with pytest.raises(SystemExit) as e:
                cli.main(["ferry", "deploy", "--host", "h", option, value])
        finally:
            del os.environ["FERRY_PROJECT"]
    err = capsys.readouterr().err.strip()
    assert e.value.code != 0 and "Traceback" not in err and len(err.splitlines()) <= 1, err


# -- manifest fields ----------------------------------------------------------------------

def manifest_property(stack: str, version: str, files: list[str], root: str = "/opt/ferry") -> str:
    manifest = {"format": 1, "stack": stack, "version": version, "docker": {"docker": "20.10.24", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64", "packages": {"docker.io": "20.10.24"}}, "images": [],
                "files": [{"path": p, "size": 1, "sha256": "0" * 64} for p in files]}
    try:
        validate_manifest(manifest, "dist/x/manifest.json")
    except FerryError as exc:
        one_line(exc)
        return REFUSED
    paths = HostPaths(root, stack, f"{stack}-{version}")
    for p in (paths.stack_dir, paths.bundle_dir, *(posixpath.join(paths.bundle_dir, f) for f in files)):
        assert inside(root, p) and not set(p) & set("\n\r\x00"), (root, p)
    for p in (paths.stack_dir, paths.bundle_dir):
        assert posixpath.dirname(p) in (f"{root}/stacks", f"{root}/bundles"), p   # one path segment each
    return ACCEPTED


@given(stack=near, version=near, files=st.lists(near | st.lists(near, max_size=3).map("/".join), max_size=3),
       root=st.sampled_from(["/opt/ferry", "/srv/f"]))
def test_manifest_fields_are_refused_in_one_line_or_stay_inside_ferry_root(stack, version, files, root):
    event(manifest_property(stack, version, files, root))


# -- stack definitions --------------------------------------------------------------------

_FOLDER: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def stack_folder_removed():
    """Remove the folder :func:`stack_folder` made, after this module's tests."""
    yield
    for d in _FOLDER:
        shutil.rmtree(d.parent, ignore_errors=True)


def stack_folder() -> Path:
    """A stack folder whose stack.yml each example rewrites (templates stay), in memory
    (/dev/shm) when there is one: thousands of rewrites."""
    if not _FOLDER:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        d = Path(tempfile.mkdtemp(prefix="ferry-fuzz-", dir=shm)) / "s"
        (d / "templates").mkdir(parents=True)
        (d / "templates" / "compose.yml.j2").write_text("services:\n  web: {image: 'img:1'}\n")
        (d / "templates" / "c.j2").write_text("a: 1\n")
        _FOLDER.append(d)
    return _FOLDER[0]


def stack_property(name="ok", version="1.0", dest="c.yml", data_dir="db", service="web") -> str:
    d = stack_folder()
    spec = {"name": name, "version": version, "images": {service: "img:1"}, "data_dirs": [data_dir],
            "templates": [{"src": "compose.yml.j2", "dest": "compose.yml"}, {"src": "c.j2", "dest": dest}]}
    try:
        (d / "stack.yml").write_text(yaml.dump(spec, Dumper=yaml.CSafeDumper, allow_unicode=True), encoding="utf-8")
    except UnicodeEncodeError:
        return "not writable"                       # a lone surrogate cannot be written to a file
    try:
        stack = load_stack(d)
    except FerryError as exc:
        one_line(exc)
        return REFUSED
    paths = HostPaths("/opt/ferry", stack.name, f"{stack.name}-{stack.version}")
    for p in (paths.stack_dir, paths.bundle_dir, *(posixpath.join(paths.current, f) for f in stack.release_files()),
              *(posixpath.join(paths.data, x) for x in stack.data_dirs)):
        assert inside("/opt/ferry", p) and not set(p) & set("\n\r\x00"), p
    for p in (paths.stack_dir, paths.bundle_dir):
        assert posixpath.dirname(p) in ("/opt/ferry/stacks", "/opt/ferry/bundles"), p   # one path segment each
    return ACCEPTED


@given(name=near, version=near, dest=near | st.lists(near, max_size=3).map("/".join), data_dir=near, service=near)
def test_stack_definitions_are_refused_in_one_line_or_stay_inside_ferry_root(name, version, dest, data_dir, service):
    event(stack_property(name, version, dest, data_dir, service))


# -- every metacharacter, in every position of a valid value (exhaustive, deterministic) --

def mutations(valid: str):
    """``valid`` with each token of :data:`TOKENS` put before it, after it, in its
    middle, and instead of it."""
    half = len(valid) // 2
    for t in TOKENS:
        yield from (t + valid, valid + t, valid[:half] + t + valid[half:], t)


@pytest.mark.parametrize("field", ["stack", "version", "file"])
def test_manifest_field_with_every_metacharacter(field):
    outcomes = {manifest_property(bad if field == "stack" else "llm-chat", bad if field == "version" else "1.0.0",
                                  [bad if field == "file" else "images/app.tar"])
                for bad in mutations({"stack": "llm-chat", "version": "1.0.0", "file": "images/app.tar"}[field])}
    assert {REFUSED, ACCEPTED} <= outcomes


@pytest.mark.parametrize("field,valid", [("name", "ok"), ("version", "1.0"), ("dest", "conf/c.yml"),
                                         ("data_dir", "db/main"), ("service", "web")])
def test_stack_field_with_every_metacharacter(field, valid):
    outcomes = {stack_property(**{field: bad}) for bad in mutations(valid)}
    assert {REFUSED, ACCEPTED} <= outcomes


@pytest.mark.parametrize("stack,name,valid", [
    ("llm-chat", "ferry_root", "/opt/ferry"), ("llm-chat", "http_port", "8080"), ("llm-chat", "llm_model", "gpt-4o"),
    ("llm-chat", "client_max_body_size", "10m"), ("llm-chat", "llm_api_url", "http://gw:3001/v1"),
    ("corp-wechat-gptbot", "gptbot_log_level", "info"),
    ("corp-wechat-gptbot", "gptbot_gpt_temperature", "0.5"), ("corp-wechat-gptbot", "gptbot_we_agent_id", "1000002"),
    ("xiaozhi-esp32-server", "xiaozhi_functions", "[get_weather]"), ("chatgpt-on-wechat", "wechatmp_app_id", "wx1"),
    ("xiaozhi-esp32-server", "xiaozhi_selected_module", "{VAD: SileroVAD}"),
    ("uni-load", "uni_api_keys", "[sk-1]"), ("chatgpt-on-wechat", "cow_character_desc", "你好"),
])
def test_set_value_with_every_metacharacter(stack, name, valid):
    outcomes = set()
    for bad in mutations(valid):
        try:
            sets = parse_set_args([f"{name}={bad}"])
        except FerryError as exc:
            one_line(exc)
            continue
        outcomes.add(accepted_or_refused(STACKS[stack], {}, sets))
    assert outcomes                                  # free text (cow_character_desc) is always accepted
