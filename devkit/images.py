"""Stand-in container images built locally from Debian packages, cached by recipe.

The controller has no image registry, so the images a stack needs are built here from
Debian's archive: ``mmdebstrap`` writes a small Debian root filesystem as a tar
stream and ``docker import`` turns it into an image (one layer, no Dockerfile).

Recipe format
=============

One ``recipe.yml`` per image, normally ``stacks/<stack>/images/<service>/recipe.yml``.
Paths in ``copy`` are relative to the recipe's directory. Unknown keys are errors.

.. code-block:: yaml

    tag: llm-chat-backend:1.0.0      # required: image reference written by docker import
    packages: [python3]              # required: Debian packages to install (may be [])
    copy:                            # optional: source (file or dir, relative to the
      app: /app                      #   recipe dir) -> absolute path in the image. A dir
                                     #   is copied as that dir; a file to that file path
                                     #   (or into it when the dest ends with "/").
                                     #   __pycache__ and *.pyc are never copied.
    env: {APP_VERSION: "1.0.0"}      # optional: ENV; values are scalars, made strings.
                                     #   PATH defaults to the Debian one.
    workdir: /app                    # optional: WORKDIR (absolute)
    cmd: ["python3", "/app/server.py"]   # optional: CMD, exec form (list of strings)
    entrypoint: ["/usr/bin/tini"]    # optional: ENTRYPOINT, exec form
    expose: [8000, "53/udp"]         # optional: EXPOSE ports (int or "port/proto")
    user: www-data                   # optional: USER
    labels: {org.example.x: "y"}     # optional: extra LABELs (ferry.recipe is always set)
    hooks:                           # optional: shell snippets run on the build host after
      - rm -f "$1/etc/foo"           #   the copy-in and junk clean-up, each as
                                     #   ``sh -c SNIPPET exec ROOTFS`` ("$1" = the rootfs;
                                     #   use ``chroot "$1" CMD`` to run inside it).
                                     #   Never touch "$1/tmp": mmdebstrap keeps its apt
                                     #   config there, and without it its clean-up runs
                                     #   apt against the HOST (wiping the host's lists).
    suite: bookworm                  # optional: Debian suite (default bookworm)
    variant: essential               # optional: mmdebstrap variant. "essential" (default)
                                     #   = Essential:yes packages + `packages`, no apt;
                                     #   "minbase" adds apt and Priority:required
                                     #   (~+15 MB: apt, gpgv, libapt-pkg, gnutls ...).
    mirrors:                         # optional: apt source lines; default: deb.debian.org
      - deb http://deb.debian.org/debian bookworm main   # SUITE, SUITE-updates, and
                                                         # debian-security SUITE-security

``docker import`` (engine 20.10) rejects STOPSIGNAL ("not a valid change command"):
set ``stop_signal`` in the compose file. Health checks belong in the compose file too.

Build
=====

``mmdebstrap --variant=V --hook-dir=.../merged-usr --include=PKGS --dpkgopt=path-exclude=
(man, doc except copyright, info, locale, lintian) --customize-hook='tar-in COPY.tar /'
--customize-hook=CLEANUP [--customize-hook=HOOK...] SUITE - MIRRORS`` writes the rootfs
tar to ``<repo>/.cache/images/<digest>.tar`` (kept, so re-importing after ``docker rmi``
takes seconds), then ``docker import -c CMD.. -c ENV.. -c EXPOSE.. -c WORKDIR..
-c 'LABEL ferry.recipe=<digest>' <tar> <tag>``.

An image is up to date when the local image ``tag`` carries the label
``ferry.recipe=<digest>``; :func:`recipe_digest` covers the recipe file, every file it
copies in and :data:`BUILD_REV` (the build method), not the package versions in the
archive (``force=True`` rebuilds against the archive as it is now).

The cache directory is ``<repo>/.cache/images`` or ``$FERRY_CACHE_DIR/images``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry.errors import FerryError
from ferry.controller.localdocker import docker, ensure_engine

#: Bump when the build method changes so that every recipe digest changes with it.
BUILD_REV = "1"

#: The recipe label docker import writes; its value is :func:`recipe_digest`.
RECIPE_LABEL = "ferry.recipe"

#: mmdebstrap may take this long (seconds) to download and install a rootfs.
BUILD_TIMEOUT = 1800

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")

_DPKG_EXCLUDES = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
]

# Run in the rootfs after the copy-in: drop logs, backups and host identity.
_CLEANUP_HOOK = (
    'set -e; '
    'rm -f "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old '
    '"$1"/var/cache/ldconfig/aux-cache "$1"/etc/hostname "$1"/etc/resolv.conf; '
    'find "$1/var/log" -type f -delete'
)

_KNOWN_KEYS = {"tag", "packages", "copy", "env", "workdir", "cmd", "entrypoint", "expose",
               "user", "labels", "hooks", "suite", "variant", "mirrors"}
_VARIANTS = {"essential", "minbase", "required", "buildd", "important", "debootstrap",
             "standard"}
_SKIP_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass
class ImageRecipe:
    """A parsed ``recipe.yml`` (see the module docstring for the format).

    Attributes:
        path: the recipe file (absolute).
        tag: image reference, e.g. ``"llm-chat-backend:1.0.0"``.
        packages: Debian package names to install.
        copy: ``(source path on the controller, absolute dest path in the image)`` pairs.
        env: environment variables (strings).
        workdir, user: as in a Dockerfile, or ``None``.
        cmd, entrypoint: exec-form argument lists, or ``None``.
        expose: ports as ``"8000"`` / ``"53/udp"``.
        labels: extra image labels.
        hooks: shell snippets run with ``$1`` = rootfs (see module docstring).
        suite, variant, mirrors: what mmdebstrap builds from.
    """

    path: Path
    tag: str
    packages: list[str] = field(default_factory=list)
    copy: list[tuple[Path, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    expose: list[str] = field(default_factory=list)
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    suite: str = "bookworm"
    variant: str = "essential"
    mirrors: list[str] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        """The recipe's directory (base of relative ``copy`` sources)."""
        return self.path.parent


def cache_root() -> Path:
    """The controller cache (:func:`ferry.resources.cache_dir`)."""
    from ferry.resources import cache_dir
    return cache_dir()


def _say(console: Any, message: str) -> None:
    if console is not None:
        console.print(message)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FerryError(f"{where}: must be a list of non-empty strings")
    return list(value)


def _scalar_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise FerryError(f"{where}: must be a mapping")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise FerryError(f"{where}: keys must be non-empty strings (got {k!r})")
        if isinstance(v, bool):
            v = "true" if v else "false"
        if v is None or isinstance(v, (list, dict)):
            raise FerryError(f"{where}.{k}: must be a string or number")
        out[k] = str(v)
    return out


def load_recipe(path: Path) -> ImageRecipe:
    """Read and validate a ``recipe.yml``.

    Args:
        path: the recipe file.

    Returns:
        The parsed :class:`ImageRecipe` (``path`` made absolute).

    Raises:
        FerryError: unreadable file, bad YAML, an unknown or missing key, a value of the
            wrong type, a ``copy`` source that does not exist or a non-absolute
            destination; the message names the file and the key.
    """
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise FerryError(f"{path}: cannot read recipe: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FerryError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise FerryError(f"{path}: a recipe must be a YAML mapping")
    unknown = sorted(set(map(str, data)) - _KNOWN_KEYS)
    if unknown:
        raise FerryError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_KEYS))})")

    def key(name: str) -> str:
        return f"{path}: {name}"

    tag = data.get("tag")
    if not isinstance(tag, str) or not tag.strip() or any(c.isspace() for c in tag):
        raise FerryError(f"{key('tag')}: required, an image reference like name:1.0")
    if "packages" not in data:
        raise FerryError(f"{key('packages')}: required (a list of Debian packages, may be [])")
    packages = _str_list(data["packages"] if data["packages"] is not None else [], key("packages"))
    for p in packages:
        if p.startswith("-") or "," in p or any(c.isspace() for c in p):
            raise FerryError(f"{key('packages')}: bad package name {p!r}")

    recipe = ImageRecipe(path=path, tag=tag.strip(), packages=packages)

    copy = data.get("copy") or {}
    if not isinstance(copy, dict):
        raise FerryError(f"{key('copy')}: must be a mapping source -> /absolute/dest")
    for src, dest in copy.items():
        if not isinstance(src, str) or not isinstance(dest, str) or not src or not dest:
            raise FerryError(f"{key('copy')}: entries must be 'source: /dest' strings")
        if os.path.isabs(src):
            raise FerryError(f"{key('copy')}.{src}: source must be relative to {path.parent}")
        if not dest.startswith("/") or dest == "/" or ".." in Path(dest).parts:
            raise FerryError(f"{key('copy')}.{src}: destination {dest!r} must be an absolute path below /")
        src_path = (path.parent / src)
        if not src_path.exists():
            raise FerryError(f"{key('copy')}.{src}: {src_path} does not exist")
        recipe.copy.append((src_path, dest))

    if "env" in data and data["env"] is not None:
        recipe.env = _scalar_map(data["env"], key("env"))
        for k in recipe.env:
            if "=" in k or any(c.isspace() for c in k):
                raise FerryError(f"{key('env')}: bad variable name {k!r}")
    if "labels" in data and data["labels"] is not None:
        recipe.labels = _scalar_map(data["labels"], key("labels"))
        if RECIPE_LABEL in recipe.labels:
            raise FerryError(f"{key('labels')}: {RECIPE_LABEL} is set by Ferry")
    for name in ("workdir", "user", "suite", "variant"):
        if name in data and data[name] is not None:
            value = data[name]
            if not isinstance(value, str) or not value.strip():
                raise FerryError(f"{key(name)}: must be a non-empty string")
            setattr(recipe, name, value.strip())
    if recipe.workdir is not None and not recipe.workdir.startswith("/"):
        raise FerryError(f"{key('workdir')}: must be an absolute path")
    if recipe.variant not in _VARIANTS:
        raise FerryError(f"{key('variant')}: {recipe.variant!r} is not one of {', '.join(sorted(_VARIANTS))}")
    for name in ("cmd", "entrypoint"):
        if name in data and data[name] is not None:
            setattr(recipe, name, _str_list(data[name], key(name)))
    for port in data.get("expose") or []:
        text_port = str(port)
        number, _, proto = text_port.partition("/")
        if isinstance(port, bool) or not number.isdigit() or not 0 < int(number) < 65536 \
                or proto not in ("", "tcp", "udp", "sctp"):
            raise FerryError(f"{key('expose')}: bad port {port!r} (e.g. 8000 or \"53/udp\")")
        recipe.expose.append(text_port)
    if "hooks" in data and data["hooks"] is not None:
        recipe.hooks = _str_list(data["hooks"], key("hooks"))
    if "mirrors" in data and data["mirrors"] is not None:
        recipe.mirrors = _str_list(data["mirrors"], key("mirrors"))
    else:
        s = recipe.suite
        recipe.mirrors = [f"deb http://deb.debian.org/debian {s} main",
                          f"deb http://deb.debian.org/debian {s}-updates main",
                          f"deb http://deb.debian.org/debian-security {s}-security main"]
    return recipe


def _skip(name: str) -> bool:
    return name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES)


def _copy_entries(recipe: ImageRecipe) -> list[tuple[str, Path]]:
    """(path in image, path on controller) for every entry copied in, sorted, with dirs."""
    entries: dict[str, Path] = {}
    for src, dest in recipe.copy:
        if src.is_dir() and not src.is_symlink():
            base = dest.rstrip("/")
            entries[base] = src
            for root, dirs, files in os.walk(src):
                dirs[:] = sorted(d for d in dirs if not _skip(d))
                rel_root = Path(root).relative_to(src)
                for name in dirs + sorted(f for f in files if not _skip(f)):
                    entries[str(Path(base) / rel_root / name)] = Path(root) / name
        else:
            target = dest + src.name if dest.endswith("/") else dest
            entries[target] = src
    return sorted(entries.items())


def recipe_digest(recipe: ImageRecipe) -> str:
    """The recipe's cache key.

    Args:
        recipe: a loaded recipe.

    Returns:
        64 hex chars: sha256 over :data:`BUILD_REV`, the recipe file's bytes, and for every
        file, directory and symlink copied in: its path in the image, its mode bits and
        its content (or link target).

    Raises:
        FerryError: a copied file cannot be read.
    """
    h = hashlib.sha256()
    h.update(f"ferry-image build-rev {BUILD_REV}\0".encode())
    try:
        h.update(recipe.path.read_bytes())
        for dest, src in _copy_entries(recipe):
            st = src.lstat()
            h.update(b"\0entry\0" + dest.encode() + b"\0")
            if src.is_symlink():
                h.update(b"L" + os.readlink(src).encode())
            elif src.is_dir():
                h.update(b"D%o" % (st.st_mode & 0o7777))
            else:
                h.update(b"F%o\0" % (st.st_mode & 0o7777))
                with open(src, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    except OSError as exc:
        raise FerryError(f"{recipe.path}: copy: cannot read {exc.filename}: {exc.strerror}") from None
    return h.hexdigest()


def _write_copy_tar(recipe: ImageRecipe, out: Path) -> None:
    """A tar of the copied files, owned by root, without entries for parent dirs."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dest, src in _copy_entries(recipe):
            info = tar.gettarinfo(str(src), arcname="." + dest)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with open(src, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)


def _image_labels(tag: str) -> dict[str, str] | None:
    """Labels of local image ``tag``, or None when there is no such image."""
    proc = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.decode() or "null") or {}
    except ValueError:
        return {}


def _image_id(tag: str) -> str:
    proc = docker("image", "inspect", "--format", "{{.Id}}", tag)
    return proc.stdout.decode().strip()


def _changes(recipe: ImageRecipe, digest: str) -> list[str]:
    """The ``docker import -c`` instructions for the recipe."""
    changes = []
    env = dict(recipe.env)
    env.setdefault("PATH", DEFAULT_PATH)
    for k, v in env.items():
        changes.append(f"ENV {k}={json.dumps(v)}")
    if recipe.workdir:
        changes.append(f"WORKDIR {recipe.workdir}")
    for port in recipe.expose:
        changes.append(f"EXPOSE {port}")
    if recipe.user:
        changes.append(f"USER {recipe.user}")
    if recipe.entrypoint is not None:
        changes.append(f"ENTRYPOINT {json.dumps(recipe.entrypoint)}")
    if recipe.cmd is not None:
        changes.append(f"CMD {json.dumps(recipe.cmd)}")
    for k, v in recipe.labels.items():
        changes.append(f"LABEL {json.dumps(k)}={json.dumps(v)}")
    changes.append(f"LABEL {RECIPE_LABEL}={digest}")
    return changes


def _build_rootfs(recipe: ImageRecipe, digest: str, out: Path, console: Any) -> None:
    """Run mmdebstrap for ``recipe``, writing the rootfs tar to ``out`` atomically."""
    if shutil.which("mmdebstrap") is None:
        raise FerryError("mmdebstrap not found on the controller: apt-get install mmdebstrap")
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log")
    with tempfile.TemporaryDirectory(prefix="ferry-image-") as tmp:
        copy_tar = Path(tmp) / "copy.tar"
        _write_copy_tar(recipe, copy_tar)
        cmd = ["mmdebstrap", f"--variant={recipe.variant}", "--format=tar"]
        if _MERGED_USR_HOOKS.is_dir():
            cmd.append(f"--hook-dir={_MERGED_USR_HOOKS}")
        if recipe.packages:
            cmd.append("--include=" + ",".join(recipe.packages))
        cmd += [f"--dpkgopt={opt}" for opt in _DPKG_EXCLUDES]
        if recipe.copy:
            cmd.append(f"--customize-hook=tar-in {copy_tar} /")
        cmd.append(f"--customize-hook={_CLEANUP_HOOK}")
        cmd += [f"--customize-hook={hook}" for hook in recipe.hooks]
        cmd += [recipe.suite, "-", *recipe.mirrors]
        partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as fh, open(log_path, "wb") as log:
                proc = subprocess.run(cmd, stdout=fh, stderr=log, stdin=subprocess.DEVNULL,
                                      timeout=BUILD_TIMEOUT, cwd=tmp)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise FerryError(f"{recipe.path}: mmdebstrap took over {BUILD_TIMEOUT}s; see {log_path}") from None
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            text = log_path.read_text(errors="replace").splitlines()
            errors = [ln.strip() for ln in text if ln.startswith("E:")]
            # The first E: line is the cause (e.g. "Unable to locate package X").
            first = errors[0] if errors else (text[-1].strip() if text else
                                              f"exit status {proc.returncode}")
            raise FerryError(f"{recipe.path}: mmdebstrap failed: {first} (log: {log_path})")
        os.replace(partial, out)


def build_image(recipe: ImageRecipe, console: Any = None, force: bool = False) -> str:
    """Make sure the local Docker engine has the image for ``recipe``.

    Skips all work when the local image ``recipe.tag`` carries the label
    ``ferry.recipe=<recipe_digest(recipe)>``, and when a local image ``recipe.tag``
    has no ``ferry.recipe`` label at all: that is the real image (pulled on a machine
    with a registry), which is bundled as it is. Otherwise imports the cached rootfs tar
    ``<cache>/images/<digest>.tar``, building it with mmdebstrap first when missing
    (about 30-60 s per image with a reachable Debian mirror).

    Args:
        recipe: a loaded recipe (:func:`load_recipe`).
        console: a ``rich.console.Console`` (anything with ``.print(str)``) for progress
            lines, or None for silence.
        force: rebuild the rootfs from the archive and re-import even when up to date.

    Returns:
        The image ID, ``"sha256:<64 hex>"``.

    Raises:
        FerryError: no Docker engine or mmdebstrap, mmdebstrap failed (a package is not
            in the suite, the mirror is unreachable), docker import failed.
    """
    ensure_engine()
    digest = recipe_digest(recipe)
    lock = cache_root() / "images" / f"{digest}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:     # parallel test workers: one builds, the others wait
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not force:
            labels = _image_labels(recipe.tag)
            if labels is not None and labels.get(RECIPE_LABEL) == digest:
                _say(console, f"image {recipe.tag}: up to date ({digest[:12]})")
                return _image_id(recipe.tag)
            if labels is not None and RECIPE_LABEL not in labels:
                # pulled or built elsewhere: the real image wins over its stand-in
                _say(console, f"image {recipe.tag}: a real image is present (no {RECIPE_LABEL} label); "
                              f"stand-in not built")
                return _image_id(recipe.tag)
        tar_path = cache_root() / "images" / f"{digest}.tar"
        if force or not tar_path.is_file():
            _say(console, f"image {recipe.tag}: building rootfs with mmdebstrap "
                          f"({recipe.suite}, {', '.join(recipe.packages) or 'no extra packages'})")
            start = time.monotonic()
            _build_rootfs(recipe, digest, tar_path, console)
            _say(console, f"image {recipe.tag}: rootfs {tar_path.stat().st_size / 1e6:.0f} MB "
                          f"in {time.monotonic() - start:.0f}s")
        else:
            _say(console, f"image {recipe.tag}: importing cached rootfs {tar_path.name}")
        old_id = _image_id(recipe.tag) if _image_labels(recipe.tag) is not None else None
        args = ["import"]
        for change in _changes(recipe, digest):
            args += ["--change", change]
        args += ["--message", f"ferry stand-in image from {recipe.path.name}", str(tar_path), recipe.tag]
        docker(*args, timeout=BUILD_TIMEOUT)
        image_id = _image_id(recipe.tag)
        if old_id and old_id != image_id:
            # The previous build, now untagged; kept when a container still uses it.
            docker("image", "rm", old_id, check=False)
        _say(console, f"image {recipe.tag}: {image_id[:19]}")
        return image_id


def build_stack_images(stack_dir: Path, console: Any = None) -> dict[str, str]:
    """Build (or find up to date) the stand-in images a stack references.

    Only recipes whose ``tag`` is one of ``stack.yml``'s ``images`` are built: a recipe
    left under ``images/`` that the stack no longer uses costs nothing. A referenced tag
    no recipe of the stack builds is looked up among the other stacks' recipes (next to
    ``stack_dir``): a variant of a stack (llm-chat-swarm) uses llm-chat's stand-ins.

    Args:
        stack_dir: the stack directory; its recipes are ``stack_dir/images/*/recipe.yml``
            (built in name order).
        console: as for :func:`build_image`.

    Returns:
        ``{tag: image ID}`` for every referenced recipe; ``{}`` when the stack has none.

    Raises:
        FerryError: a bad stack.yml or recipe, two recipes with the same tag, or a
            failed build.
    """
    from ferry.model.stack import load_stack
    referenced = set(load_stack(Path(stack_dir)).images.values())
    recipes = [load_recipe(p) for p in sorted(Path(stack_dir).glob("images/*/recipe.yml"))]
    seen: dict[str, Path] = {}
    for r in recipes:
        if r.tag in seen:
            raise FerryError(f"{r.path}: tag {r.tag!r} is also built by {seen[r.tag]}")
        seen[r.tag] = r.path
    for r in recipes:
        if r.tag not in referenced:
            _say(console, f"image {r.tag}: not in {Path(stack_dir) / 'stack.yml'}'s images, not built")
    own = Path(stack_dir).resolve()
    for path in sorted(own.parent.glob("*/images/*/recipe.yml")):
        if path.parents[2] != own and (r := load_recipe(path)).tag in referenced and r.tag not in seen:
            seen[r.tag] = path
            recipes.append(r)
    return {r.tag: build_image(r, console=console) for r in recipes if r.tag in referenced}


def derive_image(base: str, tag: str, changes: list[str]) -> str:
    """Commit ``base`` with Dockerfile-style ``changes`` (``ENV K=V``, ``CMD [...]``) as
    ``tag``, without a builder: ``docker create`` + ``docker commit --change``.

    Used to make a new version of a stand-in (a backend that reports another version,
    or one that never becomes healthy) in seconds.

    Args:
        base: local image reference.
        tag: the new reference.
        changes: ``docker commit --change`` instructions.

    Returns:
        The new image ID (``sha256:...``).

    Raises:
        FerryError: ``base`` is missing or docker refused a change.
    """
    cid = docker("create", base).stdout.decode().strip()
    try:
        docker("commit", *(a for ch in changes for a in ("--change", ch)), cid, tag)
    finally:
        docker("rm", cid)
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()


def build_bundle(stack_dir: Path, dist: Path, version: str | None = None, ui: Any = None,
                 docker_settings: dict[str, Any] | None = None, sign: Path | None = None,
                 docker_static: Path | None = None, **options: Any):
    """The devkit's ``inv bundle``: build the stack's stand-in images (its recipes under
    ``images/``), then the product's bundle (:func:`ferry.controller.bundle.build_bundle`,
    same arguments and result). Blobs of the bundles this process built before, in any
    ``dist``, are linked rather than saved and compressed again (the tests build dozens
    of bundles of the same images, each into a ``dist`` of its own)."""
    from ferry.controller.bundle import build_bundle as product_build
    if (Path(stack_dir) / "images").is_dir():
        build_stack_images(stack_dir, console=ui.console if ui else None)
    options.setdefault("reuse_from", [d for d in _BUILT_INTO if d.is_dir()])
    built = product_build(stack_dir, dist, version, ui, docker_settings=docker_settings, sign=sign,
                          docker_static=docker_static, **options)
    if Path(dist) not in _BUILT_INTO:
        _BUILT_INTO.append(Path(dist))
    return built


_BUILT_INTO: list[Path] = []
"""The ``dist`` directories :func:`build_bundle` built into in this process, in order."""



def derive_image_with_files(base: str, tag: str, files: dict[str, bytes]) -> str:
    """``base`` plus ONE new layer holding ``files`` (``{absolute path in the image:
    content}``), committed as ``tag``: ``docker create``, ``docker cp``, ``docker commit``.

    Used to make "one layer changed" versions of an image (the layer-transfer tests and
    benchmarks). Returns the new image ID (``sha256:...``).

    Raises:
        FerryError: ``base`` is missing or docker refused a step.
    """
    cid = docker("create", base).stdout.decode().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path, data in files.items():
                dest = Path(tmp) / path.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            docker("cp", f"{tmp}/.", f"{cid}:/")
        docker("commit", cid, tag)
    finally:
        docker("rm", cid)
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()
