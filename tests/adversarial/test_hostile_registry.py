"""A registry that may be hostile (the cache registry, a run image's registry): its
answers are bounded in size and parsed without recursion limits, so a crafted answer
is one registry error (a cache registry then fails open), never a traceback or
gigabytes of memory; credentials never follow a redirect to another host."""

from __future__ import annotations

import base64
import http.server
import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.cache_registry import readonly_from_env
from slugbuild.oci.commands import read_password
from slugbuild.oci.credentials import Credentials
from slugbuild.oci.image import OCI_MANIFEST, read_image
from slugbuild.oci.reference import parse_image_reference

from ..helpers import serving
from .fakes import HUGE, client, endless, fixed, server


@pytest.mark.parametrize("status", [200, 500])
def test_an_endless_answer_is_refused_within_bounded_memory(status: int) -> None:
    with serving(server(endless(status))) as made:
        tracemalloc.start()
        try:
            with pytest.raises(errors.RegistryError):
                client(made).list_tags()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 24 << 20, f"{peak >> 20} MiB held for a {HUGE >> 20} MiB answer"


@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000,
                                  b'{"errors": ' + b"[" * 100000 + b"]" * 100000 + b"}"])
def test_deeply_nested_answers_are_a_registry_error(body: bytes) -> None:
    for status in (200, 500):
        with serving(server(fixed(status, body, {"Content-Type": "application/json"}))) \
                as made:
            with pytest.raises(errors.RegistryError):
                client(made).list_tags()


def test_a_deeply_nested_token_answer_is_a_registry_error() -> None:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/token"):
            return fixed(200, b"[" * 100000 + b"]" * 100000)(handler)
        port = handler.server.server_address[1]
        return fixed(401, b"{}", {"WWW-Authenticate":
                                  f'Bearer realm="http://127.0.0.1:{port}/token"'})(handler)
    with serving(server(answer)) as made, pytest.raises(errors.RegistryError):
        client(made).list_tags()


def test_credentials_do_not_follow_a_redirect_to_another_host() -> None:
    with serving(server(fixed(200, b'{"tags": []}'))) as elsewhere:
        target = f"http://localhost:{elsewhere.server_address[1]}/v2/app/tags/list"

        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            if not handler.headers.get("Authorization"):
                return fixed(401, b"{}", {"WWW-Authenticate": 'Basic realm="r"'})(handler)
            return fixed(307, b"", {"Location": target})(handler)
        with serving(server(answer)) as made:
            assert client(made, credentials=Credentials("me", "hunter2-secret")).list_tags() \
                == []
            assert made.seen_authorization[-1].startswith("Basic ")
    assert elsewhere.seen_authorization == [""]


@pytest.mark.parametrize("digest", ["sha256:../../../../etc/passwd", "../x", None, 7])
def test_a_manifest_with_a_malformed_digest_is_image_unreadable(tmp_path: Path,
                                                                digest: object) -> None:
    # The digest names a file under the blob directory and a registry path: checked first.
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"digest": digest, "size": 2}, "layers": []}).encode()
    answer = fixed(200, manifest, {"Content-Type": OCI_MANIFEST})
    with serving(server(answer)) as made:
        reference = parse_image_reference(f"docker://127.0.0.1:{made.server_address[1]}"
                                          f"/app:latest")
        with pytest.raises(errors.SlugbuildError) as raised:
            read_image(reference, blob_dir=tmp_path / "blobs")
    assert raised.value.code == errors.IMAGE_UNREADABLE.code
    assert not (tmp_path / "blobs").exists() or list((tmp_path / "blobs").iterdir()) == []


@pytest.mark.parametrize("password", ["pässwörd", "ключ-токен", "p\u2028w"])
def test_a_password_outside_latin1_reaches_a_token_realm_as_utf8(password: str) -> None:
    # requests encodes a str pair as Latin-1: a UnicodeEncodeError (an internal error)
    # for any other password, where Docker and the Basic path send UTF-8.
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/token"):
            return fixed(200, b'{"token": "t"}')(handler)
        if handler.headers.get("Authorization") == "Bearer t":
            return fixed(200, b'{"tags": []}')(handler)
        port = handler.server.server_address[1]
        return fixed(401, b"{}", {"WWW-Authenticate":
                                  f'Bearer realm="http://127.0.0.1:{port}/token"'})(handler)
    with serving(server(answer)) as made:
        assert client(made, credentials=Credentials("me", password)).list_tags() == []
    sent = base64.b64encode(f"me:{password}".encode()).decode()
    assert f"Basic {sent}" in made.seen_authorization


@pytest.mark.parametrize(("stdin", "reason"), [
    (b"x" * (70 * 1024), "longer than 64 KiB"),
    (b"\xff\xfe-not-utf8\n", "not UTF-8"),
    (b"pass\0word\n", "NUL"),
])
def test_a_password_on_stdin_that_cannot_be_one_is_one_clear_error(
        tmp_path: Path, stdin: bytes, reason: str) -> None:
    # `yes | slugbuild ... --registry-password-stdin` read everything into memory; bytes
    # that are not UTF-8 became surrogates that failed where the password was sent.
    done = subprocess.run(
        [sys.executable, "-m", "slugbuild", "cache", "export", "docker://127.0.0.1:9/x",
         "--cache-dir", str(tmp_path / "cache"), "--registry-user", "ci",
         "--registry-password-stdin"], input=stdin, capture_output=True, timeout=60)
    assert done.returncode != 0
    stderr = done.stderr.decode()
    assert "registry-credentials-invalid" in stderr and reason in stderr
    assert "Traceback" not in stderr
    assert not any(shown in stderr for shown in ("xxxxxxxx", "-not-utf8", "pass\0word"))


def test_one_trailing_newline_is_dropped_from_the_stdin_password() -> None:
    assert read_password(io.TextIOWrapper(io.BytesIO("tökén\r\n".encode()))) == "tökén"
    assert read_password(io.StringIO("a b\n")) == "a b"


@pytest.mark.parametrize("timeout", ["nan", "-1", "-0.5"])
def test_a_registry_timeout_that_is_not_seconds_is_invalid_limit(tmp_path: Path,
                                                                 timeout: str) -> None:
    # requests raised ValueError for these: an internal error after the build's work.
    done = subprocess.run(
        [sys.executable, "-m", "slugbuild", "cache", "export", "docker://127.0.0.1:9/x",
         "--cache-dir", str(tmp_path / "cache"), "--registry-timeout", timeout],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "invalid-limit" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("timeout", [0, float("inf"), 1e10])
def test_a_registry_timeout_of_none_or_beyond_a_socket_is_no_limit(timeout: float) -> None:
    # socket.settimeout(inf or 1e10) is an OverflowError: such a limit is "none".
    with serving(server(fixed(200, b'{"tags": ["a"]}'))) as made:
        assert client(made, timeout=timeout).list_tags() == ["a"]


@pytest.mark.parametrize(("value", "readonly"), [
    ("1", True), ("true", True), ("on", True), ("y", True), ("ture", True), (" YES ", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_the_readonly_variable_fails_safe(value: str, readonly: bool) -> None:
    # It guards untrusted builds: only an explicit no lets them push ("on" used to).
    assert readonly_from_env(value) is readonly
