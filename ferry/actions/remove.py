"""``remove``: take a stack off its hosts, keeping its data and backups unless asked.

On every selected host, under the stack's lock and with an audit line
(:func:`ferry.host.session.guarded`), one script:

1. ``docker compose down --remove-orphans`` in the current release (Compose removes the
   project's containers and networks), then whatever still carries the project's label
   (containers, networks: a release whose compose file is gone);
2. removes the release directories, ``current``, ``up.json``, the activation record,
   the backup script, its status and cron entry, and the stack's bundle layouts
   (``bundles/<stack>-*``);
3. keeps ``data/``, ``secrets.json`` (the generated passwords that data needs), the named
   volumes and the backups - unless ``purge_data``, which removes them too.

Running it twice changes nothing the second time and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host import backup
from ..errors import HostError
from ..host.session import guarded
from ..host.shell import q, sh
from ..model.stack import load_stack
from ..ui import UI
from . import engines
from .common import stack_hosts


@dataclass
class Removed:
    """What ``remove`` did on one host (counts; ``kept``: paths left in place)."""

    host: str
    containers: int
    networks: int
    volumes: int
    releases: int
    kept: list[str]

    @property
    def line(self) -> str:
        """One line for humans."""
        if not (self.containers or self.networks or self.volumes or self.releases):
            did = "nothing to remove"
        else:
            did = (f"removed {self.containers} containers, {self.networks} networks, {self.releases} releases"
                   + (f", {self.volumes} volumes" if self.volumes else ""))
        return f"{self.host}: {did}" + (f"; kept {', '.join(self.kept)}" if self.kept else "")


def remove_script(project: str, stack_dir: str, root: str, cron: str, backups: str, purge: bool) -> list[str]:
    """The host-side script (see the module docstring). Prints ``containers N``,
    ``networks N``, ``volumes N``, ``releases N`` and ``kept PATH`` lines."""
    label = q(f"label=com.docker.compose.project={project}")
    cur = q(f"{stack_dir}/current")
    down = "down --remove-orphans" + (" --volumes" if purge else "")
    script = f"""
have_docker=0; command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && have_docker=1
c=0; n=0; v=0
if [ $have_docker = 1 ]; then
  c=$(docker ps -aq --filter {label} | wc -l); n=$(docker network ls -q --filter {label} | wc -l)
  [ {'1' if purge else '0'} = 1 ] && v=$(docker volume ls -q --filter {label} | wc -l)
  if [ -e {cur}/compose.yml ]; then
    docker compose -p {q(project)} -f {cur}/compose.yml --project-directory {cur} {down} >&2 || true
  fi
  ids=$(docker ps -aq --filter {label}); [ -z "$ids" ] || docker rm -f $ids >&2
  nets=$(docker network ls -q --filter {label}); [ -z "$nets" ] || docker network rm $nets >&2
  if [ {'1' if purge else '0'} = 1 ]; then
    vols=$(docker volume ls -q --filter {label}); [ -z "$vols" ] || docker volume rm $vols >&2
  fi
fi
r=0; [ -d {q(stack_dir + '/releases')} ] && r=$(find {q(stack_dir + '/releases')} -mindepth 1 -maxdepth 1 | wc -l)
rm -rf -- {q(stack_dir + '/releases')} {cur} {q(stack_dir + '/up.json')} {q(stack_dir + '/ferry-backup')} \\
  {q(stack_dir + '/backup-settings')} {q(stack_dir + '/backup-status')} {q(stack_dir + '/activate.json')} \\
  {q(stack_dir + '/activate.log')} {q(cron)} {q(root + '/bundles')}/{q(project)}-*
echo "containers $c"; echo "networks $n"; echo "volumes $v"; echo "releases $r"
"""
    if purge:
        script += f"rm -rf -- {q(stack_dir)} {q(backups)}\n"
    else:
        script += (f"for p in {q(stack_dir + '/data')} {q(stack_dir + '/secrets.json')} {q(backups)}; do "
                   "[ -e \"$p\" ] && echo \"kept $p\"; done; "
                   f"[ $have_docker = 1 ] && docker volume ls -q --filter {label} | sed 's/^/kept volume /'; true\n")
    return sh("set -e\n" + script)


def parse_removed(host: str, text: str) -> Removed:
    """:class:`Removed` from :func:`remove_script`'s output."""
    counts = {"containers": 0, "networks": 0, "volumes": 0, "releases": 0}
    kept = []
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in counts and value.strip().isdigit():
            counts[key] = int(value)
        elif key == "kept":
            kept.append(value.strip())
    return Removed(host, kept=kept, **counts)


def remove(inventory_path: Path, pattern: str, stack_dir: Path, sets: dict[str, Any], ui: UI,
           purge_data: bool = False, lock_wait: float = 0.0, message: str = "") -> list[Removed]:
    """``remove``: see the module docstring. Hosts are handled one after the other,
    all locked first.

    Raises:
        FerryError: bad input, an unreachable host, a held lock; HostError: the script
            failed on a host (the audit line says so).
    """
    stack = load_stack(stack_dir)
    engines.compose_only(inventory_path, pattern, stack, sets, "remove")
    out = []
    with stack_hosts(inventory_path, pattern, stack, sets) as sessions, \
            guarded(sessions, stack.name, "remove", "", message, lock_wait) as change:
        for s in sessions:
            p = s.paths
            res = s.t.run(remove_script(stack.name, p.stack_dir, p.root, backup.cron_file(stack.name),
                                        backup.backup_dir(s.vars, stack.name), purge_data), check=False, timeout=600)
            if not res.ok:
                change.done(s.name, "failed", res.last_error_line())
                raise HostError(s.name, f"remove {stack.name}: {res.last_error_line()}")
            done = parse_removed(s.name, res.out)
            change.done(s.name, "ok", ("purged data; " if purge_data else "") + done.line.split(": ", 1)[1])
            ui.host_line(s.name, "remove", done.line.split(": ", 1)[1],
                         bool(done.containers or done.networks or done.releases or done.volumes))
            out.append(done)
    return out
