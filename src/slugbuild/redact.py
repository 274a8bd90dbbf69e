"""Keeping secrets out of everything slugbuild prints or writes.

Three kinds of text are hidden or neutralised (docs/security.md):

- credentials inside URLs: the user and password part (``https://user:token@host``,
  passwords holding ``/`` included) and the values of query parameters that sign or
  authorise a request (``?X-Amz-Signature=…``, ``?sig=…``, ``?token=…``);
- the values of the build's config vars and tokens (``register_secrets``): a config
  var can hold anything, so every value is treated as secret, whatever its name;
- control characters (escape sequences, ``\\r``, NUL...) from user data and tool
  output, which could hide or rewrite text on a terminal: shown escaped (``\\x1b``).

``mask`` applies all three; the build log (``log.Reporter``) and error messages
(``SlugbuildError.render``) go through it. ``SLUGBUILD_SHOW_SECRETS=1`` in the
environment of slugbuild itself turns off the masking of config var values (for
debugging a build on a trusted machine); URL credentials stay hidden.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable

from .envflag import env_flag

# scheme://user@ (no `/` in a bare user) or scheme://user:password@ (a password may
# hold `/`, `:` and even `@`: up to the last `@` of the word). Every repeat is
# bounded, so a long line (a 200 kB config var, a base64 blob) is scanned in
# linear time.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://)"
    r"(?:[^\s/@:?#]{1,512}|[^\s/@:?#]{0,512}:[^\s]{0,512})@"
)
# The userinfo of URLs in a value, up to the last `@` before the host.
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://([^\s@]{1,512})@")
# Query parameters whose value authorises a request.
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:[\w.-]{0,40}?(?:sig|signature|token|key|secret|password|passwd"
    r"|credential|auth|session)[\w.-]{0,40})=)[^&#\s'\"<>]*",
    re.IGNORECASE,
)
# C0 controls but tab and newline, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Values shorter than this, or these words, are not masked: hiding every "1"
# or "true" would garble the log and protects nothing.
_MIN_SECRET_LENGTH = 4
_NOT_SECRET = frozenset({"true", "false", "True", "False", "TRUE", "FALSE", "none", "None",
                         "null", "yes", "no", "on", "off"})
_MASK = "****"

_secrets: set[str] = set()
_lock = threading.Lock()


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    # Each pattern needs its literal (``://``, ``=``): most lines of a build log have
    # neither, and are not scanned (the log masks every line a tool prints).
    if "://" in text:
        text = _USERINFO.sub(r"\g<scheme>***@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\g<name>***", text)
    return text


def register_secrets(values: Iterable[object]) -> None:
    """Remember values (config vars, tokens) that must never be printed.

    The user-and-password part of a URL inside a value is remembered piece by
    piece too: a password holding an unencoded ``/`` or ``:`` makes the URL
    invalid, and a tool quoting the piece it choked on must not reveal it.
    Values that are not strings (a library caller's config) are skipped.
    """
    with _lock:
        for value in values:
            if not isinstance(value, str):
                continue
            # Each line of a multi-line value (a PEM key) too: tools print line by line.
            lines = [line.strip() for line in value.splitlines()] if "\n" in value \
                or "\r" in value else []
            for candidate in {value, value.strip(), *lines, *_credential_pieces(value)}:
                if len(candidate) >= _MIN_SECRET_LENGTH and candidate not in _NOT_SECRET:
                    _secrets.add(candidate)


def register_url_credentials(text: str) -> None:
    """Remember only the user and password pieces of the URLs in ``text``."""
    register_secrets(_credential_pieces(text))


def _credential_pieces(text: str) -> list[str]:
    pieces: list[str] = []
    for userinfo in _URL_USERINFO.findall(text):
        # The user name is no secret (and masking "user" everywhere would garble
        # the log); the password, or a bare token, is.
        secret = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo
        pieces += [userinfo, secret, *re.split(r"[:/]", secret)]
    return pieces


def forget_secrets() -> None:
    """Forget every registered value (tests; a long-lived process between builds)."""
    with _lock:
        _secrets.clear()


def showing_secrets() -> bool:
    """Whether SLUGBUILD_SHOW_SECRETS asks for config var values in clear."""
    return env_flag("SLUGBUILD_SHOW_SECRETS", unset=False, unknown=False)


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret value replaced by ``****``."""
    if not _secrets or showing_secrets():
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leak
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def escape_controls(text: str) -> str:
    """Control characters shown as ``\\xNN`` (tab and newline kept)."""
    if text.isprintable():  # every character _CONTROL matches is unprintable
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def mask(text: str) -> str:
    """What slugbuild may print of ``text``: secrets masked, controls escaped."""
    return escape_controls(redact_url(mask_secrets(text)))


def fingerprint(value: str) -> str:
    """A value's length and short hash: enough to compare it, not to read it."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"<{len(value)} chars, sha256 {digest}…>" if value else "<empty>"
