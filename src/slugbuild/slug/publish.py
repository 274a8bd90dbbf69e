"""``slugbuild publish``: deploy a slug to a Heroku app through the Platform API.

Three requests, as Heroku documents "Creating Slugs from Scratch":
create the slug (process types, ``SHA256:`` checksum, stack, description),
PUT the tarball to the blob URL the API returns, then create a release of
that slug. The token comes from HEROKU_API_KEY and is never printed. Then,
like `git push heroku`, the release phase is followed: the release command's
output is printed from the release's ``output_stream_url`` and the release is
polled until its status is no longer "pending" (``follow_release``).

The API and the blob store are outside slugbuild's control, so:
- the whole publish has a deadline (``timeout``, default 15 minutes), enforced
  on each request as a whole, so a server that answers one byte every few
  seconds cannot keep it waiting forever;
- connection failures, 429 and 5xx answers are retried (with backoff, within the
  deadline) where a retry cannot do harm: creating the slug object (an unused
  one is harmless) and the upload (a PUT). Creating the release is retried only
  when the request never left (no connection) or was refused unprocessed (429);
- every answer is checked for the fields used next, and one that lacks them is
  a ``publish-bad-response`` error that says whether a release may exist;
- what is printed never holds the token, credentials in ``--api-url`` or the
  signature of the upload URL (``redact``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import requests
import urllib3

from .. import errors
from ..arguments import PathArg, as_path, invalid
from ..log import Reporter
from ..redact import redact_url, register_secrets, register_url_credentials
from ..release import BUILDPACK_DESCRIPTION
from ..slug_size import report, size_limit
from .inspect import describe_slug

DEFAULT_API_URL = "https://api.heroku.com"
ACCEPT = "application/vnd.heroku+json; version=3"
DEFAULT_TIMEOUT = 900.0  # seconds for the whole publish (SLUGBUILD_PUBLISH_TIMEOUT)
MAX_TIMEOUT = 7 * 24 * 3600.0
API_CALL_TIMEOUT = 120.0  # at most this for one API request (the upload has the rest)
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # silence between two reads
RETRY_DELAYS = (1.0, 3.0, 9.0)  # waits before the 2nd, 3rd and 4th attempt
MAX_RETRY_AFTER = 30.0
MAX_RESPONSE_BYTES = 1024 * 1024  # an API answer is a few hundred bytes
RELEASE_POLL_SECONDS = 2.0  # between two looks at a pending release's status
_HEROKU_STACK = re.compile(r"^heroku-[0-9]+$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,1000}$")  # printable ASCII, no spaces
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")



class _Deadline:
    """When the publish must be over, and how long it was given."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


class _DeadlinePassed(Exception):
    """The request did not finish before the publish's deadline."""


class _TooLarge(Exception):
    """The answer is far larger than any Platform API object."""


@errors.user_errors
def publish_slug(
    slug: PathArg,
    app: str,
    *,
    api_url: str | None = None,
    token: str | None = None,
    stack: str | None = None,
    reporter: Reporter | None = None,
    timeout: float | None = None,
    max_slug_size: int | str | None = None,
) -> dict[str, Any]:
    """Create slug, upload it, release it; return the release object from the API.

    A slug whose compressed size exceeds ``max_slug_size`` (else
    $SLUGBUILD_MAX_SLUG_SIZE, else Heroku's 500 MB) is refused before any request:
    Heroku would refuse it after the upload.

    ``timeout`` bounds the whole publish, in seconds (default
    $SLUGBUILD_PUBLISH_TIMEOUT or 900).
    """
    slug = as_path(slug, "publish_slug", "slug")
    if not isinstance(app, str):
        raise invalid("publish_slug", "app", app, "is not an app name", "a Heroku app's name")
    reporter = reporter or Reporter()
    token = token or os.environ.get("HEROKU_API_KEY")
    if not token:
        raise errors.PUBLISH_NO_TOKEN.error()
    register_secrets([token])
    if not _TOKEN.match(token):
        # requests would quote the header, token included, in its complaint.
        raise errors.PUBLISH_BAD_TOKEN.error()
    if not _APP_NAME.match(app):
        raise errors.PUBLISH_BAD_APP.error(app=app)
    description = describe_slug(Path(slug))  # process types from inside the slug
    if description["layout"] != "heroku":
        raise errors.PUBLISH_WRONG_LAYOUT.error(path=slug)
    cap = size_limit(max_slug_size, "heroku")
    if cap.limit and description["size"] > cap.limit:
        report(Path(slug), "heroku", cap, reporter)  # raises slug-too-large, with the breakdown
    base = _api_base(api_url or os.environ.get("SLUGBUILD_HEROKU_API_URL") or DEFAULT_API_URL)
    deadline = _Deadline(_timeout_seconds(timeout))
    session = requests.Session()
    session.headers.update({"Accept": ACCEPT, "Authorization": f"Bearer {token}"})
    apps = f"{base}/apps/{urllib.parse.quote(app, safe='')}"

    body: dict[str, Any] = {
        "process_types": description["process_types"],
        "checksum": description["checksum"],
        "buildpack_provided_description": BUILDPACK_DESCRIPTION,
    }
    chosen_stack = stack or description.get("stack")
    if chosen_stack and _HEROKU_STACK.match(chosen_stack):
        body["stack"] = chosen_stack
    elif chosen_stack:
        reporter.warn(f"Stack {chosen_stack!r} is not a Heroku stack; the app's stack is used.")
    reporter.step(f"Creating slug on {app}")
    created = _call(session, "POST", f"{apps}/slugs", deadline, reporter, json=body,
                    retry="always")
    slug_id, blob_method, blob_url = _slug_fields(created, f"{apps}/slugs")
    register_secrets(_url_secrets(blob_url))

    reporter.step(f"Uploading {description['size']:,} bytes")
    # An empty Content-Type, as the signed upload URL expects; no token goes there.
    _call(requests, blob_method, blob_url, deadline, reporter, upload=Path(slug),
          headers={"Content-Type": ""}, expect_json=False, retry="always")

    reporter.step(f"Releasing slug {slug_id}")
    release = _call(session, "POST", f"{apps}/releases", deadline, reporter,
                    json={"slug": slug_id}, retry="unsent", releasing=app)
    if not isinstance(release, dict) or not isinstance(release.get("id"), str):
        raise errors.PUBLISH_BAD_RESPONSE.error(
            variant="no-release-id", method="POST", url=_shown(f"{apps}/releases"),
            answer=_kind_of(release), app=app)
    release = follow_release(session, f"{apps}/releases", release, deadline, reporter, app)
    version = release.get("version")
    reporter.detail(f"Released v{version if isinstance(version, int) else '?'} of {app}")
    return release


def follow_release(session: requests.Session, releases: str, release: dict[str, Any],
                   deadline: _Deadline, reporter: Reporter, app: str) -> dict[str, Any]:
    """Follow the release phase, as `git push heroku` does: print the release command's
    output from the release's ``output_stream_url`` as it arrives, then poll the release
    until its status is no longer "pending". A failed release phase is
    ``publish-release-failed``; the release object is returned once it succeeded (or
    when the API says nothing of a status, as for an app without a release command)."""
    stream = release.get("output_stream_url")
    if isinstance(stream, str) and urllib.parse.urlsplit(stream).scheme in ("http", "https"):
        register_secrets(_url_secrets(stream))
        reporter.step("Running release command...")
        _stream_output(stream, deadline, reporter)
    url = f"{releases}/{urllib.parse.quote(release['id'], safe='')}"
    waited = False
    while release.get("status") == "pending":
        if not waited:
            reporter.step("Waiting for release...")
            waited = True
        time.sleep(min(RELEASE_POLL_SECONDS, max(deadline.remaining(), 0)))
        answer = _call(session, "GET", url, deadline, reporter, retry="always", releasing=app)
        if not isinstance(answer, dict) or answer.get("id") != release["id"]:
            raise errors.PUBLISH_BAD_RESPONSE.error(
                variant="no-release-id", method="GET", url=_shown(url),
                answer=_kind_of(answer), app=app)
        release = answer
    status = release.get("status")
    if isinstance(status, str) and status not in ("succeeded", "pending"):
        version = release.get("version")
        raise errors.PUBLISH_RELEASE_FAILED.error(
            app=app, status=status[:40], version=version if isinstance(version, int) else "?")
    return release


def _stream_output(url: str, deadline: _Deadline, reporter: Reporter) -> None:
    """Print the release output stream line by line until it ends (or the deadline:
    then the status poll reports the timeout). It is fetched without the token, as
    the signed upload URL is; a stream that cannot be read is a warning, not an
    error: the release's status still says how the release phase went."""
    shown = _shown(url)
    try:
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, min(
                READ_TIMEOUT, max(deadline.remaining(), 0.1)))) as response:
            if response.status_code >= 400:
                reporter.warn(f"The release output at {shown} answered "
                              f"{response.status_code}; following the release's status.")
                return
            for line in response.iter_lines(decode_unicode=False):
                reporter.detail(line.decode("utf-8", "replace").rstrip())
                if deadline.remaining() <= 0:
                    return
    except requests.RequestException as exc:
        reporter.warn(f"The release output could not be read ({_reason(exc, url, shown)}); "
                      f"following the release's status.")


def _api_base(url: str) -> str:
    """The API base URL, checked; its credentials (if any) registered as secrets."""
    register_url_credentials(url)  # the URL's user and password, piece by piece
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise errors.PUBLISH_BAD_API_URL.error(url=redact_url(url))
    return url.rstrip("/")


def _timeout_seconds(timeout: float | None) -> float:
    if timeout is None:
        raw = os.environ.get("SLUGBUILD_PUBLISH_TIMEOUT", "").strip()
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT
        except ValueError:
            timeout = DEFAULT_TIMEOUT
    if not timeout > 0:  # also NaN
        return DEFAULT_TIMEOUT
    return min(timeout, MAX_TIMEOUT)  # inf would overflow the waits


def _slug_fields(created: Any, url: str) -> tuple[str, str, str]:
    """The slug id and the blob's method and URL, or PUBLISH_BAD_RESPONSE."""
    blob = created.get("blob") if isinstance(created, dict) else None
    slug_id = created.get("id") if isinstance(created, dict) else None
    method = blob.get("method", "put") if isinstance(blob, dict) else None
    blob_url = blob.get("url") if isinstance(blob, dict) else None
    shown = _shown(url)
    if not isinstance(slug_id, str) or not slug_id.strip():
        raise errors.PUBLISH_BAD_RESPONSE.error(
            variant="no-slug-id", method="POST", url=shown, answer=_kind_of(created))
    if not isinstance(blob_url, str) or \
            urllib.parse.urlsplit(blob_url).scheme not in ("http", "https"):
        raise errors.PUBLISH_BAD_RESPONSE.error(variant="no-blob-url", method="POST", url=shown)
    if not isinstance(method, str) or method.lower() not in ("put", "post"):
        raise errors.PUBLISH_BAD_RESPONSE.error(
            variant="upload-method", method="POST", url=shown, upload_method=str(method)[:20])
    return slug_id, method.upper(), blob_url


def _kind_of(answer: Any) -> str:
    """What a JSON answer is, as the error names it ("an object", "a list", "str")."""
    if isinstance(answer, dict):
        return "an object"
    return "a list" if isinstance(answer, list) else type(answer).__name__


def _shown(url: str) -> str:
    """A URL as it may be printed: no credentials, no query (signed URLs carry them)."""
    return redact_url(url.split("?", 1)[0].split("#", 1)[0])


def _url_secrets(url: str) -> list[str]:
    """The query and its values of a signed URL: never to be printed."""
    query = urllib.parse.urlsplit(url).query
    values = [v for _, v in urllib.parse.parse_qsl(query, keep_blank_values=False)]
    return [query, *values]


# The API session (with the token) or the requests module (the upload: no token).
_Client = Union[requests.Session, ModuleType]


def _call(client: _Client, method: str, url: str, deadline: _Deadline, reporter: Reporter,
          *, retry: str, releasing: str | None = None, expect_json: bool = True,
          upload: Path | None = None, **kwargs: Any) -> Any:
    """One API step with its retries; the decoded JSON answer (or {}).

    ``retry``: "always" retries connection failures, 429 and 5xx; "unsent" only
    failures to connect and 429, after which the request was surely not acted on.
    ``releasing``: the app, when this is the release request (a failure may then
    have released it).
    """
    shown = _shown(url)
    on_release: dict[str, Any] = {"app": releasing} if releasing is not None else {}
    suffix = "-on-release" if releasing is not None else ""
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        remaining = deadline.remaining()
        limit = remaining if upload is not None else min(remaining, API_CALL_TIMEOUT)
        wait = RETRY_DELAYS[attempt - 1] if attempt < attempts else 0.0
        retried = "retried" if attempt > 1 else None
        try:
            if limit <= 0:
                raise _DeadlinePassed
            response = _send(client, method, url, limit, upload, **kwargs)
        except _DeadlinePassed:
            raise errors.PUBLISH_TIMEOUT.error(
                variant="on-release" if releasing is not None else None,
                method=method, url=shown, seconds=_whole(deadline.seconds),
                **on_release) from None
        except _TooLarge:
            raise errors.PUBLISH_BAD_RESPONSE.error(
                variant="too-large" + suffix, method=method, url=shown,
                limit=f"{MAX_RESPONSE_BYTES:,}", **on_release) from None
        except requests.RequestException as exc:
            reason = _reason(exc, url, shown)
            variant = "-".join(filter(None, [suffix[1:], retried]))
            failure = errors.PUBLISH_UNREACHABLE.error(
                variant=variant or None, method=method, url=shown, reason=reason,
                attempts=attempt, **on_release)
            transient = isinstance(exc, (requests.ConnectionError, requests.Timeout))
            if not transient or not (retry == "always" or _never_sent(exc)):
                raise failure from None
            what = reason
        else:
            status = response.status_code
            if status < 400:
                return _decode(response, method, shown, releasing) if expect_json else {}
            failure = errors.PUBLISH_API_ERROR.error(
                variant=retried, method=method, url=shown, status=status,
                message=_message(response), attempts=attempt)
            if not (status == 429 or (retry == "always" and status >= 500)):
                raise failure
            what = f"answered {status}"
            wait = max(wait, _retry_after(response))
        if attempt == attempts or wait >= deadline.remaining():
            raise failure  # out of attempts, or the next would start past the deadline
        reporter.warn(f"{method} {shown} {what}; trying again in {wait:g}s "
                      f"(attempt {attempt + 1} of {attempts})")
        time.sleep(wait)
    raise AssertionError("unreachable")


def _send(client: _Client, method: str, url: str, limit: float, upload: Path | None,
          **kwargs: Any) -> requests.Response:
    """One request, headers and body, finished within ``limit`` seconds as a whole.

    requests' own timeouts bound each read, not the request: a server trickling a
    byte every few seconds would never time out. The request runs in a thread the
    caller stops waiting for at the limit (the CLI then exits; it is a daemon).
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            handle = open(upload, "rb") if upload is not None else None  # noqa: SIM115
            try:
                if handle is not None:
                    kwargs["data"] = handle
                response: requests.Response = client.request(
                    method, url, timeout=(min(CONNECT_TIMEOUT, limit), min(READ_TIMEOUT, limit)),
                    stream=True, **kwargs)
                body = bytearray()
                for chunk in response.iter_content(8192):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        response.close()
                        raise _TooLarge
                response._content = bytes(body)
                response._content_consumed = True  # type: ignore[attr-defined]
                outcome["response"] = response
            finally:
                if handle is not None:
                    handle.close()
        except BaseException as exc:  # handed to the waiting caller
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="slugbuild-publish", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise _DeadlinePassed
    if "error" in outcome:
        raise outcome["error"]
    response: requests.Response = outcome["response"]
    return response


def _decode(response: requests.Response, method: str, shown: str,
            releasing: str | None) -> Any:
    try:
        return json.loads(response.content.decode("utf-8"))
    except (ValueError, RecursionError):
        on_release: dict[str, Any] = {"app": releasing} if releasing is not None else {}
        raise errors.PUBLISH_BAD_RESPONSE.error(
            variant="not-json" + ("-on-release" if releasing is not None else ""),
            method=method, url=shown, status=response.status_code, **on_release) from None


def _message(response: requests.Response) -> str:
    try:
        data = json.loads(response.content.decode("utf-8"))
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, str) or not message.strip():
        message = response.content.decode("utf-8", "replace").strip() or response.reason or ""
    message = " ".join(message.split())
    return message[:300] + ("…" if len(message) > 300 else "")


def _retry_after(response: requests.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", 0)), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 0.0


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before any of it reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _reason(exc: requests.RequestException, url: str, shown: str) -> str:
    """The exception's message without the URL's query (a signature) or credentials."""
    text = str(exc).replace(url, shown)
    parts = urllib.parse.urlsplit(url)
    if parts.query:
        text = text.replace(f"{parts.path}?{parts.query}", parts.path)
    return redact_url(text)[:400]


def _whole(seconds: float) -> str:
    return f"{max(seconds, 0):.0f}"
