"""Config files as key/value leaves, for "changed keys" diffs of secret files (pure)."""

from __future__ import annotations



def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file (comments and blanks skipped, one level of
    matching quotes removed), as Compose reads ``env_file``: lines end at LF only (a
    U+2028 inside a value is part of the value)."""
    out = {}
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def config_values(name: str, data: bytes) -> dict[str, str]:
    """The leaf values of a config file, keyed for a "changed keys" diff: dotted paths
    (``weConfig.corpSecret``, ``api_keys[0].api``) for ``*.json``/``*.yaml``/``*.yml``
    files that parse, else ``KEY=VALUE`` lines as in :func:`parse_dotenv`. Values are
    compared, never shown."""
    text = data.decode("utf-8", "replace")
    if name.endswith((".json", ".yaml", ".yml")):
        try:
            import yaml   # JSON is YAML
            tree = yaml.safe_load(text)
        except Exception:  # noqa: BLE001 - unparsable: compare as lines below
            tree = None
        if isinstance(tree, (dict, list)):
            out: dict[str, str] = {}

            def walk(node, path: str) -> None:
                if isinstance(node, dict):
                    for k, v in node.items():
                        walk(v, f"{path}.{k}" if path else str(k))
                elif isinstance(node, list) and node and all(isinstance(x, (dict, list)) for x in node):
                    for i, v in enumerate(node):
                        walk(v, f"{path}[{i}]")
                else:
                    out[path] = repr(node)
            walk(tree, "")
            return out
    return parse_dotenv(text)
