"""``ferry init``: a starter project a user fills in."""

from __future__ import annotations

from pathlib import Path

from ..errors import FerryError

FILES = {
    "ferry.cfg": """# Ferry project settings (found upward from the current directory, like ansible.cfg).
[defaults]
# inventory used when -i is not given
inventory = inventories/hosts.ini
# stack used when --stack is not given (optional when the project has one stack)
# stack = my-stack
""",
    "inventories/hosts.ini": """# An Ansible inventory (INI). Ferry reads it with ansible-core, so every Ansible
# inventory format works (YAML, INI, group_vars/ and host_vars/ next to this file).
[prod]
# chat-1 ansible_host=10.0.0.5 ansible_user=deploy ansible_become=true

[all:vars]
# host keys are verified against this file
ferry_known_hosts=~/.ssh/known_hosts
""",
    "stacks/README.md": """One folder per stack. Import an existing compose project with
`ferry stack.import PATH/docker-compose.yml`, or write stack.yml, defaults.yml and
templates/ by hand (see Ferry's README).
""",
    ".gitignore": "dist/\naudit/\n",
}


def init_project(path: Path) -> list[str]:
    """Write the starter files under ``path`` (created if needed); files that exist are
    left alone. Returns one line per file (written or kept).

    Raises:
        FerryError: ``path`` exists and is not a directory.
    """
    if path.exists() and not path.is_dir():
        raise FerryError(f"{path}: not a directory")
    out = []
    for rel, text in FILES.items():
        target = path / rel
        if target.exists():
            out.append(f"kept {target} (exists)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        out.append(f"wrote {target}")
    return out
