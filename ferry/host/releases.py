"""Reading release history from a host: the commands and their parsers.

:func:`read_releases_command` reads one stack's releases; :func:`read_host_command`
reads every stack's releases and every bundle's manifest under ``ferry_root`` (what
``prune`` and ``uninstall`` need to know what is in use).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

from ..model.releases import History, Release
from .answers import AnswerError, json_doc
from .files import parse_tar
from .shell import q, sh


def read_releases_command(stack_dir: str) -> list[str]:
    """One command: ``readlink current`` on the first line, then a tar stream of every
    release's ``release.json`` and ``manifest.json``."""
    return sh(f"cd {q(stack_dir)} 2>/dev/null || exit 0; readlink current || echo; "
                  "set -- releases/*/release.json releases/*/manifest.json; "
                  "for f; do shift; [ -e \"$f\" ] && set -- \"$@\" \"$f\"; done; [ $# -eq 0 ] || tar -cf - -- \"$@\"")


def _add_release_file(by_id: dict[str, Release], rid: str, name: str, data: bytes) -> None:
    rel = by_id.setdefault(rid, Release(rid))
    what = f"releases/{rid}/{name}"
    doc = json_doc(data or b"{}", what, dict)
    if name == "release.json":
        rel.info = doc
    elif name == "manifest.json":
        try:
            rel.image_ids = {str(i["id"]) for i in doc.get("images", [])}
            rel.file_shas = {str(f["sha256"]) for f in doc.get("files", [])}
        except (TypeError, KeyError, AttributeError):
            raise AnswerError(f"{what}: not a bundle manifest (images[].id, files[].sha256)") from None


def parse_releases(stdout: bytes) -> History:
    """Parse :func:`read_releases_command` output."""
    first, _, rest = stdout.partition(b"\n")
    current = posixpath.basename(first.decode("utf-8", "replace").strip()) or None
    by_id: dict[str, Release] = {}
    for path, data in parse_tar(rest).items():
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "releases":
            _add_release_file(by_id, parts[1], parts[2], data)
    return History(sorted(by_id.values(), key=lambda r: r.id), current)


def read_releases(t, stack_dir: str) -> History:
    """The release history of the stack under ``stack_dir`` on the host behind ``t``."""
    return parse_releases(t.run(read_releases_command(stack_dir)).stdout)


def composes_command(stack_dir: str) -> list[str]:
    """The ids of the releases under ``stack_dir`` that have a ``compose.yml``, one per
    line (nothing when the stack has no release there)."""
    return sh(f"cd {q(stack_dir + '/releases')} 2>/dev/null || exit 0; "
              'for f in */compose.yml; do [ -f "$f" ] && echo "${f%/compose.yml}"; done; true')


def parse_composes(stdout: bytes) -> set[str]:
    """Parse :func:`composes_command` output: a set of release ids."""
    return {line.strip() for line in stdout.decode("utf-8", "replace").splitlines() if line.strip()}


def target_config_command(stack_dir: str, project: str, to: str | None = None) -> list[str]:
    """The release a rollback of ``project`` would switch to and Compose's model of it,
    read under the lock before the controller has decided (rollback's first round trip):
    ``to``, else the one before ``current`` among the releases with a ``release.json`` or
    ``manifest.json``, by id (as :meth:`ferry.model.releases.History.previous`). Prints
    its id on the first line, then ``docker compose config --format json`` of its
    ``compose.yml`` in its own directory; nothing when there is no such release. The
    controller uses the model only when the id is the target it decided on. A ``to``
    that is not a release id (letters, digits, ``._-``) is not used (no path is built
    from it)."""
    if to is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", to):
        to = None             # not a release id (a path?): no guess, rollback refuses it later
    return sh(f"cd {q(stack_dir + '/releases')} 2>/dev/null || exit 0; t={q(to or '')}; "
              'if [ -z "$t" ]; then cur=$(readlink ../current 2>/dev/null); cur=${cur##*/}; prev=; '
              'for r in $(for f in */release.json */manifest.json; do [ -e "$f" ] && echo "${f%%/*}"; done '
              '| LC_ALL=C sort -u); do [ "$r" = "$cur" ] && { t=$prev; break; }; prev=$r; done; fi; '
              '[ -n "$t" ] && [ -f "$t/compose.yml" ] || exit 0; echo "$t"; '
              f'exec docker compose -p {q(project)} -f "$t/compose.yml" --project-directory "$PWD/$t" '
              'config --format json')


def parse_target_config(stdout: bytes) -> tuple[str | None, dict | None]:
    """Parse :func:`target_config_command` output: ``(release id, Compose's model as a
    dict)``; ``(None, None)`` when there was no release, ``(id, None)`` when Compose
    could not read it (the caller then reads the model after activating)."""
    first, _, rest = stdout.partition(b"\n")
    rid = first.decode("utf-8", "replace").strip() or None
    if rid is None:
        return None, None
    try:
        doc = json.loads(rest)
    except ValueError:
        return rid, None
    return rid, doc if isinstance(doc, dict) else None


def read_host_command(root: str) -> list[str]:
    """A tar stream (through symlinks) of every ``stacks/*/releases/*/{release,manifest}.json``
    and ``bundles/*/manifest.json`` under ``root`` (nothing when ``root`` is absent)."""
    return sh(f"cd {q(root)} 2>/dev/null || exit 0; "
              "set -- stacks/*/releases/*/release.json stacks/*/releases/*/manifest.json bundles/*/manifest.json; "
              "for f; do shift; [ -e \"$f\" ] && set -- \"$@\" \"$f\"; done; [ $# -eq 0 ] || tar -chf - -- \"$@\"")


@dataclass
class HostReleases:
    """Every stack's releases and every bundle's manifest on one host.

    Attributes:
        stacks: ``{stack: History}`` for each ``stacks/<stack>/`` with releases.
        bundles: ``{bundle directory name: its manifest}`` for each ``bundles/<name>/``
            with a readable ``manifest.json``.
    """

    stacks: dict[str, History] = field(default_factory=dict)
    bundles: dict[str, dict] = field(default_factory=dict)

    def releases(self) -> list[Release]:
        """Every release of every stack."""
        return [r for h in self.stacks.values() for r in h.releases]

    def releases_except(self, stack: str) -> list[Release]:
        """Every release of every stack but ``stack``."""
        return [r for name, h in self.stacks.items() if name != stack for r in h.releases]

    def known_images(self) -> set[str]:
        """Image IDs listed in any release's or bundle's manifest: what Ferry brought."""
        ids = set().union(*(r.image_ids for r in self.releases())) if self.stacks else set()
        for m in self.bundles.values():
            ids |= {i["id"] for i in m.get("images", []) if i.get("id")}
        return ids

    def bundle_stack(self, name: str) -> str | None:
        """The stack a bundle is for (its manifest's ``stack``)."""
        return self.bundles.get(name, {}).get("stack")


def parse_host(stdout: bytes) -> HostReleases:
    """Parse :func:`read_host_command` output."""
    out = HostReleases()
    by_stack: dict[str, dict[str, Release]] = {}
    for path, data in parse_tar(stdout).items():
        parts = path.split("/")
        if len(parts) == 5 and parts[0] == "stacks" and parts[2] == "releases":
            _add_release_file(by_stack.setdefault(parts[1], {}), parts[3], parts[4], data)
        elif len(parts) == 3 and parts[0] == "bundles" and parts[2] == "manifest.json":
            try:
                out.bundles[parts[1]] = json_doc(data or b"{}", path, dict)
            except AnswerError:
                continue
    out.stacks = {s: History(sorted(rels.values(), key=lambda r: r.id), None) for s, rels in by_stack.items()}
    return out


def read_host(t, root: str) -> HostReleases:
    """:class:`HostReleases` of the host behind ``t`` (``root``: ``ferry_root``)."""
    return parse_host(t.run(read_host_command(root)).stdout)
