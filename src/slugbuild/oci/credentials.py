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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import errors
from ..redact import register_secrets

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")
# The server name Docker hands a helper for Docker Hub (what `docker login` stores).
_HUB_SERVER = "https://index.docker.io/v1/"
HELPER_PREFIX = "docker-credential-"
# Seconds a credential helper may take (it may ask a keychain or a cloud API).
HELPER_TIMEOUT = 30.0
# Bytes of a helper's standard output (and error) read: a JSON answer is a few hundred.
HELPER_OUTPUT_LIMIT = 1 << 20
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
    so that a helper (and anything it started) that hangs is killed whole. Its
    output is read up to HELPER_OUTPUT_LIMIT bytes per stream: a helper printing
    without end is killed, not kept in memory (HelperTooLong)."""
    with subprocess.Popen([executable, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as process:
        read = [b"", b""]
        too_long = threading.Event()

        def drain(stream: IO[bytes], slot: int) -> None:
            data = stream.read(HELPER_OUTPUT_LIMIT + 1)
            if len(data) > HELPER_OUTPUT_LIMIT:
                too_long.set()
                _kill_session(process)
            read[slot] = data[:HELPER_OUTPUT_LIMIT]

        assert process.stdin and process.stdout and process.stderr  # all three piped
        readers = [threading.Thread(target=drain, args=(stream, slot), daemon=True)
                   for slot, stream in enumerate((process.stdout, process.stderr))]
        for reader in readers:
            reader.start()
        with contextlib.suppress(OSError):  # a helper that exits without reading it
            process.stdin.write(server.encode())
            process.stdin.close()
        deadline = time.monotonic() + HELPER_TIMEOUT
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        try:
            if any(reader.is_alive() for reader in readers):
                raise subprocess.TimeoutExpired([executable, "get"], HELPER_TIMEOUT)
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_session(process)
            raise
        if too_long.is_set():
            raise HelperTooLong
    out, err = (data.decode("utf-8", "replace") for data in read)
    return subprocess.CompletedProcess([executable, "get"], process.returncode, out, err)


class HelperTooLong(Exception):
    """A credential helper printed more than HELPER_OUTPUT_LIMIT bytes (killed)."""


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)


def find_helper(program: str) -> str | None:
    """``program`` in the absolute directories of PATH, as Docker finds a helper (Go's
    exec.LookPath refuses what a relative entry, ``.`` or an empty one, finds: the
    current directory, often the app being built, must not supply the program that
    is handed registry secrets). A name that is not a plain file name is none."""
    if not program or "/" in program or "\0" in program or program in (".", ".."):
        return None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(directory):
            continue
        found = shutil.which(program, path=directory)
        if found is not None:
            return found
    return None


def run_helper(helper: str, server: str, path: Path, host: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` for ``server``'s credentials (None: it holds
    none). A helper that is missing, fails, hangs or answers what is not its
    protocol is ``registry-credentials-invalid``; its answer is never shown."""
    program = HELPER_PREFIX + helper
    where: dict[str, Any] = {"helper": program, "path": str(path), "host": host}
    executable = find_helper(program)
    if executable is None:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="helper-missing", **where)
    try:
        done = _ask(executable, server)
    except subprocess.TimeoutExpired:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason=f"it did not answer within {HELPER_TIMEOUT:g} s",
            **where) from None
    except HelperTooLong:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed",
            reason=f"it printed more than {HELPER_OUTPUT_LIMIT // 1024} KiB", **where) from None
    except OSError as exc:
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason=exc.strerror or str(exc), **where) from None
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if said and _NOT_FOUND in said[0].lower():
            return None
        first = said[0][:200] if said else "no message"
        if first.lstrip().startswith(("{", "[")):  # an answer, maybe with its secret
            _remember_any_secret(done.stdout)
            first = "its output is not shown (it looks like an answer, with a secret)"
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
    if not isinstance(user, str) or not isinstance(secret, str) or not secret \
            or not _encodable(user, secret):
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(
            variant="helper-failed", reason="its answer is not JSON with Username and Secret",
            **where)
    register_secrets([secret])
    if user == "<token>":  # an identity token: only Docker's OAuth2 exchange takes it
        raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="identity-token", **where)
    return Credentials(user, secret)


def _remember_any_secret(output: str) -> None:
    """Register the ``Secret`` of a helper's JSON answer, whatever its exit status."""
    with contextlib.suppress(ValueError, RecursionError):
        answer = json.loads(output)
        if isinstance(answer, dict) and isinstance(answer.get("Secret"), str):
            register_secrets([answer["Secret"]])


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
        if not _encodable(name, secret):
            raise errors.REGISTRY_CREDENTIALS_INVALID.error(
                variant="bad-entry", path=str(path), host=host)
        return Credentials(name, secret)
    return None


def _encodable(*texts: str) -> bool:
    """Whether every text is sendable as UTF-8 (JSON may hold lone surrogates)."""
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
