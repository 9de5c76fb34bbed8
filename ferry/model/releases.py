"""Releases on a host: history, rollback targets and retention (Capistrano-style).

Each deploy that changes anything writes ``stacks/<stack>/releases/<id>/`` (id =
``YYYYmmddTHHMMSSZ-<version>``, so names sort by time) holding ``release.json`` and the
bundle's ``manifest.json``; ``current`` is a symlink switched by rename. Everything
here is pure (facts in, decisions out) (:mod:`ferry.host.releases` reads them from a host).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

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


STORE_NAME = re.compile(r"[0-9a-f]{64}")
"""Names of Ferry's own store files (a sha256); nothing else in the store is ever deleted."""


def unused_images(candidates: Iterable[str], kept: Iterable[Release], protected: Iterable[str] = ()) -> list[str]:
    """Image IDs among ``candidates`` that no release in ``kept`` uses and that are not
    ``protected`` (e.g. the image of any container, running or not), sorted."""
    kept = list(kept)
    used = set().union(*(r.image_ids for r in kept)) if kept else set()
    return sorted(set(candidates) - used - set(protected))


def unused_bundles(candidates: Iterable[str], kept: Iterable[Release]) -> list[str]:
    """Bundle directory names among ``candidates`` that no release in ``kept`` came from."""
    used = {r.bundle for r in kept}
    return sorted({b for b in candidates if b and b not in used})


def unused_store_files(stored: Iterable[str], linked: Iterable[str]) -> list[str]:
    """Store file names (sha256, :data:`STORE_NAME`) that no remaining bundle links to.

    Args:
        stored: names of the regular files in ``<ferry_root>/store``.
        linked: names (basenames of symlink targets) the remaining bundles point at.
    """
    return sorted(s for s in set(stored) - set(linked) if STORE_NAME.fullmatch(s))


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
        other_stacks_images: image IDs used by other stacks' releases or by containers
            (never removed).

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
    images = unused_images(set().union(*(r.image_ids for r in dropped)), kept, other_stacks_images or ()) \
        if dropped else []
    return PrunePlan([r.id for r in dropped], images, unused_bundles((r.bundle for r in dropped), kept))


@dataclass
class HostPrunePlan:
    """What ``prune`` removes on one host: nothing any release of any stack uses.

    Attributes:
        images: image IDs (``sha256:...``).
        bundles: bundle directory names under ``<ferry_root>/bundles``.
        store_files: sha256 names under ``<ferry_root>/store``.
    """

    images: list[str]
    bundles: list[str]
    store_files: list[str]

    @property
    def empty(self) -> bool:
        """True when there is nothing to remove."""
        return not (self.images or self.bundles or self.store_files)


def plan_host_prune(releases: Iterable[Release], known_images: Iterable[str], protected_images: Iterable[str],
                    bundles: dict[str, set[str]], stored: Iterable[str],
                    removable: Iterable[str] | None = None) -> HostPrunePlan:
    """``prune``: keep every release of every stack on a host; remove the images and
    bundles none of them uses and the store files no remaining bundle links to.

    Args:
        releases: every release of every stack on the host (all are kept).
        known_images: image IDs Ferry brought to the host (listed in a bundle's or a
            release's manifest) and still present; images Ferry never loaded are not
            candidates.
        protected_images: image IDs of containers (running or stopped), never removed.
        bundles: ``{bundle directory name: names of the store files it links to}`` of
            every bundle on the host.
        stored: names of the files in the store.
        removable: the bundles that may be removed (default: all); the others, e.g. of
            a stack whose lock this run does not hold, are kept with their store files.
    """
    releases = list(releases)
    allowed = set(bundles) if removable is None else set(removable) & set(bundles)
    drop = unused_bundles(allowed, releases)
    linked = set().union(*(links for name, links in bundles.items() if name not in drop))
    return HostPrunePlan(unused_images(known_images, releases, protected_images), drop,
                         unused_store_files(stored, linked))
