"""The registry client against a real Distribution registry on 127.0.0.1.

Basic auth is the registry's own htpasswd; the bearer-token path goes through a
small token proxy in front of the same registry (what Docker Hub, GHCR, Harbor
and GitLab answer): a token service that checks basic credentials and a /v2/
that wants its tokens.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from slugbuild import errors
from slugbuild.oci.credentials import Credentials
from slugbuild.oci.registry import BlobLimit, RegistryClient, is_loopback, parse_challenge

from ..helpers import (
    AUTH_REGISTRY_PASSWORD,
    AUTH_REGISTRY_USER,
    RegistryServer,
    free_port,
    serving,
)

TOKEN_USER, TOKEN_PASSWORD = "tokenuser", "token-pass-71b"
LIMIT = BlobLimit(1 << 20, "a test blob")  # every blob these tests pull is far smaller


@pytest.fixture(autouse=True)
def _no_waiting_between_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RegistryClient, "retry_delay", staticmethod(lambda attempt: 0.0))


def _blob(text: str) -> tuple[bytes, str]:
    data = text.encode() * 100
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(config: str, layer: str, size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer, "size": size}],
    }, sort_keys=True).encode()


def test_push_pull_mount_and_manifests(registry: RegistryServer, tmp_path: Path) -> None:
    data, digest = _blob("layer-one")
    before = registry.blob_uploads()
    with RegistryClient(registry.host, "client/one") as client:
        client.ping()
        assert not client.has_blob(digest)
        assert client.push_blob(data, digest, len(data)) is True
        assert client.has_blob(digest)
        # Pushed again: HEAD only.
        assert client.push_blob(data, digest, len(data)) is False
        assert client.stats.blobs_uploaded == 1 and client.stats.bytes_uploaded == len(data)
        assert client.get_manifest("v1") is None
        body = _manifest(digest, digest, len(data))
        oci_manifest = "application/vnd.oci.image.manifest.v1+json"
        manifest_digest = client.put_manifest("v1", body, oci_manifest)
        assert manifest_digest == "sha256:" + hashlib.sha256(body).hexdigest()
        assert client.get_manifest("v1") == (body, oci_manifest, manifest_digest)
        assert client.get_manifest(manifest_digest) is not None
    assert registry.blob_uploads() == before + 1
    mounts = registry.blob_mounts()
    with RegistryClient(registry.host, "client/two") as other:
        # Another repository of the same registry: mounted, no bytes sent.
        source = tmp_path / "blob"
        source.write_bytes(data)
        assert other.push_blob(source, digest, len(data), mount_from="client/one") is False
        assert other.stats.blobs_mounted == 1 and other.stats.bytes_uploaded == 0
        target = tmp_path / "pulled" / "blob"
        other.pull_blob(digest, target, limit=LIMIT)
        assert target.read_bytes() == data
        assert other.stats.bytes_downloaded == len(data)
    assert registry.blob_uploads() == before + 1
    assert registry.blob_mounts() == mounts + 1


def test_a_file_blob_is_streamed_and_checked_by_the_registry(registry: RegistryServer,
                                                             tmp_path: Path) -> None:
    data, digest = _blob("streamed")
    source = tmp_path / "layer"
    source.write_bytes(data + b"changed")
    with RegistryClient(registry.host, "client/streamed") as client:
        with pytest.raises(errors.REGISTRY_DIGEST_MISMATCH.exception) as raised:
            client.push_blob(source, digest, len(data) + 7)
        assert raised.value.fields["variant"] == "refused"
        assert not client.has_blob(digest)


def test_a_tampered_blob_is_never_kept(registry: RegistryServer, tmp_path: Path) -> None:
    data, digest = _blob("to-tamper")
    with RegistryClient(registry.host, "client/tampered") as client:
        client.push_blob(data, digest, len(data))
        stored = next((registry.root / "storage").rglob(f"{digest[7:]}/data"))
        stored.write_bytes(b"evil" + data[4:])
        target = tmp_path / "out" / "blob"
        with pytest.raises(errors.REGISTRY_DIGEST_MISMATCH.exception) as raised:
            client.pull_blob(digest, target, limit=LIMIT)
        assert "has the digest sha256:" in raised.value.found
        assert list(target.parent.iterdir()) == []


def test_basic_auth(auth_registry: RegistryServer, tmp_path: Path) -> None:
    data, digest = _blob("basic-auth")
    good = Credentials(AUTH_REGISTRY_USER, AUTH_REGISTRY_PASSWORD)
    with RegistryClient(auth_registry.host, "auth/app", credentials=good) as client:
        client.ping()
        assert client.push_blob(data, digest, len(data))
        client.pull_blob(digest, tmp_path / "blob", limit=LIMIT)
    with RegistryClient(auth_registry.host, "auth/app") as anonymous:
        with pytest.raises(errors.REGISTRY_AUTH_REFUSED.exception) as raised:
            anonymous.has_blob(digest)
        assert raised.value.fields["variant"] == "no-credentials"
    wrong = Credentials(AUTH_REGISTRY_USER, "wrong-password-123")
    with RegistryClient(auth_registry.host, "auth/app", credentials=wrong) as client:
        with pytest.raises(errors.REGISTRY_AUTH_REFUSED.exception) as raised:
            client.ping()
        rendered = raised.value.render()
        assert "wrong-password-123" not in rendered and "401" in rendered


class _TokenProxy(http.server.ThreadingHTTPServer):
    """A token service plus a /v2/ that wants its bearer tokens, forwarding to a registry."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tokens: dict[str, str] = {}  # token -> the scopes it was given for
        self.scopes_asked: list[str] = []
        super().__init__(("127.0.0.1", self.port), _TokenHandler)


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: _TokenProxy

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"",
                headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _token(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        expected = "Basic " + base64.b64encode(f"{TOKEN_USER}:{TOKEN_PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._answer(401, b'{"details": "bad credentials"}')
            return
        scopes = " ".join(query.get("scope", []))
        self.server.scopes_asked.append(scopes)
        token = f"tok-{len(self.server.tokens)}-{'x' * 20}"
        self.server.tokens[token] = scopes
        self._answer(200, json.dumps({"token": token}).encode())

    def _forward(self) -> None:
        if self.path.startswith("/token"):
            self._token()
            return
        authorization = self.headers.get("Authorization", "")
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        repository = self.path.split("/")[2] + "/" + self.path.split("/")[3] \
            if self.path.count("/") > 3 else ""
        needed = "push" if self.command in ("POST", "PUT", "PATCH") else "pull"
        granted = self.server.tokens.get(token)
        if granted is None or (repository and f"repository:{repository}:" not in granted) or \
                (needed == "push" and "push" not in granted):
            scope = f',scope="repository:{repository}:{needed}"' if repository else ""
            self._answer(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {
                "WWW-Authenticate": f'Bearer realm="http://{self.server.host}/token",'
                                    f'service="test-registry"{scope}'})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in ("authorization", "host", "content-length")}
        answer = requests.request(self.command, f"http://{self.server.upstream}{self.path}",
                                  data=body, headers=headers, allow_redirects=False, timeout=30)
        passed = {name: value.replace(self.server.upstream, self.server.host)
                  for name, value in answer.headers.items()
                  if name.lower() not in ("content-length", "transfer-encoding", "connection")}
        self._answer(answer.status_code, answer.content, passed)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _forward


@pytest.fixture
def token_proxy(registry: RegistryServer) -> Iterator[_TokenProxy]:
    proxy = _TokenProxy(registry.host)
    with serving(proxy):
        yield proxy


def test_bearer_tokens(token_proxy: _TokenProxy, tmp_path: Path) -> None:
    data, digest = _blob("bearer")
    credentials = Credentials(TOKEN_USER, TOKEN_PASSWORD)
    with RegistryClient(token_proxy.host, "bearer/app", credentials=credentials) as client:
        assert client.push_blob(data, digest, len(data))
        body = _manifest(digest, digest, len(data))
        client.put_manifest("v1", body, "application/vnd.oci.image.manifest.v1+json")
        assert client.get_manifest("v1") is not None
        client.pull_blob(digest, tmp_path / "blob", limit=LIMIT)
    assert any("repository:bearer/app:pull,push" in asked for asked in token_proxy.scopes_asked)
    with RegistryClient(token_proxy.host, "bearer/app") as anonymous:
        with pytest.raises(errors.REGISTRY_AUTH_REFUSED.exception) as raised:
            anonymous.has_blob(digest)
        assert raised.value.fields["variant"] == "no-credentials"
    wrong = Credentials(TOKEN_USER, "not-the-token-pass")
    with RegistryClient(token_proxy.host, "bearer/app", credentials=wrong) as client:
        with pytest.raises(errors.REGISTRY_AUTH_REFUSED.exception) as raised:
            client.has_blob(digest)
        assert raised.value.fields["variant"] == "token"
        assert "not-the-token-pass" not in raised.value.render()


def test_unreachable_registry_is_one_error_within_bounds() -> None:
    port = free_port()  # nothing listens there
    with RegistryClient(f"127.0.0.1:{port}", "none/app", timeout=2) as client:
        with pytest.raises(errors.REGISTRY_UNREACHABLE.exception) as raised:
            client.ping()
    assert raised.value.fields["variant"] == "retried"
    assert "Connection refused" in raised.value.found
    started = time.monotonic()
    with RegistryClient(f"127.0.0.1:{port}", "none/app", attempts=1) as once:
        with pytest.raises(errors.REGISTRY_UNREACHABLE.exception) as raised:
            once.has_blob("sha256:" + "0" * 64)
    assert raised.value.fields.get("variant") is None
    assert time.monotonic() - started < 5


def test_not_a_registry_is_a_protocol_error(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    with serving(server), \
            RegistryClient(f"127.0.0.1:{server.server_address[1]}", "x/y") as client:
        with pytest.raises(errors.REGISTRY_PROTOCOL.exception):
            client.ping()


def test_plain_http_only_for_loopback_or_insecure() -> None:
    assert RegistryClient("127.0.0.1:5000", "a").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("localhost:5000", "a").base_url == "http://localhost:5000"
    assert RegistryClient("[::1]:5000", "a").base_url == "http://[::1]:5000"
    assert RegistryClient("registry.example.com", "a").base_url == "https://registry.example.com"
    assert RegistryClient("docker.io", "library/python").base_url == \
        "https://registry-1.docker.io"
    assert RegistryClient("10.0.0.5:5000", "a", insecure=True).base_url == "http://10.0.0.5:5000"
    assert is_loopback("127.0.0.7") and not is_loopback("127.example.com")


def test_challenge_parsing() -> None:
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                           'scope="repository:a/b:pull,push"') == ("bearer", {
                               "realm": "https://auth.example/token", "service": "reg",
                               "scope": "repository:a/b:pull,push"})
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


class _Failing(http.server.BaseHTTPRequestHandler):
    """A registry whose blob store is broken: every answer but /v2/ is a 500."""

    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        _Failing.seen.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/v2/":
            status, headers = 200, {}
        elif self.command == "POST":
            status, headers = 202, {"Location": "/v2/x/y/blobs/uploads/1"}
        elif self.command == "HEAD":
            status, headers = 404, {}
        else:
            status, headers = 500, {}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = _answer


def test_server_errors_retry_reads_but_never_uploads(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    data, digest = _blob("failing")
    with serving(server):
        with RegistryClient(f"127.0.0.1:{server.server_address[1]}", "x/y") as client:
            _Failing.seen.clear()
            with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
                client.get_manifest("v1")
            assert raised.value.fields["variant"] == "retried"
            assert _Failing.seen == ["GET"] * 3
            _Failing.seen.clear()
            with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
                client.push_blob(data, digest, len(data))
            assert _Failing.seen == ["HEAD", "POST", "PUT"]  # the upload is not repeated
            with pytest.raises(errors.REGISTRY_PROTOCOL.exception):
                client.pull_blob(digest, tmp_path / "blob", limit=LIMIT)
            assert not (tmp_path / "blob").exists()


class _Sink:
    """A BlobSink that records what happened to it."""

    def __init__(self) -> None:
        self.data = b""
        self.state = "open"

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def close(self) -> None:
        self.state = "closed"

    def abort(self) -> None:
        self.state = "aborted"


def test_a_streamed_blob_is_closed_only_when_it_matches(registry: RegistryServer) -> None:
    """read_blob: the right bytes close the sink; other bytes, or more than the size
    declared, abort it and are a digest mismatch (nothing past the size is kept)."""
    data, digest = _blob("streamed")
    sinks: list[_Sink] = []

    def sink() -> _Sink:
        sinks.append(_Sink())
        return sinks[-1]

    with RegistryClient(registry.host, "client/streamed") as client:
        client.push_blob(data, digest, len(data))
        client.read_blob(digest, len(data), sink)
        assert (sinks[-1].data, sinks[-1].state) == (data, "closed")
        with pytest.raises(errors.REGISTRY_DIGEST_MISMATCH.exception):
            client.read_blob(digest, len(data) - 1, sink)  # the registry sends more
        assert sinks[-1].state == "aborted" and len(sinks[-1].data) < len(data)
        stored = next((registry.root / "storage").rglob(f"{digest[7:]}/data"))
        stored.write_bytes(b"evil" + data[4:])
        with pytest.raises(errors.REGISTRY_DIGEST_MISMATCH.exception):
            client.read_blob(digest, len(data), sink)
        assert sinks[-1].state == "aborted"
        stored.write_bytes(data)
        # A sibling (another thread's client) reads the same repository, counted together.
        before = client.stats.blobs_downloaded
        client.sibling().read_blob(digest, len(data), sink)
        assert sinks[-1].state == "closed" and client.stats.blobs_downloaded == before + 1
