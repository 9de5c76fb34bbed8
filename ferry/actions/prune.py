"""``prune``: free what no release of any stack on a host uses (locked and audited).

Every release of every stack is kept (so are rollback targets); removed are the images
Ferry brought (listed in a bundle's or a release's manifest) that no release uses and
no container (running or stopped) uses, the bundle directories no release came from,
and the store files no remaining bundle links to. Images Ferry never loaded are left
alone. The facts and the removal are the ``prune-releases`` role's, the decision is
:func:`ferry.model.releases.plan_host_prune`: one implementation of retention.

Every stack found on a host is locked while it is pruned; facts are read again under
the locks, and only bundles of locked stacks are candidates. Check mode reports what
would go and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.releases import read_host
from ..host.session import guarded
from ..model.releases import HostPrunePlan, plan_host_prune
from ..roles import load_role
from ..ui import UI, human_bytes
from .common import stack_hosts


@dataclass
class PruneReport:
    """One host's prune.

    Attributes:
        plan: what was (or, in check mode, would be) removed.
        images: ``{image ID: tags}`` of ``plan.images``.
        store_bytes: bytes of the store files removed.
        removed_images: image IDs Docker actually removed (check mode: none).
    """

    host: str
    plan: HostPrunePlan
    images: dict[str, list[str]] = field(default_factory=dict)
    store_bytes: int = 0
    removed_images: list[str] = field(default_factory=list)

    def summary(self, check: bool) -> str:
        """``removed 1 images, 1 bundles, 3 store files (152.3 MB)`` (``would remove`` in check mode)."""
        if self.plan.empty:
            return "nothing to prune: every image, bundle and store file is used by a release"
        images = len(self.plan.images) if check else len(self.removed_images)
        return (f"{'would remove' if check else 'removed'} {images} images, {len(self.plan.bundles)} bundles, "
                f"{len(self.plan.store_files)} store files ({human_bytes(self.store_bytes)} of store)")


def _stack_of(found, bundle: str, locked: list[str]) -> str | None:
    """The stack a bundle directory belongs to: its manifest's ``stack``; without a
    readable manifest (an upload cut short), the locked stack its name starts with
    (bundle directories are named ``<stack>-<version>``; the longest name wins)."""
    stack = found.bundle_stack(bundle)
    if stack:
        return stack
    prefixed = [s for s in locked if bundle.startswith(s + "-")]
    return max(prefixed, key=len) if prefixed else None


def prune(inventory_path: Path, pattern: str, sets: dict[str, Any], ui: UI, check: bool = False,
          lock_wait: float = 0.0, message: str = "") -> list[PruneReport]:
    """Prune each selected host (see the module docstring).

    Raises:
        FerryError: bad inventory or pattern, an unreachable host, a held lock.
    """
    role = load_role("prune-releases")
    reports = []
    with stack_hosts(inventory_path, pattern, None, sets) as sessions:
        stacks = {}
        for s in sessions:
            found = read_host(s.t, s.paths.root)
            stacks[s.name] = sorted(set(found.stacks) | {m.get("stack") for m in found.bundles.values()
                                                         if isinstance(m.get("stack"), str)})
        with guarded(sessions, stacks, "prune", message=message, wait=lock_wait, check=check) as change:
            for s in sessions:
                root = s.paths.root
                facts = role.host_facts(s.t, root)
                removable = [b for b in facts.links if _stack_of(facts.releases, b, stacks[s.name]) in stacks[s.name]]
                present = set(facts.images)
                plan = plan_host_prune(facts.releases.releases(), facts.releases.known_images() & present,
                                       facts.container_images, facts.links, facts.stored, removable)
                report = PruneReport(s.name, plan, {i: sorted(facts.images.get(i, ())) for i in plan.images},
                                     sum(facts.stored.get(f, 0) for f in plan.store_files))
                if not check and not plan.empty:
                    report.removed_images = role.remove(s.t, root, [f"{root}/bundles/{b}" for b in plan.bundles],
                                                        plan.images, facts.images, plan.store_files)
                line = report.summary(check)
                change.done(s.name, "ok", line)
                ui.host_line(s.name, "prune", line, not plan.empty)
                for image in plan.images:
                    ui.info(f"  image {image[:19]} {' '.join(report.images[image]) or '(untagged)'}"
                            + ("" if check or image in report.removed_images else ": refused by Docker, kept"))
                for b in plan.bundles:
                    ui.info(f"  bundle {b}")
                reports.append(report)
    return reports
