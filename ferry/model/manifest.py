"""The bundle manifest (``manifest.json``): its JSON Schema and the checks beyond it.

A manifest is untrusted input: it arrives on a USB stick, and its ``stack``,
``version`` and file paths become directory names on hosts. :func:`validate_manifest`
checks it against :data:`SCHEMA` (JSON Schema 2020-12, validated with ``jsonschema``)
and then against the rules a schema cannot say (paths unique, every image's blobs
listed as files). Errors name the manifest file and the key, in one line.

Formats:

- **1** (Ferry before layer transfer): each image is one ``docker save`` tarball,
  ``images[i].file``.
- **2**: each image is its parts, as ``docker save`` lays them out, named by digest:
  ``images[i].config`` (the image config, ``blobs/sha256/<hex>``, whose sha256 is the
  image ID) and ``images[i].layers`` (one per ``rootfs.diff_ids`` entry, in order:
  ``{blob, diff_id, media, size}``; ``media`` is ``tar`` or ``gzip``; the blob's
  sha256 is its file name, ``diff_id`` the sha256 of the uncompressed layer tar).

Both formats list every file of the bundle in ``files`` (``{path, size, sha256}``),
except :data:`UNLISTED`: the manifest itself, ``checksums.sha256`` (derived from it)
and the signature ``manifest.json.sig``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import FerryError
from .engine import MEMBER_RE, REQUIRED, VERSION

FORMATS = (1, 2)
FORMAT = 2
"""The format :mod:`ferry.controller.bundle` writes."""

MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"
SIGNATURE = "manifest.json.sig"
UNLISTED = (MANIFEST, CHECKSUMS, SIGNATURE)
"""Top-level files of a bundle that ``files`` does not (cannot) list."""

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z"
"""A stack name or version: one path segment, no ``/``; ``..`` is refused separately.
(Patterns end with ``\\Z``: ``$`` would also match before a final newline.)"""

_SEGMENT = r"[A-Za-z0-9_%+@=,~-][A-Za-z0-9_.%+@=,~-]*|\.[A-Za-z0-9_%+@=,~-][A-Za-z0-9_.%+@=,~-]*"
BUNDLE_PATH = rf"^(?:{_SEGMENT})(?:/(?:{_SEGMENT}))*\Z"
"""A file path inside a bundle: relative, ``/``-separated, no ``.``/``..`` segment, no
empty segment, no space, quote, backslash or control character (paths reach host
shell words and line-based listings)."""

SHA256 = r"^[0-9a-f]{64}\Z"
DIGEST = r"^sha256:[0-9a-f]{64}\Z"
BLOB = r"^blobs/sha256/[0-9a-f]{64}\Z"

_file = {"type": "object", "required": ["path", "size", "sha256"], "additionalProperties": False,
         "properties": {"path": {"type": "string", "pattern": BUNDLE_PATH, "maxLength": 1024},
                        "size": {"type": "integer", "minimum": 0},
                        "sha256": {"type": "string", "pattern": SHA256}}}
_ref = {"type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^[^\s\x00-\x1f]+\Z"}
_image_common = {"service": {"type": "string", "pattern": IDENTIFIER}, "ref": _ref,
                 "id": {"type": "string", "pattern": DIGEST},
                 "tags": {"type": "array", "items": _ref}, "size": {"type": "integer", "minimum": 0}}
_image_v1 = {"type": "object", "required": ["service", "ref", "id", "tags", "file"], "additionalProperties": False,
             "properties": {**_image_common,
                            "file": {"type": "string", "pattern": BUNDLE_PATH, "maxLength": 1024}}}
_layer = {"type": "object", "required": ["blob", "diff_id", "media", "size"], "additionalProperties": False,
          "properties": {"blob": {"type": "string", "pattern": BLOB},
                         "diff_id": {"type": "string", "pattern": DIGEST},
                         "media": {"enum": ["tar", "gzip"]},
                         "size": {"type": "integer", "minimum": 0}}}
_image_v2 = {"type": "object", "required": ["service", "ref", "id", "tags", "config", "layers"],
             "additionalProperties": False,
             "properties": {**_image_common, "config": {"type": "string", "pattern": BLOB},
                            "layers": {"type": "array", "items": _layer}}}

_static = {"type": "object", "required": ["file", "version", "sha256", "binaries"],
           "properties": {"file": {"type": "string", "pattern": rf"^docker/static/docker-{VERSION}\.tgz$"},
                          "version": {"type": "string", "pattern": rf"^{VERSION}$"},
                          "sha256": {"type": "string", "pattern": SHA256},
                          "size": {"type": "integer", "minimum": 0},
                          "binaries": {"type": "object", "required": list(REQUIRED),
                                       "propertyNames": {"pattern": rf"^{MEMBER_RE.pattern}$"},
                                       "additionalProperties": {"type": ["string", "null"], "maxLength": 200}}}}
DEB_PACKAGE = r"^[a-z0-9][a-z0-9+.-]*\Z"
DEB_VERSION = r"^[0-9A-Za-z.+~:-]+\Z"
ARCH = r"^[a-z0-9_]+\Z"
_docker = {"type": "object",
           "required": ["docker", "compose", "arch", "uname_arch", "packages"],
           "properties": {"static": _static,
                          "docker": {"type": "string", "pattern": DEB_VERSION, "maxLength": 128},
                          "compose": {"type": "string", "pattern": rf"^{VERSION}\Z"},
                          "compose_sha256": {"type": "string", "pattern": SHA256},
                          "arch": {"type": "string", "pattern": ARCH, "maxLength": 32},
                          "uname_arch": {"type": "string", "pattern": ARCH, "maxLength": 32},
                          "packages": {"type": "object", "propertyNames": {"pattern": DEB_PACKAGE, "maxLength": 128},
                                       "additionalProperties": {"type": "string", "pattern": DEB_VERSION,
                                                                "maxLength": 128}}}}
"""The Docker payload (see :mod:`ferry.controller.bundle`, ``docker/versions.json``):
versions, architecture and Debian packages, every one of which the
install-docker-offline role compares with host facts or puts in host commands, so all
are required and typed; ``static`` is Docker's static tarball
(:mod:`ferry.controller.dockerstatic`): its words reach host commands."""

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Ferry bundle manifest",
    "type": "object",
    "required": ["format", "stack", "version", "files", "images", "docker"],
    "properties": {
        "format": {"enum": list(FORMATS)},
        "stack": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}\Z"},
        "version": {"type": "string", "pattern": IDENTIFIER, "not": {"pattern": r"\.\."}},
        "created": {"type": "string"},
        "created_by": {"type": "string"},
        "docker": _docker,
        "files": {"type": "array", "items": _file},
        "images": {"type": "array"},
    },
    "allOf": [
        {"if": {"properties": {"format": {"const": 1}}},
         "then": {"properties": {"images": {"items": _image_v1}}},
         "else": {"properties": {"images": {"items": _image_v2}}}},
    ],
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _where(error: jsonschema.ValidationError) -> str:
    """``files[3].path`` style location of a schema error."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_RULES = {
    IDENTIFIER: "must be an identifier (letters, digits, '.', '_', '+', '-'; no '/', no '..')",
    SCHEMA["properties"]["stack"]["pattern"]: "must be a stack name (a-z, 0-9, '_', '-'; no '/', no '..')",
    BUNDLE_PATH: "must be a relative path inside the bundle (no leading '/', no '.' or '..' "
                 "segment, no spaces or quotes)",
    SHA256: "must be a sha256 hex digest", DIGEST: "must be 'sha256:' and a hex digest",
    BLOB: "must be 'blobs/sha256/<sha256 hex>'",
    _static["properties"]["file"]["pattern"]: "must be 'docker/static/docker-<version>.tgz'",
    _static["properties"]["version"]["pattern"]: "must be a Docker version like 24.0.7",
    _static["properties"]["binaries"]["propertyNames"]["pattern"]: "must be a plain executable name",
    DEB_PACKAGE: "must be a Debian package name", DEB_VERSION: "must be a Debian version",
    ARCH: "must be an architecture name such as amd64", rf"^{VERSION}\Z": "must be a version like 2.40.3",
}


def _why(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator in ("pattern", "not"):
        rule = _RULES.get(schema.get("pattern", IDENTIFIER), "is not allowed")
        return f"{error.instance!r} {rule}"
    return error.message[:200]


def validate_manifest(manifest: Any, where: Path | str) -> dict[str, Any]:
    """Check a parsed manifest against :data:`SCHEMA` and the cross-field rules.

    Args:
        manifest: the parsed JSON.
        where: the manifest's path, for messages.

    Returns:
        ``manifest`` itself.

    Raises:
        FerryError: one line, ``<where>: key 'files[3].path': <why>``.
    """
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(manifest))
    if error is not None:
        raise FerryError(f"{where}: key '{_where(error)}': {_why(error)}")
    paths: dict[str, int] = {}
    for i, f in enumerate(manifest["files"]):
        if f["path"] in UNLISTED:
            raise FerryError(f"{where}: key 'files[{i}].path': {f['path']} must not be listed")
        if f["path"] in paths:
            raise FerryError(f"{where}: key 'files[{i}].path': {f['path']} is listed twice")
        paths[f["path"]] = i
    by_path = {f["path"]: f for f in manifest["files"]}
    static = manifest["docker"].get("static")
    if static is not None and (static["file"] != f"docker/static/docker-{static['version']}.tgz"
                               or by_path.get(static["file"], {}).get("sha256") != static["sha256"]):
        raise FerryError(f"{where}: key 'docker.static.file': must be docker/static/docker-"
                         f"{static['version']}.tgz, listed in 'files' with the same sha256")
    for i, image in enumerate(manifest["images"]):
        needed = [image["file"]] if manifest["format"] == 1 else \
            [image["config"], *(layer["blob"] for layer in image["layers"])]
        for rel in needed:
            if rel not in by_path:
                raise FerryError(f"{where}: key 'images[{i}]': {rel} is not listed in 'files'")
        if manifest["format"] == 2:
            if image["id"] != "sha256:" + by_path[image["config"]]["sha256"]:
                raise FerryError(f"{where}: key 'images[{i}].id': not the sha256 of its config {image['config']}")
            for j, layer in enumerate(image["layers"]):
                entry = by_path[layer["blob"]]
                if layer["blob"] != "blobs/sha256/" + entry["sha256"] or layer["size"] != entry["size"]:
                    raise FerryError(f"{where}: key 'images[{i}].layers[{j}]': blob name, size and "
                                     f"sha256 disagree with 'files'")
    return manifest


def checksums_text(manifest: dict[str, Any], manifest_sha256: str) -> str:
    """The ``checksums.sha256`` a bundle carries: ``<sha256>  <path>`` per listed file,
    then the manifest's own line, as ``sha256sum -c`` reads them."""
    lines = [f"{f['sha256']}  {f['path']}" for f in manifest["files"]]
    lines.append(f"{manifest_sha256}  {MANIFEST}")
    return "\n".join(lines) + "\n"


def is_identifier(value: str) -> bool:
    """True when ``value`` is usable as a stack version (see :data:`IDENTIFIER`)."""
    return re.match(IDENTIFIER, value) is not None and ".." not in value
