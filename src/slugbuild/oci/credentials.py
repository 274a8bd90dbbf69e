"""Registry credentials from the places Docker and podman users already keep them.

One story for every registry slugbuild talks to (images, run images, the cache
registry). In order: the user and password given explicitly
(``--registry-user`` and ``--registry-password-stdin``), the auth file named by
``REGISTRY_AUTH_FILE`` (podman, skopeo, buildah), then Docker's ``config.json``
(``$DOCKER_CONFIG`` or ``~/.docker``). In each file: a credential helper named
for the host (``credHelpers[HOST]``), then the host's ``auths`` entry
(``auth``: base64 of ``USER:PASSWORD``, or ``username`` / ``password``; ``HOST``
may be written as a URL, ``https://index.docker.io/v1/``, as ``docker login``
does for Docker Hub), then the file's default helper (``credsStore``). A helper
is run as Docker runs it: ``docker-credential-NAME get``, the server on
standard input, JSON (``Username``, ``Secret``) on standard output; one that
does not know the server lets the search go on (docs/images.md, Credentials).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..redact import register_secrets

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")
# The server name Docker hands a helper for Docker Hub (what `docker login` stores).
_HUB_SERVER = "https://index.docker.io/v1/"
HELPER_PREFIX = "docker-credential-"
# Seconds a credential helper may take (it may ask a keychain or a cloud API).
HELPER_TIMEOUT = 30.0
# What helpers print (exit status 1) for a server they hold nothing for.
_NOT_FOUND = "credentials not found"


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
    explicit = explicit_credentials(user, password)
    if explicit is not None:
        return explicit
    for path in auth_files():
        found = _from_auth_file(path, host)
        if found is not None:
            return _remembered(found)
    return None


def explicit_credentials(user: str | None, password: str | None) -> Credentials | None:
    """The user and password given on the command line or to the API (None: neither);
    one without the other is ``registry-credentials-invalid``."""
    if user is None and password is None:
        return None
    if not user:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="password-without-user")
    if not password:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="user-without-password",
                                                        user=user)
    return _remembered(Credentials(user, password))


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
    if not isinstance(document, dict):
        return None
    wanted = _host_keys(host)
    helpers = document.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _entry_host(str(key)) in wanted and isinstance(helper, str) and helper:
                found = run_helper(helper, _server(str(key), host), path, host)
                if found is not None:
                    return found
    auths = document.get("auths")
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if isinstance(entry, dict) and _entry_host(str(key)) in wanted:
                found = _entry_credentials(entry, path, host)
                if found is not None:
                    return found
    store = document.get("credsStore")
    if isinstance(store, str) and store:
        return run_helper(store, _server(None, host), path, host)
    return None


def _server(key: str | None, host: str) -> str:
    """What a helper is asked for: the key as the file writes it, else the host
    (Docker Hub: the URL ``docker login`` stores it under)."""
    if key:
        return key
    return _HUB_SERVER if host.lower() in _HUB_KEYS else host


def _ask(executable: str, server: str) -> subprocess.CompletedProcess[str]:
    """``executable get`` with ``server`` on standard input, in a session of its own
    so that a helper (and anything it started) that hangs is killed whole."""
    with subprocess.Popen([executable, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace",
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(server, timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess([executable, "get"], process.returncode, out, err)


def run_helper(helper: str, server: str, path: Path, host: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` for ``server``'s credentials (None: it holds
    none). A helper that is missing, fails, hangs or answers what is not its
    protocol is ``registry-credentials-invalid``; its answer is never shown."""
    program = HELPER_PREFIX + helper
    where: dict[str, Any] = {"helper": program, "path": str(path), "host": host}
    executable = shutil.which(program) if "/" not in helper else None
    if executable is None:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="helper-missing", **where)
    try:
        done = _ask(executable, server)
    except subprocess.TimeoutExpired:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason=f"it did not answer within {HELPER_TIMEOUT:g} s",
            **where) from None
    except OSError as exc:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason=exc.strerror or str(exc), **where) from None
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if said and _NOT_FOUND in said[0].lower():
            return None
        first = said[0][:200] if said else "no message"
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason=f"exit status {done.returncode}: {first}",
            **where)
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason="its answer is not JSON with Username and Secret",
            **where) from None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason="its answer is not JSON with Username and Secret",
            **where)
    register_secrets([secret])
    if user == "<token>":  # an identity token: only Docker's OAuth2 exchange takes it
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="identity-token", **where)
    return Credentials(user, secret)


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
