"""Registry credentials from the places Docker and podman users already keep them.

In order: the user and password given explicitly (``--registry-user`` and
``--registry-password-stdin``), the auth file named by ``REGISTRY_AUTH_FILE``
(podman, skopeo, buildah), then Docker's ``config.json`` (``$DOCKER_CONFIG`` or
``~/.docker``). An entry is ``auths[HOST].auth`` (base64 of ``USER:PASSWORD``)
or ``auths[HOST].username`` / ``.password``; ``HOST`` may be written as a URL
(``https://index.docker.io/v1/``), as ``docker login`` does for Docker Hub.
Credential helpers (``credsStore``) are not run: docs/images.md says so.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..redact import register_secrets

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry; repr hides the password."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='****')"


def find_credentials(host: str, *, user: str | None = None,
                     password: str | None = None) -> Credentials | None:
    """The credentials for ``host`` (``HOST[:PORT]``), or None when none are configured.

    The password found is registered as a secret, so no log line or error
    message can show it.
    """
    if user is not None or password is not None:
        if not user:
            raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="password-without-user")
        if not password:
            raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="user-without-password",
                                                            user=user)
        return _remembered(Credentials(user, password))
    for path in auth_files():
        found = _from_auth_file(path, host)
        if found is not None:
            return _remembered(found)
    return None


def auth_files() -> list[Path]:
    """The auth files looked at, in order (those that exist)."""
    candidates: list[Path] = []
    named = os.environ.get("REGISTRY_AUTH_FILE")
    if named:
        candidates.append(Path(named))
    docker_config = os.environ.get("DOCKER_CONFIG")
    candidates.append(Path(docker_config) / "config.json" if docker_config
                      else Path.home() / ".docker" / "config.json")
    return [path for path in candidates if path.is_file()]


def _remembered(credentials: Credentials) -> Credentials:
    register_secrets([credentials.password])
    return credentials


def _from_auth_file(path: Path, host: str) -> Credentials | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            "it is not JSON" if isinstance(exc, (ValueError, RecursionError)) else str(exc)
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="unreadable-file", path=str(path), reason=reason) from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = _host_keys(host)
    for key, entry in auths.items():
        if isinstance(entry, dict) and _entry_host(str(key)) in wanted:
            return _entry_credentials(entry, path, host)
    return None


def _host_keys(host: str) -> set[str]:
    host = host.lower()
    return set(_HUB_KEYS) if host in _HUB_KEYS else {host}


def _entry_host(key: str) -> str:
    """The ``HOST[:PORT]`` of an auths key: ``https://host/v1/`` and ``host/ns`` alike."""
    key = key.strip().lower()
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0]


def _entry_credentials(entry: dict[str, Any], path: Path, host: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise errors.REGISTRY_CREDENTIALS_INVALID.error(
                variant="bad-entry", path=str(path), host=host) from None
        user, colon, password = decoded.partition(":")
        if not colon or not user:
            raise errors.REGISTRY_CREDENTIALS_INVALID.error(
                variant="bad-entry", path=str(path), host=host)
        return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return Credentials(name, secret)
    return None
