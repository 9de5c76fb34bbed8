"""The adversarial operator, on the controller (no Docker, no sandbox host): kinds of bad
input that must be refused in ONE line before any connection, and host answers that must
never become a traceback.

"Before any connection" is measured, not assumed: every inventory host is a **tripwire**,
a TCP listener on 127.0.0.1 that counts the connections it gets (an SSH login would have
to start with one). The first test is the control: a good deploy reaches the tripwire
(and fails there in one line naming the host, with no paramiko traceback), so a refusal
that leaves the count at zero is one that never tried a host. The command line runs
in-process (``ferry.cli.main``), as the user runs it.

The kinds tried here are the ones no other test proves; the README's Reliability table
lists every kind with the test that proves it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import cli
from ferry.controller.bundle import seal
from ferry.errors import FerryError
from ferry.host import answers, audit, containers, files, lock, releases
from ferry.host import backup as host_backup
from ferry.host.transport.fake import FakeTransport
from ferry.model.manifest import CHECKSUMS, MANIFEST, checksums_text
from ferry.model.paths import HostPaths

ROOT = Path(__file__).resolve().parents[2]
LLM_CHAT = ROOT / "stacks" / "llm-chat"
DOCKER = {"docker": "20.10.24+dfsg1-1+deb12u1", "compose": "2.40.3", "arch": "amd64", "uname_arch": "x86_64",
          "packages": {"docker.io": "20.10.24+dfsg1-1+deb12u1", "containerd": "1.6.20~ds1-1+b1"},
          "compose_sha256": "c" * 64}


class Tripwire:
    """A TCP listener that counts the connections it accepts (and closes them at once)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()


@pytest.fixture(scope="module")
def tripwire():
    t = Tripwire()
    yield t
    t.sock.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tripwire):
    """An inventory whose hosts are the tripwire, a key, an empty known_hosts, an
    allowed-signers file, and a bundle of llm-chat (images stand in as bytes: nothing
    here reaches a host)."""
    d = tmp_path_factory.mktemp("adversary")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", str(d / "id_ed25519")],
                   check=True)
    (d / "known_hosts").write_text("")
    (d / "allowed_signers").write_text(f"release@example.org {(d / 'id_ed25519.pub').read_text()}")
    inventory(d, "inventory.yml", {}, tripwire)
    bundle(d / "dist")
    return d


def inventory(d: Path, name: str, extra: dict, tripwire: Tripwire) -> Path:
    """``d/name``: hosts ``victim`` and ``witness`` (group prod), both the tripwire;
    ``extra`` are victim's variables."""
    host = {"ansible_host": "127.0.0.1", "ansible_port": tripwire.port, "ferry_connect_timeout": 5}
    data = {"all": {"vars": {"ansible_user": "root", "ansible_ssh_private_key_file": "id_ed25519",
                             "ferry_known_hosts": "known_hosts"},
                    "children": {"prod": {"hosts": {"victim": {**host, **extra}, "witness": dict(host)}}}}}
    (d / name).write_text(yaml.safe_dump(data))
    return d / name


def bundle(dist: Path, edit=None, tamper=None, name: str = "llm-chat-1.0.0") -> Path:
    """A sealed llm-chat bundle in ``dist``; ``edit(root, manifest)`` changes it before
    sealing (a bundle built from an edited stack), ``tamper(manifest)`` after it, and the
    manifest and ``checksums.sha256`` are then rewritten to match, as a tamperer would."""
    root = dist / name
    (root / "images").mkdir(parents=True)
    (root / "images" / "nginx_1.22.tar").write_bytes(b"layers" * 1000)
    (root / "docker").mkdir()
    (root / "docker" / "docker-compose").write_bytes(b"ELF")
    shutil.copytree(LLM_CHAT, root / "stack", ignore=shutil.ignore_patterns("images"))
    manifest = {"format": 1, "stack": "llm-chat", "version": "1.0.0", "docker": json.loads(json.dumps(DOCKER)),
                "images": [{"service": "nginx", "ref": "nginx:1.22", "id": "sha256:" + "e" * 64,
                            "tags": ["nginx:1.22"], "size": 6000, "file": "images/nginx_1.22.tar"}]}
    if edit:
        edit(root, manifest)
    seal(root, manifest)
    if tamper:
        manifest = json.loads((root / MANIFEST).read_text())
        tamper(manifest)
        (root / MANIFEST).write_text(json.dumps(manifest))
        (root / CHECKSUMS).write_text(checksums_text(manifest, hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()))
    return root


@pytest.fixture
def ferry(workdir, tripwire, capsys, monkeypatch):
    """``ferry(*argv, inventory=...)`` -> ``(exit status, stderr, connections made)``:
    the ``ferry`` command in-process against the tripwire inventory."""
    monkeypatch.setenv("FERRY_PROJECT", str(ROOT))
    monkeypatch.setenv("FERRY_CACHE_DIR", str(workdir / "cache"))

    def run(*argv: str, inventory: Path | None = None) -> tuple[int, str, int]:
        before = tripwire.hits
        capsys.readouterr()
        try:
            cli.main(["ferry", *argv, "-i", str(inventory or workdir / "inventory.yml")])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, capsys.readouterr().err, tripwire.hits - before
    return run


def refused_before_any_connection(result, *needles: str) -> str:
    """Exit 1, one ``error:`` line holding every needle, no traceback, no connection."""
    code, err, hits = result
    line = err.strip()
    assert code == 1 and "Traceback" not in err and len(line.splitlines()) == 1, err
    assert line.startswith("error: "), line
    for n in needles:
        assert n in line, line
    assert hits == 0, f"{hits} connections were made before: {line}"
    return line


def deploy(ferry, workdir, *extra, bundle_dir=None, inventory=None):
    return ferry("deploy", "--host", "prod", "--bundle", str(bundle_dir or workdir / "dist" / "llm-chat-1.0.0"),
                 *extra, inventory=inventory)


# -- the control --------------------------------------------------------------------------

def test_control_a_good_deploy_reaches_the_hosts_and_fails_there_in_one_line(ferry, workdir):
    """The harness can see a connection: with nothing wrong, both hosts are tried. A port
    that is not sshd fails in one line naming the host (paramiko's own traceback, which
    its thread used to print on stderr, stays out of the output)."""
    code, err, hits = deploy(ferry, workdir)
    assert code == 1 and hits >= 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: victim: SSH to 127.0.0.1:") or err.startswith("error: witness: SSH to"), err


# -- variables the typed check lets through ------------------------------------------------

@pytest.mark.parametrize("root", ["/", "/etc", "/opt", "/usr", "/var", "/root", "/var/lib"])
def test_ferry_root_that_is_a_system_directory_is_refused(ferry, workdir, tripwire, root):
    """An absolute, tidy ``ferry_root`` can still be the wrong one: ``/etc`` would get
    ``/etc/store``, ``/etc/stacks`` and ``/etc/audit.log``, and uninstall could never take
    them off again. From ``--set`` and from the inventory."""
    refused_before_any_connection(deploy(ferry, workdir, "--set", f"ferry_root={root}"),
                                  "--set: key 'ferry_root' (host victim)", f"{root!r} is / or a system directory")
    inv = inventory(workdir, f"root{root.replace('/', '-')}.yml", {"ferry_root": root}, tripwire)
    refused_before_any_connection(deploy(ferry, workdir, inventory=inv),
                                  f"{inv}:", "key 'ferry_root' (host victim)", "system directory")


@pytest.mark.parametrize("option,value", [("--lock-wait", "1e400"), ("--lock-wait", ".inf"),
                                          ("--max-fail", "nan"), ("--max-fail", "-.inf")])
def test_infinite_numbers_are_refused(ferry, workdir, option, value):
    """``1e400`` is a float Python reads as infinity: ``--lock-wait 1e400`` would wait
    forever for a lock."""
    refused_before_any_connection(deploy(ferry, workdir, option, value), f"error: {option}: ", "must be a number")


def test_an_infinite_variable_is_refused(ferry, workdir):
    refused_before_any_connection(deploy(ferry, workdir, "--set", "compose_wait_timeout=.inf"),
                                  "key 'compose_wait_timeout'", "'inf' must be an integer")


# -- who may sign a bundle ------------------------------------------------------------------

def test_signers_from_the_inventory_cannot_be_lifted_by_set_or_by_the_bundle(ferry, workdir, tripwire):
    """With ``ferry_bundle_signers`` in the inventory, an unsigned bundle stays refused
    whatever ``--set`` says, and whatever the bundle's own stack defaults say."""
    inv = inventory(workdir, "signed.yml", {"ferry_bundle_signers": "allowed_signers"}, tripwire)
    for sets in ([], ["--set", "ferry_bundle_signers="], ["--set", "ferry_bundle_signers=/dev/null"]):
        refused_before_any_connection(deploy(ferry, workdir, *sets, inventory=inv),
                                      "bundle is not signed", "ferry_bundle_signers is set")

    def lift(root, manifest):
        with open(root / "stack" / "defaults.yml", "a") as f:
            f.write("\nferry_bundle_signers: {default: '', help: 'no signature needed'}\n")
    b = bundle(workdir / "dist-lift", lift)
    refused_before_any_connection(deploy(ferry, workdir, bundle_dir=b, inventory=inv), "bundle is not signed")
    (b / "manifest.json.sig").write_text("-----BEGIN SSH SIGNATURE-----\ngarbage\n-----END SSH SIGNATURE-----\n")
    refused_before_any_connection(deploy(ferry, workdir, bundle_dir=b, inventory=inv),
                                  "manifest.json.sig", "not signed by any key in")


# -- the manifest --------------------------------------------------------------------------

def _docker(**changes):
    def edit(manifest):
        for k, v in changes.items():
            if v is None:
                manifest["docker"].pop(k)
            else:
                manifest["docker"][k] = v
    return edit


@pytest.mark.parametrize("edit,needles", [
    (_docker(uname_arch=None), ["key 'docker'", "'uname_arch' is a required property"]),
    (_docker(packages={"docker.io; rm -rf /": "1"}), ["key 'docker.packages'", "must be a Debian package name"]),
    (_docker(packages={"docker.io": "1 $(id)"}), ["key 'docker.packages.docker.io'", "must be a Debian version"]),
    (_docker(arch="../amd64"), ["key 'docker.arch'", "must be an architecture name"]),
    (_docker(compose="2.40.3\n"), ["key 'docker.compose'", "must be a version like 2.40.3"]),
], ids=["payload-key-missing", "package-name", "package-version", "arch", "compose-version"])
def test_a_docker_payload_that_would_reach_host_commands_is_checked(ferry, workdir, tmp_path, edit, needles):
    """The manifest's ``docker`` section names packages, versions and architectures the
    install role compares with host facts and puts into host commands; a manifest without
    them used to pass the schema and fail with a KeyError traceback on the host."""
    b = bundle(tmp_path / "dist", tamper=edit)
    refused_before_any_connection(deploy(ferry, workdir, bundle_dir=b), f"{b / 'manifest.json'}: ", *needles)


def test_a_manifest_nested_a_hundred_thousand_deep_is_one_line(ferry, workdir, tmp_path):
    b = bundle(tmp_path / "dist")
    (b / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    refused_before_any_connection(deploy(ferry, workdir, bundle_dir=b), "manifest.json: malformed manifest")


# -- options that name things on a host -------------------------------------------------------

@pytest.mark.parametrize("value", ["../../../etc/shadow", "/var/backups/ferry/llm-chat/x.ferry-backup.tar",
                                   "latest --no-safety-backup", "llm-chat-20261122T020000Z/../x", "uni-load-20261122T020000Z",
                                   "llm-chat-20261122T020000Z\n"])
def test_restore_backup_that_is_no_backup_id_is_refused(ferry, value):
    """``inv restore --backup`` is checked before connecting: it used to be resolved on the
    host after the lock was taken and the backup program installed (a changed host and a
    'failed' audit line for a typo), and a path there was read as an archive."""
    refused_before_any_connection(ferry("restore", "--host", "victim", f"--backup={value}"),
                                  f"--backup {value!r}: not a backup of llm-chat")


# -- host answers ----------------------------------------------------------------------------

GARBAGE = ["", "garbage", '{"since": "x", "who": 1}', '{"since": 1e999}', "{", "[1, 2", "null", "[]", "{}", "[1]", '["x"]', '[{"State": 3, "Config": []}]',
           '[{"NetworkSettings": {"Ports": {"80/tcp": [{"HostPort": "http"}]}}}]', '{"a": 1}\n[', "\x00\xff",
           "a\tb\tc\n\t\t", "\n\n", "---\n- x", "ok=1\nx", '{"Service": 1, "Publishers": "x"}', "[" * 5000]


def _parsers():
    paths = HostPaths("/opt/ferry", "llm-chat", "llm-chat-1.0.0")
    text = {"parse_compose_ps": containers.parse_compose_ps, "parse_inspect": containers.parse_inspect,
            "parse_project_state": containers.parse_project_state, "parse_host_facts": containers.parse_host_facts,
            "parse_images": containers.parse_images, "parse_up_dry_run": containers.parse_up_dry_run,
            "parse_config_hashes": containers.parse_config_hashes, "audit.parse": audit.parse,
            "parse_lines": files.parse_lines, "parse_sizes": files.parse_sizes, "parse_links": files.parse_links,
            "parse_kv": host_backup.parse_kv, "parse_backup_list": host_backup.parse_backup_list,
            "parse_status": host_backup.parse_status, "parse_current_release": host_backup.parse_current_release,
            "parse_compose_config": lambda t: host_backup.parse_compose_config(t, "h"),
            "lock info": lambda t: lock.describe(lock.parse_info(t))}
    raw = {"parse_tar": files.parse_tar, "parse_releases": releases.parse_releases,
           "parse_host": releases.parse_host,
           "parse_schedule_status": lambda b: host_backup.parse_schedule_status(b, paths, "/l"),
           "json_file": lambda b: answers.json_file({"release.json": b}, "release.json")}
    return text, raw


TEXT_PARSERS, BYTES_PARSERS = _parsers()


def _tar(members: dict[str, bytes]) -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _answered(parse, answer) -> None:
    """The parser returns, or refuses in one line; anything else is a traceback."""
    try:
        parse(answer)
    except FerryError as exc:
        assert "\n" not in str(exc), str(exc)


@pytest.mark.parametrize("name", sorted(TEXT_PARSERS))
def test_a_host_answering_garbage_text_never_causes_a_traceback(name):
    """A host whose ``docker`` prints garbage, whose Compose is another version, whose
    files were edited by hand: every parser of host output reads it or refuses it with
    one line (:class:`ferry.host.answers.AnswerError`)."""
    for g in GARBAGE:
        _answered(TEXT_PARSERS[name], g)


@pytest.mark.parametrize("name", sorted(BYTES_PARSERS))
def test_a_host_answering_garbage_bytes_or_tar_never_causes_a_traceback(name):
    """Tar streams cut short or not tar at all, and releases whose ``release.json`` or
    ``manifest.json`` is not what Ferry wrote (a full disk, a hand edit)."""
    rid = "releases/20261122T000000Z-1.0.0"
    answers_ = [g.encode("utf-8", "surrogateescape") for g in GARBAGE]
    for doc in GARBAGE:
        for member in ("release.json", "manifest.json"):
            tar = _tar({f"{rid}/{member}": doc.encode()})
            answers_ += [tar, tar[:700], b"current\n" + tar, b"releases/x\n" + tar]
    answers_ += [_tar({f"stacks/llm-chat/{rid}/manifest.json": b'{"images": [1]}',
                       "bundles/b/manifest.json": b"[[["})]
    for a in answers_:
        _answered(BYTES_PARSERS[name], a)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["State", "Config", "Labels", "NetworkSettings", "Ports", "Health",
                                                "Status", "HostPort", "Name", "Id", "RestartCount", "ExitCode",
                                                "Service", "Publishers", "IPAM", "Subnet", "images", "files",
                                                "id", "sha256", "80/tcp", "com.docker.compose.service"]),
                               inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values, name=st.sampled_from(sorted(TEXT_PARSERS) + ["releases", "inspect-section"]))
def test_json_of_any_shape_from_a_host_never_causes_a_traceback(doc, name):
    """Well-formed JSON of the wrong shape (hypothesis): ``docker inspect`` whose
    ``State`` is a list, a ``HostPort`` that is no number, a release manifest whose images
    are numbers..."""
    text = json.dumps(doc)
    if name == "releases":
        _answered(releases.parse_releases,
                  b"x\n" + _tar({"releases/20261122T000000Z-1/manifest.json": text.encode(),
                                 "releases/20261122T000000Z-1/release.json": text.encode()}))
    elif name == "inspect-section":
        _answered(containers.parse_host_facts, f"==containers\n[{text}]\n==networks\n[{text}]\n==sockets\n")
    else:
        _answered(TEXT_PARSERS[name], text)


def test_a_host_answer_is_reported_naming_the_host():
    """Per-host code turns an :class:`AnswerError` into a :class:`HostError` of its host."""
    with pytest.raises(FerryError) as exc:
        with answers.on_host("web-1"):
            containers.parse_inspect("[garbage")
    assert str(exc.value) == "web-1: docker inspect: the host's answer is not JSON: '[garbage'"



def test_an_answer_no_parser_can_use_names_the_host_that_gave_it():
    """Any action: an :class:`AnswerError` leaving the hosts' block is put on the host
    whose command was answered last on that thread (one host: that one)."""
    from ferry.host.session import open_hosts
    hosts = [type("H", (), {"name": n})() for n in ("web-1", "web-2")]
    fakes = {n: FakeTransport(lambda argv, data: (0, "[garbage", ""), host=n) for n in ("web-1", "web-2")}
    with pytest.raises(FerryError) as exc:
        with open_hosts(hosts, lambda h: {}, lambda n, v: HostPaths("/opt/ferry", "s", ""),
                        lambda h: fakes[h.name]) as sessions:
            sessions[0].t.run(["true"])
            containers.parse_inspect(sessions[1].t.run(["docker", "inspect", "x"]).out)
    assert str(exc.value) == "web-2: docker inspect: the host's answer is not JSON: '[garbage'"
