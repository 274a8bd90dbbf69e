"""Image references and registry credentials: the syntax skopeo, podman and Docker users write."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.oci.credentials import Credentials, find_credentials
from slugbuild.oci.reference import ImageReference, parse_image_reference


@pytest.mark.parametrize("text, expected", [
    ("oci:out/layout", ImageReference("oci", Path("out/layout"), None, None, None, None)),
    ("oci:/tmp/x:v1", ImageReference("oci", Path("/tmp/x"), None, None, "v1", None)),
    ("docker-archive:app.tar", ImageReference("docker-archive", Path("app.tar"), None, None,
                                              None, None)),
    ("docker-archive:app.tar:myapp", ImageReference("docker-archive", Path("app.tar"), None,
                                                    "myapp", "latest", None)),
    ("docker-archive:app.tar:localhost/my-app:1.0",
     ImageReference("docker-archive", Path("app.tar"), None, "localhost/my-app", "1.0", None)),
    ("docker://127.0.0.1:5000/team/app:v2",
     ImageReference("docker", None, "127.0.0.1:5000", "team/app", "v2", None)),
    ("docker://localhost/app", ImageReference("docker", None, "localhost", "app", None, None)),
    ("docker://registry.example.com/a/b/c@sha256:" + "a" * 64,
     ImageReference("docker", None, "registry.example.com", "a/b/c", None, "sha256:" + "a" * 64)),
    ("docker://python:3.12", ImageReference("docker", None, "docker.io", "library/python",
                                            "3.12", None)),
    ("docker://heroku/heroku:24", ImageReference("docker", None, "docker.io", "heroku/heroku",
                                                 "24", None)),
])
def test_references_parse_as_skopeo_and_docker_read_them(text: str,
                                                          expected: ImageReference) -> None:
    parsed = parse_image_reference(text)
    assert parsed == expected
    assert parse_image_reference(str(parsed)) == parsed


@pytest.mark.parametrize("text, variant", [
    ("app.tar", "scheme"),
    ("s3://bucket/app", "scheme"),
    ("docker:127.0.0.1:5000/app", "scheme"),
    ("oci:", "empty-path"),
    ("docker-archive::app", "empty-path"),
    ("oci:dir:bad tag", "tag"),
    ("docker://127.0.0.1:5000/My-App:v1", "name"),
    ("docker://127.0.0.1:5000/app-:v1", "name"),
    ("docker://127.0.0.1:5000/", "name"),
    ("docker://127.0.0.1:5000/app:" + "t" * 129, "tag"),
    ("docker://127.0.0.1:5000/app@sha256:abc", "digest"),
    ("docker://bad_host.example:5000/app", "host"),
    ("docker-archive:a.tar:app@sha256:" + "b" * 64, "digest-not-allowed"),
])
def test_invalid_references_are_one_catalogue_error(text: str, variant: str) -> None:
    with pytest.raises(errors.IMAGE_REFERENCE_INVALID.exception) as raised:
        parse_image_reference(text)
    assert raised.value.fields["variant"] == variant
    assert isinstance(raised.value, errors.RegistryError)


def _auth_file(path: Path, auths: dict[str, dict[str, str]]) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_credentials_order_and_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert find_credentials("127.0.0.1:5000") is None
    (tmp_path / ".docker").mkdir()
    token = base64.b64encode(b"dockeruser:docker:pass").decode()
    _auth_file(tmp_path / ".docker" / "config.json", {
        "127.0.0.1:5000": {"auth": token},
        "https://index.docker.io/v1/": {"username": "hubuser", "password": "hubpass"}})
    assert find_credentials("127.0.0.1:5000") == Credentials("dockeruser", "docker:pass")
    assert find_credentials("docker.io") == Credentials("hubuser", "hubpass")
    assert find_credentials("other.example") is None
    podman = _auth_file(tmp_path / "auth.json", {"http://127.0.0.1:5000/v2/": {
        "auth": base64.b64encode(b"podmanuser:p").decode()}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    assert find_credentials("127.0.0.1:5000") == Credentials("podmanuser", "p")
    assert find_credentials("127.0.0.1:5000", user="me", password="explicit") == \
        Credentials("me", "explicit")


def test_credentials_never_show_the_password(tmp_path: Path) -> None:
    found = find_credentials("r.example", user="me", password="s3cret-pw-x")
    assert "s3cret-pw-x" not in repr(found)
    error = errors.REGISTRY_UNREACHABLE.error(method="GET", url="https://r.example/v2/",
                                              reason="s3cret-pw-x leaked")
    assert "s3cret-pw-x" not in error.render()


@pytest.mark.parametrize("kwargs, variant", [
    ({"user": "me"}, "user-without-password"),
    ({"password": "pw"}, "password-without-user"),
])
def test_half_given_credentials_are_refused(kwargs: dict[str, str], variant: str) -> None:
    with pytest.raises(errors.REGISTRY_CREDENTIALS_INVALID.exception) as raised:
        find_credentials("r.example", **kwargs)
    assert raised.value.fields["variant"] == variant


def test_broken_auth_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "auth.json"
    broken.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(broken))
    with pytest.raises(errors.REGISTRY_CREDENTIALS_INVALID.exception) as raised:
        find_credentials("r.example")
    assert raised.value.fields["variant"] == "unreadable-file"
    _auth_file(broken, {"r.example": {"auth": "!!!"}})
    with pytest.raises(errors.REGISTRY_CREDENTIALS_INVALID.exception) as raised:
        find_credentials("r.example")
    assert raised.value.fields["variant"] == "bad-entry"
