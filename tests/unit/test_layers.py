"""The three layers hold: the product never imports the devkit, the model never reaches
for hosts or processes, the host boundary never calls up into actions or the CLI.

Read from the import graph (every ``import``/``from`` in the source, relative imports
resolved), so a violation anywhere in a module counts, even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path, package: str) -> set[str]:
    """Absolute module names imported by ``path`` (a module of ``package``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def product_modules():
    for path in sorted((ROOT / "ferry").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(parts[:-1]) if parts[-1] != "__init__" else ".".join(parts[:-1])
        yield ".".join(p for p in parts if p != "__init__"), package, path
    for path in sorted((ROOT / "roles").rglob("*.py")):
        yield f"roles.{path.parent.name}", "roles", path


def test_the_product_never_imports_the_devkit():
    bad = {name: sorted(m for m in imports(path, pkg) if m == "devkit" or m.startswith("devkit."))
           for name, pkg, path in product_modules()}
    assert not {k: v for k, v in bad.items() if v}


def test_the_model_layer_reaches_no_host_and_runs_no_process():
    forbidden = ("ferry.host", "ferry.actions", "ferry.controller", "ferry.cli", "ferry.roles",
                 "paramiko", "fabric", "invoke", "subprocess", "socket", "testinfra")
    found = {}
    for name, pkg, path in product_modules():
        if name.startswith("ferry.model"):
            hits = sorted(m for m in imports(path, pkg) if m.startswith(forbidden))
            if hits:
                found[name] = hits
    assert not found, found
    assert any(n.startswith("ferry.model.") for n, _, _ in product_modules())


def test_the_host_layer_never_calls_up_into_actions_or_the_cli():
    found = {}
    for name, pkg, path in product_modules():
        if name.startswith("ferry.host"):
            hits = sorted(m for m in imports(path, pkg) if m.startswith(("ferry.actions", "ferry.cli")))
            if hits:
                found[name] = hits
    assert not found, found
