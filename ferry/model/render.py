"""Rendering uses Jinja2 with ``StrictUndefined``: a variable with no value is an error
naming the template, the variable and the host, raised before anything reaches a host.
Text files (rendered or static) reach the host with LF line endings (CRLF and CR are
normalised); a file with a NUL byte is binary and shipped as it is. A rendered
``*.json`` must parse as JSON (UTF-8) and a ``*.yaml``/``*.yml`` as YAML.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jinja2
import jinja2.meta
import yaml

from ..errors import FerryError
from .compose import DIGEST_LABEL, ComposeModel, add_labels, check_model, config_digests, data_paths
from .stack import COMPOSE_FILE, FILES_DIR, Stack
from .yamlfile import parse_yaml

def dotenv_value(value: Any) -> str:
    """Jinja2 filter ``dotenv``: a value quoted for a Compose ``env_file`` line.

    Single quotes make Compose take the value literally (no ``$`` interpolation).

    Raises:
        FerryError: the value contains a newline or a single quote, which a one-line
            ``.env`` entry cannot carry literally.
    """
    s = "" if value is None else str(value)
    if "\n" in s or "'" in s:
        raise FerryError("a .env value may not contain a newline or a single quote")
    return f"'{s}'"


def to_json(value: Any, indent: int | None = None) -> str:
    """Jinja2 filter ``to_json``: ``value`` as JSON text, non-ASCII characters kept as
    they are (UTF-8 on the host, e.g. Chinese text stays readable).

    Args:
        value: any JSON-serialisable value (str, number, bool, None, list, mapping).
        indent: spaces per level, or None for one line.

    Raises:
        FerryError: the value cannot be represented in JSON (e.g. a date or a set).
    """
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent)
    except (TypeError, ValueError) as exc:
        raise FerryError(f"to_json: {exc}") from None


class _InlineDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, every string double-quoted (escapes for newlines and
    control characters), collections in flow style: output is one line."""


_InlineDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"'))


def _plain(value: Any) -> Any:
    """``value`` with subclasses of str, int, float, mappings and sequences (Ansible's
    tagged values, Jinja's Markup) made the plain types YAML knows."""
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(value: Any) -> str:
    """Jinja2 filter ``to_yaml``: ``value`` as one line of YAML (a flow node), to put
    where a YAML value goes: ``image: {{ images.web | to_yaml }}``,
    ``- {{ (port ~ ":80") | to_yaml }}``. Strings are double-quoted with escapes, so a
    value holding ``: # \n`` or ``{}`` stays one scalar; numbers, booleans and null stay
    typed; lists and mappings are written in flow style (``["a", "b"]``, ``{"k": 1}``).
    In a template of ``compose.yml`` the filter also doubles ``$`` (Compose's escape),
    so Compose does not interpolate ``${X}`` inside a value.

    Raises:
        FerryError: the value has no YAML form (e.g. an object of a custom class).
    """
    try:
        text = yaml.dump(_plain(value), Dumper=_InlineDumper, default_flow_style=True, allow_unicode=True,
                         width=float("inf"), sort_keys=False)
    except yaml.representer.RepresenterError as exc:
        raise FerryError(f"to_yaml: {exc.args[0] if exc.args else exc}") from None
    text = text.rstrip("\n")
    return text[:-4].rstrip("\n") if text.endswith("\n...") else text


RENDERING = "__ferry_dest__"
"""Context key holding the release path a template renders (``compose.yml``...)."""


@jinja2.pass_context
def _to_yaml_filter(context: jinja2.runtime.Context, value: Any) -> str:
    """:func:`to_yaml`; in ``compose.yml`` also every ``$`` doubled, Compose's escape:
    Compose interpolates ``${X}`` in the compose file, and a value is data, never a
    reference to another variable (``"${LLM_API_KEY}"`` arrives as those characters)."""
    text = to_yaml(value)
    return text.replace("$", "$$") if context.get(RENDERING) == COMPOSE_FILE else text


def required(value: Any, name: str = "value") -> Any:
    """Jinja2 filter ``required(NAME)``: ``value`` unchanged, or an error when it is
    empty (``""``, ``None``, an empty list or mapping): a setting the stack cannot run
    without, such as an account token, refused on the controller.

    Raises:
        FerryError: the value is empty (names ``name``).
    """
    if value is None or value == "" or value == [] or value == {}:
        raise FerryError(f"variable '{name}' is empty and the stack needs it (set it in the inventory "
                         f"or with --set {name}=...)")
    return value


@jinja2.pass_context
def _lookup(context: jinja2.runtime.Context, kind: str, name: str, *default: Any) -> Any:
    """Jinja2 global ``lookup('vars', NAME[, DEFAULT])``, as in Ansible: the variable
    whose name is computed, e.g. ``lookup('vars', instance ~ '_port')``."""
    if kind != "vars":
        raise FerryError(f"lookup('{kind}', ...): only lookup('vars', NAME) is supported")
    value = context.resolve_or_missing(name)
    if value is jinja2.utils.missing:
        if default:
            return default[0]
        raise jinja2.UndefinedError(f"'{name}' is undefined")
    return value


def _environment(stack: Stack) -> jinja2.Environment:
    return _template_environment(str(stack.dir / "templates"))


@functools.lru_cache(maxsize=32)
def _template_environment(folder: str) -> jinja2.Environment:
    """The Jinja2 environment of a templates folder, kept: it caches compiled templates
    (and recompiles one whose file changed, Jinja2's ``auto_reload``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["dotenv"] = dotenv_value
    env.filters["to_json"] = to_json
    env.filters["to_yaml"] = _to_yaml_filter
    env.filters["required"] = required
    env.globals["lookup"] = _lookup
    return env


CONTEXT_NAMES = {"stack", "images", "paths", "inventory_hostname", "lookup", "range", "dict", "lipsum", "cycler",
                 "joiner", "namespace"}
"""Names every template sees besides the variables (:func:`template_context`, Jinja2's globals)."""


def check_template_variables(stack: Stack, declared: set[str]) -> None:
    """Every variable a template of ``stack`` reads is declared (``defaults.yml`` of the
    stack or a role), a generated secret, a template's ``vars``, an Ansible variable
    (``ansible_*``) or one of :data:`CONTEXT_NAMES`. (``lookup('vars', NAME)`` with a
    computed name is checked when it renders.)

    Raises:
        FerryError: ``<template>: variable '<name>' is used but no defaults.yml
            declares it``, or a template syntax error.
    """
    env = _environment(stack)
    for t in stack.templates:
        where = stack.dir / "templates" / t.src
        try:
            used = jinja2.meta.find_undeclared_variables(env.parse(where.read_text(encoding="utf-8")))
        except jinja2.TemplateSyntaxError as exc:
            raise FerryError(f"{where}:{exc.lineno}: template error: {exc.message}") from None
        allowed = declared | CONTEXT_NAMES | set(stack.generated_secrets) | set(t.vars)
        for name in sorted(used - allowed):
            if not name.startswith("ansible_"):
                raise FerryError(f"{where}: variable '{name}' is used but no defaults.yml declares it "
                                 f"(declare it in {stack.dir / 'defaults.yml'}: format in README \"Variables\")")


def normalize_newlines(data: bytes) -> bytes:
    """LF line endings for text (CRLF and lone CR become LF); binary data (a NUL byte
    in it) is returned unchanged."""
    if b"\0" in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def check_file_syntax(dest: str, data: bytes) -> str | None:
    """Why release file ``dest`` is malformed, or None: ``*.json`` must be UTF-8 JSON,
    ``*.yaml``/``*.yml`` UTF-8 YAML; other files are not checked."""
    if not dest.endswith((".json", ".yaml", ".yml")):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        json.loads(text) if dest.endswith(".json") else parse_yaml(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return f"not valid YAML: {getattr(exc, 'problem', exc)}" + (f" at line {mark.line + 1}" if mark else "")
    return None


Resolver = Callable[[dict[str, bytes], str, str, str], "tuple[ComposeModel, list[str]]"]
"""``resolve(files, project, current_dir, where) -> (model, warnings)``: Compose's own
model of the release files (:func:`ferry.controller.composecli.resolve` on the
controller; the model layer only receives it)."""


@dataclass
class Release:
    """A rendered release for one host.

    Attributes:
        files: ``{dest: bytes}`` in :meth:`Stack.release_files` order, ``compose.yml``
            carrying the config-digest labels.
        model: Compose's model of them (host paths).
        data_paths: release-relative paths linked to ``<stack_dir>/data/<path>``
            (relative bind sources no release file provides: ``./data``).
        warnings: Compose's warnings (a variable that is not set...).
    """

    files: dict[str, bytes]
    model: ComposeModel
    data_paths: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def render_files(stack: Stack, context: dict[str, Any], host: str) -> dict[str, bytes]:
    """Render every template of ``stack`` for one host and add its static files
    (text with LF line endings, ``*.json``/``*.yaml`` syntax-checked).

    Raises:
        FerryError: an undefined variable (named, with template and host), a template
            syntax error, a ``*.json``/``*.yaml`` file that does not parse, a static file
            that cannot be read.
    """
    env = _environment(stack)
    out: dict[str, bytes] = {}
    for t in stack.templates:
        where = stack.dir / "templates" / t.src
        try:
            text = env.get_template(t.src).render(**{**context, **t.vars, RENDERING: t.dest})
        except jinja2.UndefinedError as exc:
            m = re.search(r"'([^']+)' is undefined", str(exc))
            var = m.group(1) if m else str(exc)
            raise FerryError(f"{where}: variable '{var}' has no value "
                             f"for host {host} (set it in the inventory or with --set)") from None
        except jinja2.TemplateSyntaxError as exc:
            raise FerryError(f"{where}:{exc.lineno}: template error: {exc.message}") from None
        except FerryError as exc:
            line, keys = _failed_line(exc, env, t.src, context)
            at = f"{where}:{line}" if line else str(where)
            named = "".join(f"key '{k}', " for k in keys)
            raise FerryError(f"{at}: {exc} ({named}host {host})") from None
        try:
            out[t.dest] = normalize_newlines(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise FerryError(f"{where}: renders {t.dest} for host {host} with a value that is not valid "
                             "Unicode text (a lone surrogate)") from None
    for f in stack.files:
        try:
            out[f.dest] = normalize_newlines((stack.dir / FILES_DIR / f.src).read_bytes())
        except OSError as exc:
            raise FerryError(f"{stack.dir / FILES_DIR / f.src}: cannot read: {exc.strerror}") from None
    for dest, data in out.items():
        problem = check_file_syntax(dest, data)
        if problem:
            raise FerryError(f"{stack.template_file(dest)}: renders {dest} for host {host}, {problem}")
    return out


def _failed_line(exc: BaseException, env: jinja2.Environment, name: str,
                 context: dict[str, Any]) -> tuple[int | None, list[str]]:
    """Where in template ``name`` a filter refused a value: the template's line (Jinja2
    maps the traceback onto it) and the variables that line prints (``{{ key ...}}``),
    so the error names the key, not just the file. ``(None, [])`` when unknown."""
    source, filename, _ = env.loader.get_source(env, name)
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = source.splitlines()
    if line is None or not 0 < line <= len(lines):
        return None, []
    names = re.findall(r"\{\{-?\s*([A-Za-z_]\w*)", lines[line - 1])
    return line, [n for n in dict.fromkeys(names) if n in context]


def render_release(stack: Stack, context: dict[str, Any], host: str, resolve: Resolver) -> Release:
    """Render the release of one host and check it on Compose's model.

    ``resolve`` gives Compose's model of the rendered files; the checks of
    :func:`ferry.model.compose.check_model` run on it, then every service that
    bind-mounts release files gets its ``ferry.config-digest`` label (in the file, by a
    round-trip YAML edit, and in the model's ``labels``).

    Args:
        stack: the stack.
        context: merged variables (defaults < group < host < --set) plus ``stack``,
            ``paths``, ``images`` and the generated secrets.
        host: inventory name, for error messages.
        resolve: see :data:`Resolver`.

    Raises:
        FerryError: see :func:`render_files`; Compose refusing the files; a failed
            check of :func:`ferry.model.compose.check_model`.
    """
    files = render_files(stack, context, host)
    where = str(stack.template_file(COMPOSE_FILE))
    current = context["paths"]["current"]

    def resolved() -> tuple[ComposeModel, list[str]]:
        try:
            return resolve(files, stack.name, current, where)
        except FerryError as exc:
            raise FerryError(f"{exc} (host {host})") from None

    model, warnings = resolved()
    missing = sorted(set(stack.images) - set(model.services))
    if missing:
        raise FerryError(f"{stack.file}: key 'images': service '{missing[0]}' is not in {COMPOSE_FILE}")
    check_model(model, files, context["paths"], stack, host, where)
    digests = config_digests(model, files, current, f"{where} (host {host})")
    files[COMPOSE_FILE] = add_labels(files[COMPOSE_FILE], {s: {DIGEST_LABEL: d} for s, d in digests.items()}, where)
    for name, d in digests.items():                     # the model of the file that ships
        labels = model.services[name].raw.get("labels") or {}
        model.services[name].raw["labels"] = {**labels, DIGEST_LABEL: d}
    return Release(files, model, data_paths(model, files, current), warnings)


def render(stack: Stack, context: dict[str, Any], host: str, resolve: Resolver) -> dict[str, bytes]:
    """The files of :func:`render_release` (``{dest: bytes}``)."""
    return render_release(stack, context, host, resolve).files


def template_context(variables: dict[str, Any], stack: Stack, paths: dict[str, str],
                     secrets: dict[str, str], host: str) -> dict[str, Any]:
    """The variables a template sees: the merged inventory variables, the generated
    secrets by name (``SECRET_KEY``), and ``stack`` (name, version), ``images``
    (service -> reference), ``paths`` (``stack_dir``, ``current``, ``data`` on the host)
    and ``inventory_hostname`` (as in Ansible)."""
    return {**variables, **secrets, "stack": {"name": stack.name, "version": stack.version},
            "images": dict(stack.images), "paths": dict(paths), "inventory_hostname": host}
