"""The cache registry (issue 17): layers shared between runners through a real
CNCF Distribution registry on 127.0.0.1, and every way it can fail open.

Runner A (tests/conftest.py ``runner_a``) built the small Flask fixture with
an empty cache and pushed its layers. Runner B starts from an empty cache:
its slug is A's, byte for byte, and it installed nothing. A registry that is
down, answers 500 or 401, is cut off mid-transfer or serves a tampered blob
costs one warning; the build goes on and nothing wrong is used.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.server
import io
import json
import os
import shutil
import socketserver
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.cache_admin import local_layers
from slugbuild.cache_registry import RemoteCache, from_settings, registry_store
from slugbuild.errors import CACHE_REGISTRY_INVALID, SlugbuildError
from slugbuild.layer_artifact import (
    Artifact,
    ArtifactInvalid,
    StreamedPart,
    Transfer,
    digest_of,
    layer_tag,
    make_artifact,
    namespace,
    push_artifact,
)
from slugbuild.log import Reporter
from slugbuild.oci.options import RegistryOptions
from slugbuild.platform_info import current as current_platform
from slugbuild.records import layer_problems

from .helpers import (
    AUTH_REGISTRY_PASSWORD,
    AUTH_REGISTRY_USER,
    FIXTURE_APPS,
    assert_cache_consistent,
    fake_credential_helper,
    free_port,
    serving,
)

APP = FIXTURE_APPS / "flask-hello"
SPACE = namespace(current_platform().key)


def _build(cache: Path, out: Path, registry: str | None, **options: object):
    reporter = Reporter(quiet=True)
    result = compile_app(APP, out, cache_dir=cache, reporter=reporter, cache_registry=registry,
                         **options)
    return result, "\n".join(reporter.lines)


def _without_dependency_layer(cache_a: Path, target: Path) -> Path:
    """A runner whose cache has A's runtime (and uv's cache) but not its dependency
    layer: a miss there is cheap to build from scratch."""
    shutil.copytree(cache_a, target, symlinks=True)
    shutil.rmtree(target / "layers")
    (target / "layers").mkdir()
    return target


def _dependency_layer(cache_dir: Path):
    cache = Cache(cache_dir)
    [entry] = local_layers(cache, ("layers",))
    layer = cache.lookup("layers", entry.name, entry.key)
    assert layer is not None
    return cache, layer


# --- a loopback proxy that misbehaves -----------------------------------------------------

class _Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    mode = "pass"
    upstream = ""
    cut_after = 64 * 1024
    cut_only = ""  # cut only a download whose path holds this (a blob's digest)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "test proxy"}]}).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        mode = self.server.mode
        if mode == "hang":  # a registry that accepts and never answers
            time.sleep(30)
            return None
        if mode == "500":
            return self._answer(500)
        if mode == "401":
            return self._answer(401, {"WWW-Authenticate": 'Basic realm="test"'})
        length = int(self.headers.get("Content-Length") or 0)
        if mode == "cut-upload" and self.command == "PUT" and "/blobs/uploads/" in self.path \
                and length > self.server.cut_after:
            self.rfile.read(self.server.cut_after)
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        body = self.rfile.read(length) if length else None
        # The Host header goes as it came: the registry names upload URLs after it,
        # so the client keeps going through this proxy.
        headers = dict(self.headers.items())
        answer = requests.request(self.command, self.server.upstream + self.path, data=body,
                                  headers=headers, stream=True, allow_redirects=False,
                                  timeout=30)
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("transfer-encoding", "connection"):
                self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return None
        sent = 0
        for chunk in answer.raw.stream(16 * 1024, decode_content=False):
            if mode == "cut-download" and "/blobs/" in self.path \
                    and self.server.cut_only in self.path \
                    and sent + len(chunk) > self.server.cut_after:
                self.wfile.write(chunk[:self.server.cut_after - sent])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            self.wfile.write(chunk)
            sent += len(chunk)
        return None

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward


@pytest.fixture
def proxy(registry) -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", free_port()), _ProxyHandler)
    server.upstream = f"http://{registry.host}"
    with serving(server):
        yield server


def _via(proxy: _Proxy, repository: str) -> str:
    return f"docker://127.0.0.1:{proxy.server_address[1]}/{repository}"


# --- runner B ------------------------------------------------------------------------------

@pytest.mark.slow
def test_runner_b_pulls_what_a_pushed_same_slug_nothing_installed(
        runner_a, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_a, _, sha_a = runner_a[:3]
    reference = runner_a[3]
    assert sorted(runner_a[4]["pushed"]) == sorted(
        entry.name for entry in local_layers(Cache(cache_a), ("runtimes", "layers")))
    uploads = registry.blob_uploads()
    # Read-only, as an untrusted build would be (SLUGBUILD_CACHE_REGISTRY_READONLY).
    monkeypatch.setenv("SLUGBUILD_CACHE_REGISTRY_READONLY", "1")
    result, log = _build(tmp_path / "cache-b", tmp_path / "b.tgz", reference)
    assert result.sha256 == sha_a and result.cache_registry["readonly"] is True
    assert "Pulled the Python" in log and "Pulled the dependency layer" in log, log
    assert "Installing" not in log and "Restoring dependencies from cache" in log, log
    summary = result.cache_registry
    assert summary is not None and len(summary["pulled"]) == 2 and summary["pushed"] == []
    assert summary["bytes_received"] > 1_000_000 and summary["bytes_sent"] == 0
    assert registry.blob_uploads() == uploads
    assert_cache_consistent(tmp_path / "cache-b")
    # A third runner's second build is a plain local hit: the registry is not asked.
    again, log = _build(tmp_path / "cache-b", tmp_path / "b2.tgz", "docker://127.0.0.1:9/x")
    assert again.sha256 == sha_a and again.cache_registry["bytes_received"] == 0
    assert "could not be used" not in log


def test_two_runners_pull_the_same_key_at_once(runner_a, tmp_path: Path) -> None:
    """Two runners with empty caches pull the same layer at the same moment: each
    gets it whole, through its own verified publish."""
    results: dict[str, object] = {}

    def runner(name: str) -> None:
        results[name] = _pull_dependency_layer(runner_a, runner_a[3], tmp_path / name)

    threads = [threading.Thread(target=runner, args=(name,)) for name in ("c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("c", "d"):
        pulled, warnings, _, root = results[name]
        assert pulled is not None and warnings == []
        cache = Cache(root)
        [entry] = local_layers(cache)
        assert cache.verify(cache.lookup("layers", entry.name, entry.key), layer_problems) == []


def test_two_runners_push_the_same_key_at_once(runner_a, registry) -> None:
    """Reproducible layers: both push the same digests; the second blob push is a
    no-op, both manifests are the same bytes, the entry reads back whole."""
    _, layer = _dependency_layer(runner_a[0])
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    reference = f"docker://{registry.host}/slugbuild-cache/concurrent"
    failures: list[BaseException] = []

    def push() -> None:
        try:
            push_artifact(registry_store(reference), artifact)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert registry_store(reference).get_manifest(artifact.tag) == artifact.manifest


# --- read-only ------------------------------------------------------------------------------

def test_readonly_pushes_nothing(runner_a, registry) -> None:
    """The layers a build published: read-only pushes none of them (uploads counted);
    the same without read-only pushes them, so the count could have moved."""
    cache = Cache(runner_a[0])
    cache.published = [(entry.kind, entry.name, entry.key)
                       for entry in local_layers(cache, ("runtimes", "layers"))]
    reference = f"docker://{registry.host}/slugbuild-cache/readonly"
    uploads = registry.blob_uploads()
    readonly = RemoteCache(registry_store(reference), reference, SPACE,
                           Reporter(quiet=True), readonly=True)
    readonly.push_published(cache)
    assert readonly.summary()["pushed"] == [] and readonly.transfer.sent == 0
    assert registry.blob_uploads() == uploads
    writer = RemoteCache(registry_store(reference), reference, SPACE, Reporter(quiet=True))
    writer.push_published(cache)
    assert len(writer.pushed) == 2 and registry.blob_uploads() == uploads + 6


# --- failing open ---------------------------------------------------------------------------

def _pull_dependency_layer(runner_a, reference: str, tmp_path: Path
                           ) -> tuple[object, list[str], float, Path]:
    """RemoteCache.pull of runner A's dependency layer into an empty cache through
    ``reference``: (the layer or None, the warnings, seconds taken, the cache)."""
    _, layer = _dependency_layer(runner_a[0])
    reporter = Reporter(quiet=True)
    root = tmp_path / "pulling"
    cache = Cache(root)
    remote = RemoteCache(registry_store(reference), reference, SPACE, reporter)
    name, key = layer.path.name, layer.manifest["key"]
    started = time.monotonic()
    with cache.lock("layers", name):
        pulled = remote.pull(cache, "layers", name, key, "dependency layer", layer_problems)
    warnings = [line for line in reporter.lines if line.startswith(" !")]
    return pulled, warnings, time.monotonic() - started, root


@pytest.mark.parametrize("mode", ["500", "401", "cut-download"])
def test_a_failing_registry_is_one_warning_and_nothing_used(runner_a, proxy, mode,
                                                           tmp_path: Path) -> None:
    proxy.mode = mode
    pulled, warnings, seconds, root = _pull_dependency_layer(
        runner_a, _via(proxy, runner_a[3].split("/", 3)[3]), tmp_path)
    assert pulled is None
    assert len(warnings) == 1, warnings
    assert seconds < 60
    assert local_layers(Cache(root)) == []
    assert_cache_consistent(root)


def test_a_registry_that_never_answers_costs_a_bounded_time(runner_a, proxy, tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setattr("slugbuild.cache_registry.REQUEST_TIMEOUT", 0.5)
    proxy.mode = "hang"
    pulled, warnings, seconds, _ = _pull_dependency_layer(
        runner_a, _via(proxy, "slugbuild-cache/hang"), tmp_path)
    assert pulled is None and len(warnings) == 1, warnings
    assert seconds < 10  # three attempts of 0.5 s and the client's backoff


def test_a_registry_that_is_down(runner_a, tmp_path: Path) -> None:
    pulled, warnings, seconds, root = _pull_dependency_layer(
        runner_a, f"docker://127.0.0.1:{free_port()}/slugbuild-cache/x", tmp_path)
    assert pulled is None and len(warnings) == 1 and "could not be used" in warnings[0]
    assert seconds < 60
    assert local_layers(Cache(root)) == []


def test_push_cut_off_leaves_no_entry(runner_a, proxy, registry) -> None:
    """Killed mid-push: the manifest goes last, so readers find no entry at all."""
    _, layer = _dependency_layer(runner_a[0])
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    proxy.mode = "cut-upload"
    with pytest.raises(SlugbuildError):
        push_artifact(registry_store(_via(proxy, "slugbuild-cache/cut")), artifact)
    direct = registry_store(f"docker://{registry.host}/slugbuild-cache/cut")
    assert direct.get_manifest(artifact.tag) is None


@pytest.mark.slow
def test_tampered_blob_on_the_registry_disk(runner_a, registry, tmp_path: Path) -> None:
    """A blob changed in the registry's storage: refused with a warning, the layer is
    built here instead, and the slug is A's."""
    cache_a, _, sha_a, _, _ = runner_a
    _, layer = _dependency_layer(cache_a)
    reference = f"docker://{registry.host}/slugbuild-cache/tampered"
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    push_artifact(registry_store(reference), artifact)
    with registry.tampered(json.loads(artifact.manifest)["layers"][0]["digest"]):
        cache_b = _without_dependency_layer(cache_a, tmp_path / "b")
        result, log = _build(cache_b, tmp_path / "b.tgz", reference)
    assert result.sha256 == sha_a
    warnings = [line for line in log.splitlines() if line.startswith(" !")
                and "cache registry" in line]
    assert len(warnings) == 1, log
    assert "Installing requirements" in log


# --- credentials ----------------------------------------------------------------------------

def test_htpasswd_registry_with_and_without_credentials(runner_a, auth_registry,
                                                        tmp_path: Path, monkeypatch) -> None:
    reference = f"docker://{auth_registry.host}/slugbuild-cache/auth"
    _, layer = _dependency_layer(runner_a[0])
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    auth = tmp_path / "auth.json"
    token = base64.b64encode(f"{AUTH_REGISTRY_USER}:{AUTH_REGISTRY_PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker"))
    transfer = Transfer()
    assert push_artifact(registry_store(reference), artifact, transfer)
    pulled, warnings, _, _ = _pull_dependency_layer(runner_a, reference, tmp_path / "ok")
    assert pulled is not None and warnings == []

    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    pulled, warnings, _, root = _pull_dependency_layer(runner_a, reference, tmp_path / "no")
    assert pulled is None and len(warnings) == 1
    assert AUTH_REGISTRY_PASSWORD not in warnings[0]
    assert local_layers(Cache(root)) == []


def test_tags_stay_apart_and_bad_references_are_errors() -> None:
    assert layer_tag(SPACE, "layers", "a" * 64) != layer_tag(
        namespace("other-platform"), "layers", "a" * 64)
    for bad in ("docker://", "registry.example.com/repo", "docker://Host:1/UPPER"):
        with pytest.raises(SlugbuildError) as raised:
            registry_store(bad)
        assert raised.value.code in (CACHE_REGISTRY_INVALID.code, "image-reference-invalid")


def test_a_malformed_registry_reference_is_named_once() -> None:
    """The reference parser's reason starts with the reference; the message, which
    names the reference itself, does not repeat it."""
    from slugbuild.cache_registry import repository_of
    from slugbuild.errors import PYTHON_REGISTRY_INVALID

    for kind in (CACHE_REGISTRY_INVALID, PYTHON_REGISTRY_INVALID):
        with pytest.raises(SlugbuildError) as raised:
            repository_of("docker://bad_host!/x", kind)
        assert raised.value.code == kind.code
        assert raised.value.found.count("docker://bad_host!/x") == 1, raised.value.found
        assert "'bad_host!/x' is not a valid repository name" in raised.value.found


def test_cache_export_and_import_through_a_registry(runner_a, registry, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`cache export docker://…` pushes a whole cache; `cache import docker://…` fills an
    empty one with the entries of this platform, each verified."""
    from slugbuild.cli import main

    reference = f"docker://{registry.host}/slugbuild-cache/exported"
    assert main(["cache", "export", reference, "--cache-dir", str(runner_a[0])]) == 0
    assert "2 layer(s)" in capsys.readouterr().out
    code = main(["cache", "import", reference, "--cache-dir", str(tmp_path / "b")])
    out = capsys.readouterr()
    assert code == 0 and "Imported 2 layer(s)" in out.out, out
    assert sorted(entry.key for entry in local_layers(Cache(tmp_path / "b"))) == sorted(
        entry.key for entry in local_layers(Cache(runner_a[0]), ("runtimes", "layers")))
    assert main(["cache", "import", f"docker://127.0.0.1:{free_port()}/none",
                 "--cache-dir", str(tmp_path / "c")]) == 1
    assert "cache-command-failed" in capsys.readouterr().err


# --- one auth story: the images' credentials, auth files and helpers ------------------------

def _docker_config(tmp_path: Path, monkeypatch, document: dict[str, object]) -> Path:
    """A DOCKER_CONFIG holding ``document``, no REGISTRY_AUTH_FILE, tmp_path/bin on PATH."""
    config = tmp_path / "docker"
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text(json.dumps(document))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return config


def _push_with_credentials(runner_a, reference: str):
    """Runner A's dependency layer pushed to the htpasswd registry with the user and
    password given explicitly (no auth file); the layer."""
    _, layer = _dependency_layer(runner_a[0])
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    explicit = RegistryOptions(user=AUTH_REGISTRY_USER, password=AUTH_REGISTRY_PASSWORD)
    assert push_artifact(registry_store(reference, explicit), artifact, Transfer())
    return layer


def test_cache_commands_take_helpers_and_explicit_credentials(
        runner_a, auth_registry, tmp_path: Path, monkeypatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from slugbuild.cli import main

    reference = f"docker://{auth_registry.host}/slugbuild-cache/helped"
    fake_credential_helper(tmp_path / "bin", "fake", {
        auth_registry.host: (AUTH_REGISTRY_USER, AUTH_REGISTRY_PASSWORD)})
    _docker_config(tmp_path, monkeypatch, {"credsStore": "fake"})
    assert main(["cache", "export", reference, "--cache-dir", str(runner_a[0])]) == 0
    assert "2 layer(s)" in capsys.readouterr().out
    assert (tmp_path / "bin" / "fake.asked").read_text().split() == [auth_registry.host]

    # No helper, no entry: the user and password given as images take them.
    _docker_config(tmp_path, monkeypatch, {})
    monkeypatch.setattr("sys.stdin", io.StringIO(AUTH_REGISTRY_PASSWORD + "\n"))
    code = main(["cache", "import", reference, "--cache-dir", str(tmp_path / "b"),
                 "--registry-user", AUTH_REGISTRY_USER, "--registry-password-stdin"])
    out = capsys.readouterr()
    assert code == 0 and "Imported 2 layer(s)" in out.out, out
    assert AUTH_REGISTRY_PASSWORD not in out.out + out.err

    # A helper the config names but PATH lacks: one catalogue error, no traceback.
    _docker_config(tmp_path, monkeypatch, {"credHelpers": {auth_registry.host: "absent"}})
    assert main(["cache", "export", reference, "--cache-dir", str(runner_a[0])]) == 1
    err = capsys.readouterr().err
    assert "registry-credentials-invalid" in err and "docker-credential-absent" in err
    assert "Traceback" not in err


def test_a_build_takes_the_same_credentials_and_fails_open_on_a_broken_helper(
        runner_a, auth_registry, tmp_path: Path, monkeypatch) -> None:
    reference = f"docker://{auth_registry.host}/slugbuild-cache/build-auth"
    layer = _push_with_credentials(runner_a, reference)
    explicit = RegistryOptions(user=AUTH_REGISTRY_USER, password=AUTH_REGISTRY_PASSWORD)
    name, key = layer.path.name, layer.manifest["key"]

    _docker_config(tmp_path, monkeypatch, {"credHelpers": {auth_registry.host: "absent"}})
    for registry, pulls in ((explicit, True), (None, False)):
        reporter = Reporter(quiet=True)
        remote = from_settings(reference, True, current_platform().key, reporter, registry)
        assert remote is not None
        cache = Cache(tmp_path / f"pulled-{pulls}")
        with cache.lock("layers", name):
            pulled = remote.pull(cache, "layers", name, key, "dependency layer",
                                 layer_problems)
        warnings = [line for line in reporter.lines if line.startswith(" !")]
        assert (pulled is not None) == pulls, reporter.lines
        assert len(warnings) == (0 if pulls else 1), warnings
        if not pulls:
            assert "docker-credential-absent" in warnings[0]
    with pytest.raises(SlugbuildError) as raised:  # half given: an error, not a warning
        from_settings(reference, True, current_platform().key, Reporter(quiet=True),
                      RegistryOptions(user=AUTH_REGISTRY_USER))
    assert raised.value.code == "registry-credentials-invalid"


@pytest.mark.slow
def test_compile_registry_user_reaches_the_cache_registry(
        runner_a, auth_registry, tmp_path: Path, monkeypatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`compile --cache-registry … --registry-user U --registry-password-stdin` pulls
    from an htpasswd registry that has no entry in any auth file."""
    from slugbuild.cli import main

    reference = f"docker://{auth_registry.host}/slugbuild-cache/compile-auth"
    _push_with_credentials(runner_a, reference)
    _docker_config(tmp_path, monkeypatch, {})
    cache = _without_dependency_layer(runner_a[0], tmp_path / "cache")
    monkeypatch.setattr("sys.stdin", io.StringIO(AUTH_REGISTRY_PASSWORD))
    code = main(["compile", str(APP), "-o", str(tmp_path / "b.tgz"), "--cache-dir", str(cache),
                 "--cache-registry", reference, "--cache-registry-readonly",
                 "--registry-user", AUTH_REGISTRY_USER, "--registry-password-stdin"])
    log = capsys.readouterr().err
    assert code == 0, log
    assert "Pulled the dependency layer" in log and "Installing requirements" not in log, log
    assert AUTH_REGISTRY_PASSWORD not in log


# --- the part inflated while it arrives ---------------------------------------------------

def _inflating_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "slugbuild-inflate"]


def _counting_streams(monkeypatch: pytest.MonkeyPatch) -> list[StreamedPart]:
    """The StreamedParts the registry store makes from now on (the streamed path taken)."""
    made: list[StreamedPart] = []

    class Counted(StreamedPart):
        def __init__(self, limit: int) -> None:
            super().__init__(limit)
            made.append(self)

    monkeypatch.setattr("slugbuild.cache_registry.StreamedPart", Counted)
    return made


def _with_member_changed(artifact: Artifact) -> Artifact:
    """The artifact a lying pusher makes: every blob matches its digest, but one byte
    of a file in its part differs from what its index (and so slug.json) says."""
    raw = bytearray(gzip.decompress(artifact.part))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = next(m for m in tar.getmembers() if m.isreg() and m.size > 100)
    raw[member.offset_data + 50] ^= 0x20
    part = gzip.compress(bytes(raw), 6, mtime=0)
    manifest = json.loads(artifact.manifest)
    manifest["layers"][0].update(digest=digest_of(part), size=len(part))
    return dataclasses.replace(artifact, part=part,
                               manifest=json.dumps(manifest, sort_keys=True).encode())


@pytest.mark.slow
def test_a_part_unlike_its_index_is_refused_as_it_streams(runner_a, registry, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A part whose member bytes differ from the index, inflated while it arrives:
    refused with one warning, nothing published; and a build given that entry builds
    the layer itself and makes A's slug."""
    cache_a, _, sha_a, _, _ = runner_a
    _, layer = _dependency_layer(cache_a)
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    reference = f"docker://{registry.host}/slugbuild-cache/member-changed"
    push_artifact(registry_store(reference), _with_member_changed(artifact))
    made = _counting_streams(monkeypatch)
    pulled, warnings, _, root = _pull_dependency_layer(runner_a, reference, tmp_path)
    assert pulled is None and made, "the part was not streamed"
    assert len(warnings) == 1 and "content differs from the layer index" in warnings[0], \
        warnings
    assert local_layers(Cache(root)) == []
    assert_cache_consistent(root)
    assert _inflating_threads() == []
    cache_b = _without_dependency_layer(cache_a, tmp_path / "b")
    result, log = _build(cache_b, tmp_path / "b.tgz", reference)
    assert result.sha256 == sha_a and "Installing requirements" in log, log
    assert result.cache_registry["pulled"] == [] and not result.cache_registry["failed"]
    assert_cache_consistent(cache_b)


def test_a_registry_dying_mid_part_fails_open_once(runner_a, proxy, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection cut in the middle of the part being inflated: every attempt
    starts over on a fresh stream, then one warning; nothing published, no thread
    left inflating."""
    _, layer = _dependency_layer(runner_a[0])
    artifact = make_artifact(layer, SPACE)
    assert artifact is not None
    proxy.mode = "cut-download"
    proxy.cut_only = digest_of(artifact.part)
    proxy.cut_after = len(artifact.part) // 2
    made = _counting_streams(monkeypatch)
    pulled, warnings, _, root = _pull_dependency_layer(
        runner_a, _via(proxy, runner_a[3].split("/", 3)[3]), tmp_path)
    assert pulled is None and len(made) == 3  # the client's three attempts
    assert len(warnings) == 1 and "could not be used" in warnings[0], warnings
    assert local_layers(Cache(root)) == []
    assert_cache_consistent(root)
    assert _inflating_threads() == []


def _gzip_members(*payloads: bytes) -> bytes:
    return b"".join(gzip.compress(payload, 6, mtime=0) for payload in payloads)


@pytest.fixture(params=["installed", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The inflater slugbuild found (ISA-L where installed), and zlib, its fallback."""
    if request.param == "zlib":
        monkeypatch.setattr("slugbuild.layer_artifact._decompressobj", zlib.decompressobj)
    return str(request.param)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_a_streamed_part_inflates_every_member_across_chunks(chunk: int, inflater: str) -> None:
    payloads = [os.urandom(5000), b"a" * 70000, b"", b"tail"]
    blob = _gzip_members(*payloads)
    streamed = StreamedPart(limit=sum(map(len, payloads)))
    for at in range(0, len(blob), chunk):
        streamed.write(blob[at:at + chunk])
    streamed.close()
    part, tar_bytes = streamed.result()
    assert part == blob and bytes(tar_bytes) == b"".join(payloads)


@pytest.mark.parametrize("blob, problem", [
    (_gzip_members(b"x" * 10_001), "unpacks to more than its index holds"),
    (_gzip_members(b"x" * 5000)[:-9], "truncated"),
    # zlib objects to the first byte, ISA-L waits for a whole header: either refuses.
    (_gzip_members(b"x" * 5000) + b"not gzip", "unreadable|truncated"),
])
def test_a_streamed_part_past_its_limit_or_broken_is_refused(blob: bytes, problem: str,
                                                            inflater: str) -> None:
    streamed = StreamedPart(limit=10_000)
    for at in range(0, len(blob), 1000):
        streamed.write(blob[at:at + 1000])
    streamed.close()
    with pytest.raises(ArtifactInvalid, match=problem):
        streamed.result()


def test_an_aborted_stream_stops_its_thread() -> None:
    streamed = StreamedPart(limit=1 << 20)
    streamed.write(gzip.compress(b"x" * 1000)[:20])
    streamed.abort()
    assert _inflating_threads() == []


def test_a_streamed_part_can_be_written_as_a_tree(runner_a, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SLUGBUILD_PART_ONLY=0: the tree is written from the bytes inflated as they
    arrived, each file checked against the index; the layer is whole."""
    monkeypatch.setenv("SLUGBUILD_PART_ONLY", "0")
    made = _counting_streams(monkeypatch)
    pulled, warnings, _, root = _pull_dependency_layer(runner_a, runner_a[3], tmp_path)
    assert pulled is not None and warnings == [] and made
    cache = Cache(root)
    [entry] = local_layers(cache)
    layer = cache.lookup("layers", entry.name, entry.key)
    assert layer is not None and not layer.lazy and (layer.path / "tree").is_dir()
    assert cache.verify(layer, layer_problems) == []
    assert_cache_consistent(root)
