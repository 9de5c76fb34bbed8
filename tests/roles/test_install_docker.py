"""install-docker-offline against the fake transport: facts in, exact commands out.

Each ``fixtures/install-docker-offline/*.yml`` is one case (pyinfra's way): the host's
answer to the ONE fact script (``facts``, and ``facts_after`` for the check after an
install), answers to other commands, the variables, check mode, and the exact argv of
every command the role runs after the facts, in order (the fact script itself is written
``FACTS``), plus the result. Placeholders in facts: ``{sha:daemon.json}``,
``{sha:docker.service}``, ``{sha:containerd.service}`` (sha256 of what the role renders
for the case's variables), ``{eid}`` (the bundle's static engine directory).

The preflight refusals below are plain tests: one line each, and no command but the
fact script.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from ferry.controller.bundle import MANIFEST, load_bundle
from ferry.errors import FerryError, HostError
from ferry.host import engine
from ferry.host.transport.fake import FakeTransport
from ferry.roles import load_role

FIXTURES = Path(__file__).parent / "fixtures" / "install-docker-offline"
ROLE = load_role("install-docker-offline")
STATIC_VERSION = "24.0.7"
BINARIES = ["containerd", "containerd-shim-runc-v2", "ctr", "docker", "docker-init", "docker-proxy",
            "dockerd", "runc"]


def _tgz() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in BINARIES:
            info = tarfile.TarInfo(f"docker/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x7fELF"))
    return raw.getvalue()


@pytest.fixture
def static_bundle(bundle):
    """The roles' test bundle plus Docker's static tarball (docker/static/docker-24.0.7.tgz)."""
    data = _tgz()
    rel = f"docker/static/docker-{STATIC_VERSION}.tgz"
    (bundle.path / rel).parent.mkdir(parents=True)
    (bundle.path / rel).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    manifest = json.loads((bundle.path / MANIFEST).read_text())
    manifest["files"].append({"path": rel, "size": len(data), "sha256": sha})
    manifest["docker"]["static"] = {
        "file": rel, "version": STATIC_VERSION, "sha256": sha, "size": len(data), "arch": "amd64",
        "uname_arch": "x86_64", "source": f"docker-{STATIC_VERSION}.tgz",
        "binaries": {b: (None if b == "docker-proxy" else STATIC_VERSION) for b in BINARIES}}
    (bundle.path / MANIFEST).write_text(json.dumps(manifest))
    return load_bundle(bundle.path)


def engine_id(b) -> str:
    static = b.manifest["docker"]["static"]
    return engine.engine_id(static["version"], static["sha256"])


def placeholders(ctx) -> dict[str, str]:
    sha = lambda data: hashlib.sha256(data).hexdigest()
    out = {"sha:daemon.json": sha(ROLE.render_daemon_json(ctx.vars))}
    static = ctx.bundle.manifest["docker"].get("static")
    if static:
        for path, data in ROLE.render_units(ctx.vars, static).items():
            out[f"sha:{Path(path).name}"] = sha(data)
        out["eid"] = engine_id(ctx.bundle)
    return out


def fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([a-z:.]+)\}", lambda m: values[m.group(1)], text)


class Host:
    """Plays the host: the fact script answers ``facts`` (then ``facts_after``), other
    commands the first matching ``answers`` entry (``once``: only the first time), else
    exit 0 with no output."""

    def __init__(self, case: dict, values: dict[str, str]):
        self.facts = [fill(case["facts"], values)]
        if case.get("facts_after"):
            self.facts.append(fill(case["facts_after"], values))
        self.answers = case.get("answers") or []

    def __call__(self, argv, data):
        if argv[:2] == ["sh", "-c"] and "v machine" in argv[2]:
            return 0, self.facts[0] if len(self.facts) == 1 else self.facts.pop(0), ""
        joined = " ".join(argv)
        for a in self.answers:
            if a["match"] in joined:
                if a.get("once"):
                    self.answers.remove(a)
                return a.get("rc", 0), a.get("out", ""), a.get("err", "")
        return 0, "", ""


def cases() -> list[Path]:
    return sorted(FIXTURES.glob("*.yml"))


@pytest.mark.parametrize("path", cases(), ids=lambda p: p.stem)
def test_fixture(path, bundle, static_bundle, make_ctx):
    case = yaml.safe_load(path.read_text())
    b = static_bundle if case["bundle"] == "static" else bundle
    ctx = make_ctx(FakeTransport(lambda a, d: (0, "", "")), check=case.get("check", False), **case.get("vars", {}))
    ctx.bundle = b
    values = placeholders(ctx)
    ctx.t = t = FakeTransport(Host(case, values))
    if case.get("error"):
        with pytest.raises(HostError, match=case["error"]):
            ROLE.preflight(ctx)
            ROLE.run(ctx)
        result = None
    else:
        ROLE.preflight(ctx)
        result = ROLE.run(ctx)
    got = [["FACTS"] if c.argv[:2] == ["sh", "-c"] and "v machine" in c.argv[2] else c.argv for c in t.calls]
    want = [c if c == ["FACTS"] else [fill(w, values) for w in c] for c in case["commands"]]
    assert got == want
    if result is not None:
        assert result.changed == case["changed"]
        assert result.summary == fill(case["summary"], values)
    for path_, name in (case.get("writes") or {}).items():
        written = next(c.input for c in t.calls if c.input and f"cat > {path_}.tmp" in c.argv[-1])
        expect = ROLE.render_daemon_json(ctx.vars) if name == "daemon.json" else \
            ROLE.render_units(ctx.vars, b.manifest["docker"]["static"])[path_]
        assert written == expect


# -- preflight refusals: one line, only the fact script ran ------------------------------

NODPKG = """machine=x86_64
kernel=6.1.0-18-amd64
os=Rocky Linux 9.3 (Blue Onyx)
dpkg_arch=
rpm=/usr/bin/rpm
systemd=yes
cgroup=v2
iptables=iptables v1.8.8 (nf_tables)
nft=/usr/sbin/nft
tar=/usr/bin/tar
gzip=/usr/bin/gzip
docker_active=inactive
containerd_active=inactive
"""
DEBIAN = NODPKG.replace("os=Rocky Linux 9.3 (Blue Onyx)", "os=Debian GNU/Linux 12 (bookworm)") \
    .replace("dpkg_arch=\n", "dpkg_arch=amd64\n").replace("rpm=/usr/bin/rpm\n", "rpm=\n")


def refuse(make_ctx, b, facts: str, **over) -> tuple[str, FakeTransport]:
    t = FakeTransport(lambda argv, data: (0, facts, ""))
    ctx = make_ctx(t, **over)
    ctx.bundle = b
    with pytest.raises(FerryError) as err:
        ROLE.preflight(ctx)
    message = str(err.value)
    assert "\n" not in message and len(t.calls) == 1, (message, t.commands())
    return message, t


def test_no_dpkg_and_no_static_engine_says_how_to_build_one(make_ctx, bundle):
    msg, _ = refuse(make_ctx, bundle, NODPKG)
    assert msg.startswith("fake-1: no dpkg on this host, so Docker must come from Docker's static tarball "
                          "(Rocky Linux 9.3 (Blue Onyx), kernel 6.1.0-18-amd64)")
    assert "inv bundle --stack llm-chat --docker-static docker-<version>.tgz" in msg
    assert "https://download.docker.com/linux/static/stable/x86_64/" in msg


@pytest.mark.parametrize("change, missing", [
    (("iptables=iptables v1.8.8 (nf_tables)", "iptables="),
     "missing an iptables command (legacy or nf_tables); /usr/sbin/nft alone is not enough for dockerd"),
    (("kernel=6.1.0-18-amd64", "kernel=2.6.32-754.el6.x86_64"), "missing kernel >= 3.10 (has 2.6.32-754.el6.x86_64)"),
    (("cgroup=v2", "cgroup="), "missing cgroups mounted (no cgroup or cgroup2 in /proc/mounts)"),
    (("systemd=yes", "systemd=no"), "missing systemd as PID 1"),
    (("tar=/usr/bin/tar", "tar="), "missing tar and gzip"),
])
def test_static_engine_requirements_named_in_one_line(make_ctx, static_bundle, change, missing):
    msg, _ = refuse(make_ctx, static_bundle, NODPKG.replace(*change))
    assert msg == f"fake-1: cannot run Docker's static engine (Rocky Linux 9.3 (Blue Onyx), kernel " \
                  f"{'2.6.32-754.el6.x86_64' if 'kernel' in missing else '6.1.0-18-amd64'}): {missing}"


def test_everything_missing_is_named_at_once(make_ctx, static_bundle):
    facts = NODPKG.replace("iptables=iptables v1.8.8 (nf_tables)", "iptables=").replace("cgroup=v2", "cgroup=") \
        .replace("systemd=yes", "systemd=no")
    msg, _ = refuse(make_ctx, static_bundle, facts)
    assert msg.endswith("missing cgroups mounted (no cgroup or cgroup2 in /proc/mounts); an iptables command "
                        "(legacy or nf_tables); /usr/sbin/nft alone is not enough for dockerd; systemd as PID 1")


def test_deb_layout_needs_no_iptables_but_systemd(make_ctx, bundle):
    facts = DEBIAN.replace("iptables=iptables v1.8.8 (nf_tables)", "iptables=").replace("systemd=yes", "systemd=no")
    msg, _ = refuse(make_ctx, bundle, facts)
    assert msg == "fake-1: cannot run Docker (Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64): " \
                  "missing systemd as PID 1"


def test_other_architecture_refused(make_ctx, static_bundle):
    msg, _ = refuse(make_ctx, static_bundle, NODPKG.replace("machine=x86_64", "machine=aarch64"))
    assert msg == "fake-1: CPU architecture is aarch64, the bundle's Docker is for x86_64: " \
                  "build the bundle for this architecture"


def test_docker_install_value_checked(make_ctx, static_bundle):
    msg, _ = refuse(make_ctx, static_bundle, NODPKG, docker_install="tarball")
    assert msg == "fake-1: docker_install: 'tarball' is not one of auto, static, deb"


def test_deb_forced_on_a_host_without_dpkg(make_ctx, static_bundle):
    msg, _ = refuse(make_ctx, static_bundle, NODPKG, docker_install="deb")
    assert msg.startswith("fake-1: docker_install is deb but this host has no dpkg (Rocky Linux 9.3")


def test_static_over_debian_docker_packages_refused(make_ctx, static_bundle):
    facts = DEBIAN + "pkg=docker.io 20.10.24+dfsg1-1+deb12u1+b6 ii \n"
    msg, _ = refuse(make_ctx, static_bundle, facts, docker_install="static")
    assert msg == "fake-1: Docker from Debian packages is installed (docker.io): the static engine would go " \
                  "over it; remove them or set docker_install: deb"


def test_static_over_a_file_a_package_owns_refused(make_ctx, static_bundle):
    msg, _ = refuse(make_ctx, static_bundle, NODPKG + "link=docker podman-docker-4.6.1-5.el9.noarch\n")
    assert msg == "fake-1: /usr/bin/docker belongs to package podman-docker-4.6.1-5.el9.noarch: the static " \
                  "engine would replace it; remove that package first"


def test_deb_over_ferrys_static_engine_refused(make_ctx, static_bundle):
    msg, _ = refuse(make_ctx, static_bundle, DEBIAN + "ferry_units=yes\n", docker_install="deb")
    assert "Ferry's static Docker engine is installed here (/usr/local/lib/docker-static)" in msg


def test_a_forged_static_entry_is_refused_when_the_bundle_is_read(static_bundle):
    """Before any connection: the manifest's schema holds the static entry's words."""
    manifest = json.loads((static_bundle.path / MANIFEST).read_text())
    manifest["docker"]["static"]["binaries"]["../../etc/passwd"] = "1"
    (static_bundle.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FerryError, match=r"key 'docker.static.binaries': '../../etc/passwd' must be a plain "
                                         r"executable name"):
        load_bundle(static_bundle.path)


def test_files_needed_per_layout(make_ctx, bundle, static_bundle):
    """What the host needs of the Docker payload: its layout's files, none when right."""
    ctx = make_ctx(FakeTransport(lambda a, d: (0, NODPKG, "")))
    ctx.bundle = static_bundle
    ROLE.preflight(ctx)
    assert ROLE.files_needed(ctx) == ["docker/docker-compose", f"docker/static/docker-{STATIC_VERSION}.tgz"]
    ready = NODPKG + f"compose=2.40.3\nstatic_dirs={engine_id(static_bundle)} \n"
    ctx = make_ctx(FakeTransport(lambda a, d: (0, ready, "")))
    ctx.bundle = static_bundle
    ROLE.preflight(ctx)
    assert ROLE.files_needed(ctx) == []
    ctx = make_ctx(FakeTransport(lambda a, d: (0, DEBIAN + "pkg=containerd 1.6.20 ii \n", "")))
    ROLE.preflight(ctx)
    assert ROLE.files_needed(ctx) == ["docker/docker-compose", "docker/debs/docker.io_20.10.24_amd64.deb"]
