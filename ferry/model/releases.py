"""Releases on a host: history, rollback targets and retention (Capistrano-style).

Each deploy that changes anything writes ``stacks/<stack>/releases/<id>/`` (id =
``YYYYmmddTHHMMSSZ-<version>``, so names sort by time) holding ``release.json`` and the
bundle's ``manifest.json``; ``current`` is a symlink switched by rename. Everything
here is pure (facts in, decisions out) (:mod:`ferry.host.releases` reads them from a host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FerryError


@dataclass
class Release:
    """One release directory as read from a host.

    Attributes:
        id: directory name under ``releases/``.
        info: parsed ``release.json`` (version, created, by, bundle...).
        image_ids: image IDs of the bundle the release came from (its manifest).
        file_shas: sha256 of every file of that bundle (its manifest).
    """

    id: str
    info: dict[str, Any] = field(default_factory=dict)
    image_ids: set[str] = field(default_factory=set)
    file_shas: set[str] = field(default_factory=set)

    @property
    def version(self) -> str:
        """The release's bundle version (``?`` if unknown)."""
        return str(self.info.get("version", "?"))

    @property
    def bundle(self) -> str:
        """Name of the bundle the release came from."""
        return str(self.info.get("bundle", ""))


@dataclass
class History:
    """All releases of one stack on one host, oldest first, and which is current."""

    releases: list[Release]
    current: str | None

    def get(self, rid: str) -> Release | None:
        """The release with id ``rid``, or None."""
        return next((r for r in self.releases if r.id == rid), None)

    def previous(self) -> Release | None:
        """The release before ``current`` (by time), the default rollback target."""
        ids = [r.id for r in self.releases]
        if self.current not in ids:
            return None
        i = ids.index(self.current)
        return self.releases[i - 1] if i > 0 else None


@dataclass
class PrunePlan:
    """What retention removes on one host (every list may be empty)."""

    releases: list[str]
    images: list[str]
    bundles: list[str]


def plan_prune(history: History, keep: int, other_stacks_images: set[str] | None = None) -> PrunePlan:
    """Keep the newest ``keep`` releases and always ``current``; drop the rest, the images
    only dropped releases use, and their bundles.

    Args:
        history: this stack's releases on the host.
        keep: releases to keep (>= 1); ``current`` is kept even when older.
        other_stacks_images: image IDs used by other stacks' releases (never removed).

    Raises:
        FerryError: ``keep`` < 1.
    """
    if keep < 1:
        raise FerryError(f"releases_keep must be at least 1, not {keep}")
    kept = history.releases[-keep:]
    current = history.get(history.current) if history.current else None
    if current is not None and current not in kept:
        kept = [current, *(history.releases[-(keep - 1):] if keep > 1 else [])]
    kept_ids = {r.id for r in kept}
    dropped = [r for r in history.releases if r.id not in kept_ids]
    used = set().union(*(r.image_ids for r in kept)) | (other_stacks_images or set())
    images = sorted(set().union(*(r.image_ids for r in dropped)) - used) if dropped else []
    kept_bundles = {r.bundle for r in kept}
    bundles = sorted({r.bundle for r in dropped if r.bundle and r.bundle not in kept_bundles})
    return PrunePlan([r.id for r in dropped], images, bundles)
