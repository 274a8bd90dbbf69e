"""Docker credential helpers (``credHelpers``, ``credsStore``) in the auth files, run
as Docker runs them; every failure is one catalogue error that never shows a secret.
The cache registry's use of the same story: tests/test_cache_registry.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.oci import credentials
from slugbuild.oci.credentials import Credentials, find_credentials

from ..helpers import docker_home, fake_credential_helper

HOST = "127.0.0.1:5000"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with an empty ~/.docker, no REGISTRY_AUTH_FILE, and bin/ first on PATH."""
    return docker_home(tmp_path, monkeypatch.setenv,
                       lambda name: monkeypatch.delenv(name, raising=False))


def _config(home: Path, document: dict[str, object]) -> Path:
    path = home / ".docker" / "config.json"
    path.write_text(json.dumps(document))
    return path


def _basic(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_helpers_and_their_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credential_helper(home / "bin", "store", {
        HOST: ("store-user", "store-secret"),
        "https://index.docker.io/v1/": ("hub-user", "hub-secret")})
    fake_credential_helper(home / "bin", "ecr", {HOST: ("AWS", "ecr-token")})
    _config(home, {"credsStore": "store", "auths": {HOST: {}}})
    assert find_credentials(HOST) == Credentials("store-user", "store-secret")
    assert find_credentials("docker.io") == Credentials("hub-user", "hub-secret")
    assert find_credentials("other.example") is None  # the helper knows nothing of it
    asked = (home / "bin" / "store.asked").read_text().splitlines()
    assert asked == [HOST, "https://index.docker.io/v1/", "other.example"]

    # A helper named for the host wins over the file's entry and its default helper; an
    # entry with credentials wins over the default helper.
    _config(home, {"credsStore": "store", "credHelpers": {HOST: "ecr"},
                   "auths": {HOST: _basic("file-user", "file-pw"),
                             "other.example": _basic("other", "pw")}})
    assert find_credentials(HOST) == Credentials("AWS", "ecr-token")
    assert find_credentials("other.example") == Credentials("other", "pw")
    # REGISTRY_AUTH_FILE comes first, helpers included; explicit credentials before all.
    podman = home / "auth.json"
    podman.write_text(json.dumps({"credHelpers": {HOST: "store"}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    assert find_credentials(HOST) == Credentials("store-user", "store-secret")
    assert find_credentials(HOST, user="me", password="pw") == Credentials("me", "pw")
    # A helper that holds nothing for the host lets the search go on.
    podman.write_text(json.dumps({"credHelpers": {"other.example": "ecr"}}))
    assert find_credentials(HOST) == Credentials("AWS", "ecr-token")


@pytest.mark.parametrize("body, variant, shown", [
    (None, "helper-missing", "no program of that name is on PATH"),
    ("echo 'error getting credentials: keychain locked' >&2\nexit 3\n", "helper-failed",
     "exit status 3: error getting credentials: keychain locked"),
    ("echo '{\"Username\": \"u\", \"Secret\": \"s3cret-in-half'\n", "helper-failed",
     "its answer is not JSON with Username and Secret"),
    ("sleep 5 & wait\n", "helper-failed", "it did not answer within 0.5 s"),
    ("printf '%s' '{\"Username\": \"<token>\", \"Secret\": \"s3cret-identity\"}'\n",
     "identity-token", "only Docker's OAuth2 token exchange"),
])
def test_a_helper_that_cannot_answer_is_one_error(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  body: str | None, variant: str,
                                                  shown: str) -> None:
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT", 0.5)
    if body is not None:
        fake_credential_helper(home / "bin", "broken", {}, body=body)
    config = _config(home, {"credHelpers": {HOST: "broken"}})
    with pytest.raises(errors.REGISTRY_CREDENTIALS_INVALID.exception) as raised:
        find_credentials(HOST)
    assert raised.value.fields["variant"] == variant
    rendered = raised.value.render()
    assert shown in rendered and "docker-credential-broken" in rendered
    assert str(config) in rendered and "s3cret" not in rendered
    assert isinstance(raised.value, errors.RegistryError)
