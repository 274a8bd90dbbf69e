"""A small client for the OCI distribution API (the Docker registry v2 protocol).

Written on ``requests`` rather than taken from ``oras`` or ``python-dxf``:
oras sends requests without timeouts, retries every method (uploads too),
does not verify pulled blobs, has no cross-repository mount and logs token
answers; python-dxf refuses credentials over plain HTTP (a loopback registry)
and forces the token service to https. What slugbuild needs is small: HEAD,
mount, monolithic upload, verified download, manifests, basic and bearer auth.

Rules kept here: plain HTTP only for loopback hosts or ``insecure``; every
request has a timeout; only GET and HEAD are retried; a download is verified
against its digest before it is renamed into place; no credential or token is
ever part of a message (``redact`` masks the password everywhere).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from .. import errors
from ..arguments import request_timeout
from ..lazy_import import lazy_module
from ..redact import register_secrets
from ..retry import GaveUp, backoff, retrying
from .credentials import Credentials

if TYPE_CHECKING:
    import requests
else:
    requests = lazy_module("requests")  # imported when first used (lazy_import.py)

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
# containers/image's limit for a manifest: anything larger is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Any other answer read into memory (a tag list, a token, an error document): a hostile
# registry streaming gigabytes at one is refused at this size.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# The most tags a listing takes (``cache import`` lists a cache registry's): a cache of
# every layer of thousands of apps has far fewer.
MAX_TAGS = 200_000
_ATTEMPTS = 3
_CHUNK = 1024 * 1024
_USER_AGENT = "slugbuild (oci registry client)"
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_LOOPBACK_NAMES = {"localhost"}
_T = TypeVar("_T")


@dataclass
class TransferStats:
    """What a client moved: the figures `make bench` and the tests read."""

    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_downloaded: int = 0
    bytes_downloaded: int = 0
    requests: int = 0


class BlobSink(Protocol):
    """Where ``RegistryClient.read_blob`` streams a blob: written chunk by chunk,
    then closed (the blob matched its digest) or aborted (it did not, or it broke
    off)."""

    def write(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


_SinkT = TypeVar("_SinkT", bound=BlobSink)


@dataclass(frozen=True)
class BlobLimit:
    """The most bytes a pulled blob may hold, whatever its descriptor declares: what
    the blob is and how a user allows more, for the message refusing a larger one."""

    most: int
    what: str
    remedy: str = ""


# An image's config is a few KiB (containers/image allows 4 MiB, as for a manifest).
CONFIG_LIMIT = BlobLimit(MAX_MANIFEST_BYTES, "an image config")


class _PartialFile:
    """A BlobSink into a temporary file in ``directory`` (a pulled blob's ``dest`` is
    only replaced by it once its digest matched)."""

    def __init__(self, directory: Path) -> None:
        handle, name = tempfile.mkstemp(prefix=".pull-", dir=directory)
        self.path = Path(name)
        self._out = os.fdopen(handle, "wb")

    def write(self, chunk: bytes) -> None:
        self._out.write(chunk)

    def close(self) -> None:
        self._out.close()

    def abort(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


class _Retryable(Exception):
    """A GET or HEAD that may pass on another attempt (connection error, 5xx, 429)."""

    def __init__(self, reason: str, status: int | None = None,
                 response: requests.Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.response = response


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``HOST[:PORT]``) is this machine: plain HTTP is allowed there."""
    name = _split_port(host)[0].strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, colon, port = host.rpartition(":")
    return (name, port) if colon else (host, None)


def api_host(host: str) -> str:
    """The host that answers the API for ``host``: Docker Hub's is registry-1.docker.io."""
    return "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host


class RegistryClient:
    """One repository of one registry: blobs in and out, manifests in and out.

    ``host`` is ``HOST[:PORT]``; plain HTTP is used for a loopback host or with
    ``insecure`` (``--insecure-registry``), HTTPS otherwise. ``timeout`` bounds
    each request's connection and each read; GET and HEAD are tried ``attempts``
    times (a cache that must fail fast passes 1).
    """

    #: Seconds to wait after failed attempt N (1-based) of a GET or HEAD.
    retry_delay: Callable[[int], float] = staticmethod(backoff)

    def __init__(self, host: str, repository: str, *, credentials: Credentials | None = None,
                 insecure: bool = False, timeout: float = 30.0,
                 attempts: int = _ATTEMPTS) -> None:
        self.host = host
        self.repository = repository
        self.credentials = credentials
        self.insecure = insecure
        self.timeout = request_timeout(timeout)  # a NaN or negative one: invalid-limit
        self.attempts = attempts
        scheme = "http" if insecure or is_loopback(host) else "https"
        self.base_url = f"{scheme}://{api_host(host)}"
        self.stats = TransferStats()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = _USER_AGENT
        self._session.trust_env = True
        self._authorization: str | None = None
        self._extra_scopes: set[str] = set()
        # The OCI-Subject header of the last manifest put: a registry with the
        # referrers API names the subject of a referrer it stored (OCI 1.1).
        self.last_subject: str | None = None
        # When the pull under way must be done by (``within``), or None.
        self.deadline: Deadline | None = None
        if credentials is not None:
            register_secrets([credentials.password])

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Every request made inside, its answer read whole, done within ``seconds`` of
        now: each read has the timeout, but a registry trickling a byte before each
        one runs out could stretch a pull (a build's cache pull) without end. Past it,
        a request is REGISTRY_UNREACHABLE (variant ``too-slow``), never retried."""
        outer = self.deadline
        self.deadline = Deadline(time.monotonic() + seconds, seconds)
        try:
            yield
        finally:
            self.deadline = outer

    def sibling(self) -> RegistryClient:
        """A client of the same repository with the same credentials, for another
        thread (a ``requests.Session`` is not shared between threads): its own
        connections, the authorization this one holds, the same ``stats``."""
        other = RegistryClient(self.host, self.repository, credentials=self.credentials,
                               insecure=self.insecure, timeout=self.timeout,
                               attempts=self.attempts)
        other.retry_delay = self.retry_delay
        other.stats = self.stats
        other._authorization = self._authorization
        other._extra_scopes = set(self._extra_scopes)
        other.deadline = self.deadline
        return other

    # --- the API ---------------------------------------------------------------------
    def ping(self) -> None:
        """Check that the registry answers the v2 API (and that the credentials work)."""
        response = self._request("GET", "/v2/", repository_scope=False)
        response.close()
        if response.status_code != 200:
            raise self._unexpected("GET", "/v2/", response)

    def has_blob(self, digest: str) -> bool:
        """Whether the repository holds the blob ``digest``."""
        path = self._path(f"blobs/{digest}")
        response = self._request("HEAD", path)
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._unexpected("HEAD", path, response)

    def push_blob(self, source: Path | bytes, digest: str, size: int, *,
                  mount_from: str | None = None) -> bool:
        """Put the blob ``digest`` into the repository; True if its bytes were sent.

        Nothing is sent when the repository has it already (HEAD first), or when the
        registry can mount it from ``mount_from`` (another repository of the same
        registry). Otherwise one monolithic upload: the registry checks the digest.
        """
        _check_digest(digest)
        if self.has_blob(digest):
            return False
        uploads = self._path("blobs/uploads/")
        query = ""
        if mount_from and mount_from != self.repository:
            self._extra_scopes.add(f"repository:{mount_from}:pull")
            query = "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        response = self._request("POST", uploads + query, push=True)
        response.close()
        if response.status_code == 201 and query:
            self.stats.blobs_mounted += 1
            return False
        if response.status_code != 202:
            raise self._unexpected("POST", uploads, response)
        location = response.headers.get("Location")
        if not location:
            raise errors.REGISTRY_PROTOCOL.error(
                variant="bad-answer", method="POST", url=self._url(uploads),
                what="a Location header to upload to", host=self.host)
        target = _with_query(urllib.parse.urljoin(self.base_url + uploads, location),
                             digest=digest)
        with _body(source) as body:
            response = self._request(
                "PUT", target, push=True, data=body,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)})
        response.close()
        if response.status_code in (400, 422) and _error_codes(response) & {
                "DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"}:
            raise errors.REGISTRY_DIGEST_MISMATCH.error(
                variant="refused", host=self.host, repository=self.repository, what="the blob",
                expected=digest, message=_error_message(response))
        if response.status_code != 201:
            raise self._unexpected("PUT", uploads, response)
        self.stats.blobs_uploaded += 1
        self.stats.bytes_uploaded += size
        return True

    def pull_blob(self, digest: str, dest: Path, *, limit: BlobLimit,
                  size: int | None = None) -> None:
        """Download blob ``digest`` to ``dest``, verified; ``dest`` only appears if it matches.

        At most ``size`` bytes (what its descriptor declares, when there is one) and
        never more than ``limit``: a registry sending more is refused at the first
        chunk past it, so an endless blob cannot fill the disk."""
        _check_digest(digest)
        path = self._path(f"blobs/{digest}")
        bound = self._blob_bound(path, size, limit)
        dest.parent.mkdir(parents=True, exist_ok=True)
        actual, received, partial = self._retried(
            "GET", path, lambda: self._stream_blob(path, lambda: _PartialFile(dest.parent),
                                                   limit=bound))
        self._check_pulled(partial, path, digest, actual, received, size, limit)
        partial.close()
        os.replace(partial.path, dest)
        self.stats.blobs_downloaded += 1
        self.stats.bytes_downloaded += received

    def read_blob(self, digest: str, size: int, sink: Callable[[], BlobSink]) -> None:
        """Stream blob ``digest`` (``size`` bytes, as its descriptor says) into a sink,
        without a file: each attempt writes into a fresh ``sink()`` (a retry starts
        over), at most ``size`` bytes of it; the sink is closed when the last byte
        arrived and matched the digest, aborted otherwise. A blob of other bytes or
        another size is REGISTRY_DIGEST_MISMATCH, raised after its last byte (the
        sink's own objections come after that: a wrong blob is named as such)."""
        _check_digest(digest)
        path = self._path(f"blobs/{digest}")
        actual, received, into = self._retried(
            "GET", path, lambda: self._stream_blob(path, sink, limit=size))
        self._check_pulled(into, path, digest, actual, received, size, None)
        self.stats.blobs_downloaded += 1
        self.stats.bytes_downloaded += received
        into.close()

    def _blob_bound(self, path: str, size: int | None, limit: BlobLimit) -> int:
        """The most bytes a pull of the blob at ``path`` takes: its declared ``size``,
        refused before any GET when that is over ``limit``; ``limit`` without one."""
        if size is not None and size > limit.most:
            raise errors.REGISTRY_PROTOCOL.error(
                variant="blob-too-large", method="GET", url=self._url(path), how="declares",
                limit=limit.most, what=limit.what, remedy=limit.remedy, host=self.host)
        return limit.most if size is None else max(size, 0)

    def _check_pulled(self, into: BlobSink, path: str, digest: str, actual: str,
                      received: int, size: int | None, limit: BlobLimit | None) -> None:
        """Abort ``into`` and raise unless the bytes received are the blob: its digest,
        and its declared size (more than that is named as such), within ``limit``."""
        if size is None and limit is not None and received > limit.most:
            into.abort()
            raise errors.REGISTRY_PROTOCOL.error(
                variant="blob-too-large", method="GET", url=self._url(path), how="sent",
                limit=limit.most, what=limit.what, remedy=limit.remedy, host=self.host)
        if actual != digest or (size is not None and received != size):
            into.abort()
            raise errors.REGISTRY_DIGEST_MISMATCH.error(
                host=self.host, repository=self.repository, what="the blob", expected=digest,
                actual=actual if size is None or received <= size
                else f"more than {size} bytes")

    def _stream_blob(self, path: str, sink: Callable[[], _SinkT], limit: int | None = None
                     ) -> tuple[str, int, _SinkT]:
        """One attempt at GET ``path`` streamed into a fresh ``sink()`` (opened once the
        registry answered 200): the received bytes' digest, their count and the sink,
        left open for the caller to close or abort. With a ``limit``, nothing past it is
        written (the count then exceeds it). The sink is aborted if the attempt fails; a
        broken connection may be retried."""
        response = self._attempt("GET", self.base_url + path, stream=True)
        with response:
            if response.status_code != 200:
                raise self._unexpected("GET", path, response)
            hasher = hashlib.sha256()
            received = 0
            into = sink()
            try:
                try:
                    for chunk in _chunks(response, _CHUNK, self.deadline, "GET",
                                         self._url(path)):
                        received += len(chunk)
                        if limit is not None and received > limit:
                            break  # never more than declared in memory
                        hasher.update(chunk)
                        into.write(chunk)
                except requests.RequestException as exc:
                    raise _Retryable(_reason(exc)) from exc
            except BaseException:
                into.abort()
                raise
            return "sha256:" + hasher.hexdigest(), received, into

    def get_manifest(self, reference: str) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of the manifest or index ``reference``, None on 404."""
        path = self._path(f"manifests/{reference}")
        response = self._request("GET", path, stream=True,
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)})
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._unexpected("GET", path, response)
            body = _read_limited(response, MAX_MANIFEST_BYTES, self.deadline,
                                 self._url(path))
            if body is None:
                raise errors.REGISTRY_PROTOCOL.error(
                    variant="too-large", method="GET", url=self._url(path),
                    limit=MAX_MANIFEST_BYTES, host=self.host)
        self.stats.bytes_downloaded += len(body)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if _DIGEST.fullmatch(reference) and actual != reference:
            raise errors.REGISTRY_DIGEST_MISMATCH.error(
                host=self.host, repository=self.repository, what="the manifest",
                expected=reference, actual=actual)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = _declared_media_type(body) or media_type
        return body, media_type, actual

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        """Store ``body`` as the manifest ``reference`` (a tag or its digest); its digest."""
        path = self._path(f"manifests/{reference}")
        response = self._request("PUT", path, push=True, data=body,
                                 headers={"Content-Type": media_type})
        response.close()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if response.status_code != 201:
            raise self._unexpected("PUT", path, response)
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise errors.REGISTRY_DIGEST_MISMATCH.error(
                host=self.host, repository=self.repository, what="the manifest",
                expected=digest, actual=answered)
        self.stats.bytes_uploaded += len(body)
        self.last_subject = response.headers.get("OCI-Subject")
        return digest

    def list_tags(self) -> list[str]:
        """The repository's tags (all pages); empty for a repository not yet pushed to."""
        tags: list[str] = []
        path: str | None = self._path("tags/list?n=1000")
        followed: set[str] = set()
        while path is not None:
            # A hostile registry's pages could go on for ever (a `next` link to a page
            # already read, or one new page after another): bounded, one clear error.
            if path in followed or len(tags) > MAX_TAGS:
                raise errors.REGISTRY_PROTOCOL.error(
                    variant="tags-endless", method="GET", url=self._url(path),
                    limit=MAX_TAGS, host=self.host)
            followed.add(path)
            response = self._request("GET", path)
            with response:
                if response.status_code == 404:
                    return tags
                if response.status_code != 200:
                    raise self._unexpected("GET", self._path("tags/list"), response)
                document = _json(response)
                found = (document.get("tags") or []) if isinstance(document, dict) else None
                if not isinstance(found, list):
                    raise errors.REGISTRY_PROTOCOL.error(
                        variant="bad-answer", method="GET", url=self._url(path),
                        what="a list of tags", host=self.host)
                tags += [tag for tag in found if isinstance(tag, str)]
                link = response.links.get("next", {}).get("url")
            path = link if link and link.startswith("/v2/") else None
        return tags

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests, retries and auth ---------------------------------------------------
    def _path(self, tail: str) -> str:
        return f"/v2/{self.repository}/{tail}"

    def _url(self, path_or_url: str) -> str:
        """A URL fit for a message: the query (upload state, digest) left out."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        return url.split("?", 1)[0]

    def _request(self, method: str, path_or_url: str, *, push: bool = False,
                 repository_scope: bool = True, stream: bool = False, data: Any = None,
                 headers: dict[str, str] | None = None) -> requests.Response:
        """One request, authenticated on demand; GET and HEAD are retried."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url

        def attempt() -> requests.Response:
            return self._attempt(method, url, push=push, repository_scope=repository_scope,
                                 stream=stream, data=data, headers=headers)

        if method in ("GET", "HEAD"):
            retried: requests.Response = self._retried(method, url, attempt)
            return retried
        try:
            return attempt()
        except _Retryable as failed:
            raise self._gave_up(method, url, failed, 1) from None

    def _attempt(self, method: str, url: str, *, push: bool = False,
                 repository_scope: bool = True, stream: bool = False, data: Any = None,
                 headers: dict[str, str] | None = None) -> requests.Response:
        """One attempt (and one more after answering an auth challenge); ``_Retryable``
        for a failure another attempt may not meet."""
        response = self._send(method, url, stream=stream, data=data, headers=headers)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._authenticate(method, url, challenge, push=push,
                               repository_scope=repository_scope)
            if hasattr(data, "seek"):
                data.seek(0)
            response = self._send(method, url, stream=stream, data=data, headers=headers)
        if response.status_code in (401, 403):
            raise self._refused(method, url, response, push=push)
        if method in ("GET", "HEAD") and (response.status_code >= 500
                                          or response.status_code == 429):
            response.close()
            raise _Retryable(f"{response.status_code} {response.reason}",
                             response.status_code, response)
        return response

    def _retried(self, method: str, url: str, action: Callable[[], _T]) -> _T:
        try:
            return retrying(action, attempts=self.attempts, failure=_Retryable,
                            delay=self.retry_delay)
        except GaveUp as gave_up:
            raise self._gave_up(method, url, gave_up.last, gave_up.attempts) from None

    def _gave_up(self, method: str, url: str, failed: _Retryable,
                 attempts: int) -> errors.SlugbuildError:
        variant = "retried" if attempts > 1 else None
        if failed.status is None:
            return errors.REGISTRY_UNREACHABLE.error(
                variant=variant, method=method, url=self._url(url), reason=failed.reason,
                attempts=attempts)
        message = _error_message(failed.response) if failed.response is not None \
            else failed.reason
        return errors.REGISTRY_PROTOCOL.error(
            variant=variant, method=method, url=self._url(url), status=failed.status,
            message=message, attempts=attempts, host=self.host)

    def _send(self, method: str, url: str, *, stream: bool, data: Any,
              headers: dict[str, str] | None) -> requests.Response:
        sent = dict(headers or {})
        if self._authorization:
            sent["Authorization"] = self._authorization
        self.stats.requests += 1
        timeout = self._timeouts(method, url)
        try:  # always streamed: an answer read whole is read with a limit (_preload)
            response = self._session.request(
                method, url, data=data, headers=sent, stream=True,
                timeout=timeout, allow_redirects=True)
            if not stream:
                self._preload(response, method, url)
            return response
        except requests.RequestException as exc:
            raise _Retryable(_reason(exc)) from None

    def _timeouts(self, method: str, url: str) -> tuple[float, float]:
        """A request's connect and read timeouts: the client's, no later than the
        deadline of the pull under way (``within``; past it, ``too-slow``)."""
        connect, read = min(self.timeout, 10.0), self.timeout
        if self.deadline is not None:
            left = self.deadline.left(method, self._url(url))
            connect, read = min(connect, left), min(read, left)
        return connect, read

    def _preload(self, response: requests.Response, method: str, url: str) -> None:
        """Read the answer into the response (as ``stream=False`` would), at most
        MAX_ANSWER_BYTES of it."""
        body = _read_limited(response, MAX_ANSWER_BYTES, self.deadline, self._url(url),
                             method)
        if body is None:
            response.close()
            raise errors.REGISTRY_PROTOCOL.error(
                variant="answer-too-large", method=method, url=self._url(url),
                limit=MAX_ANSWER_BYTES, host=self.host)
        response._content = body  # what requests keeps a read body in

    def _authenticate(self, method: str, url: str, challenge: str, *, push: bool,
                      repository_scope: bool) -> None:
        """Answer a 401's challenge: basic credentials, or a bearer token from its realm."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise self._no_credentials(method, url)
            pair = f"{self.credentials.username}:{self.credentials.password}"
            self._authorization = "Basic " + base64.b64encode(pair.encode()).decode()
            return
        if scheme != "bearer" or "realm" not in params:
            raise errors.REGISTRY_PROTOCOL.error(
                method=method, url=self._url(url), status=401, host=self.host,
                message=f"an authentication challenge slugbuild does not know ({scheme or 'none'})")
        scopes = set(params.get("scope", "").split())
        if repository_scope:
            scopes.add(f"repository:{self.repository}:{'pull,push' if push else 'pull'}")
            scopes |= self._extra_scopes
        self._authorization = "Bearer " + self._token(params, sorted(scopes))

    def _token(self, params: dict[str, str], scopes: list[str]) -> str:
        realm = params["realm"]
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise errors.REGISTRY_PROTOCOL.error(
                method="GET", url=realm, status=401, host=self.host,
                message="a token realm that is not an http(s) URL")
        if parsed.scheme == "http" and not (self.insecure or is_loopback(parsed.netloc)):
            raise errors.REGISTRY_PROTOCOL.error(
                method="GET", url=realm, status=401, host=self.host,
                message="a token service on plain HTTP (credentials would travel in clear; "
                        "--insecure-registry allows it)")
        query: list[tuple[str, str]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        query += [("scope", scope) for scope in scopes]
        # As bytes: requests encodes a str pair as Latin-1 (a UnicodeEncodeError for
        # any other password); Docker, and the Basic path above, send UTF-8.
        auth = requests.auth.HTTPBasicAuth(self.credentials.username.encode(),
                                           self.credentials.password.encode()) \
            if self.credentials is not None else None

        def fetch() -> requests.Response:
            self.stats.requests += 1
            try:
                response = self._session.get(
                    realm, params=query, auth=auth, allow_redirects=True, stream=True,
                    timeout=self._timeouts("GET", realm))
                self._preload(response, "GET", realm)
            except requests.RequestException as exc:
                raise _Retryable(_reason(exc)) from None
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"{response.status_code} {response.reason}",
                                 response.status_code, response)
            return response

        response: requests.Response = self._retried("GET", realm, fetch)
        if response.status_code in (401, 403):
            if auth is None:
                raise self._no_credentials("GET", realm)
            raise errors.REGISTRY_AUTH_REFUSED.error(
                variant="token", realm=self._url(realm), status=response.status_code,
                message=_error_message(response), host=self.host, access="pull from",
                repository=self.repository)
        answer = _json(response) if response.status_code == 200 else None
        token = (answer.get("token") or answer.get("access_token")) \
            if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise errors.REGISTRY_PROTOCOL.error(
                variant="bad-answer", method="GET", url=self._url(realm),
                what="a token (a JSON object with `token`)", host=self.host)
        register_secrets([token])
        return token

    def _no_credentials(self, method: str, url: str) -> errors.SlugbuildError:
        return errors.REGISTRY_AUTH_REFUSED.error(
            variant="no-credentials", method=method, url=self._url(url), status=401,
            host=self.host)

    def _refused(self, method: str, url: str, response: requests.Response, *,
                 push: bool) -> errors.SlugbuildError:
        message = _error_message(response)
        response.close()
        if response.status_code == 401 and self.credentials is None:
            return self._no_credentials(method, url)
        return errors.REGISTRY_AUTH_REFUSED.error(
            method=method, url=self._url(url), status=response.status_code, message=message,
            host=self.host, access="push to" if push else "pull from",
            repository=self.repository)

    def _unexpected(self, method: str, path: str,
                    response: requests.Response) -> errors.SlugbuildError:
        message = _error_message(response)
        response.close()
        return errors.REGISTRY_PROTOCOL.error(
            method=method, url=self._url(path), status=response.status_code, message=message,
            host=self.host)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of a ``WWW-Authenticate`` header (the first challenge)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))',
                             rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def _check_digest(digest: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")


def _with_query(url: str, **values: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(values.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextmanager
def _body(source: Path | bytes) -> Iterator[IO[bytes] | bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as handle:
        yield handle


@dataclass(frozen=True)
class Deadline:
    """When the pull under way must be done (``time.monotonic``), and its length."""

    at: float
    seconds: float

    def left(self, method: str, url: str) -> float:
        """Seconds left; none left is REGISTRY_UNREACHABLE (``too-slow``)."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise errors.REGISTRY_UNREACHABLE.error(variant="too-slow", method=method,
                                                    url=url, seconds=f"{self.seconds:g}")
        return left


def _chunks(response: requests.Response, size: int, deadline: Deadline | None,
            method: str, url: str) -> Iterator[bytes]:
    """The answer's body in chunks of at most ``size`` bytes. Under a ``deadline``, each
    chunk is what one read gave (not ``size`` bytes gathered over many reads, which a
    trickle would make last for ever), and the deadline is checked before each."""
    if deadline is None:
        yield from response.iter_content(size)
        return
    while True:
        deadline.left(method, url)
        try:
            chunk = response.raw.read1(size, decode_content=True)
        except (OSError, ValueError) as exc:  # urllib3's errors included (OSError ones)
            raise requests.ConnectionError(str(exc)) from exc
        except Exception as exc:  # urllib3.exceptions.HTTPError: a broken answer
            if type(exc).__module__.startswith("urllib3"):
                raise requests.ConnectionError(str(exc)) from exc
            raise
        if not chunk:
            response._content_consumed = True  # type: ignore[attr-defined]  # as iter_content
            return
        yield chunk


def _read_limited(response: requests.Response, limit: int, deadline: Deadline | None = None,
                  url: str = "", method: str = "GET") -> bytes | None:
    body = bytearray()
    for chunk in _chunks(response, 64 * 1024, deadline, method, url):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _declared_media_type(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    return media_type if isinstance(media_type, str) else None


def _json(response: requests.Response) -> Any:
    """The answer's JSON document, or None: not JSON, nested past the recursion limit,
    larger than MAX_ANSWER_BYTES, or no longer readable (a closed streamed answer)."""
    try:
        if not getattr(response, "_content_consumed", True):  # streamed, unread: limit it
            body = _read_limited(response, MAX_ANSWER_BYTES)
            if body is None:
                return None
            response._content = body
        return json.loads(response.content)
    except (ValueError, RecursionError, requests.RequestException, OSError, AttributeError,
            RuntimeError):
        return None


def _error_codes(response: requests.Response) -> set[str]:
    document = _json(response)
    found = document.get("errors") if isinstance(document, dict) else None
    return {str(entry.get("code")) for entry in found or [] if isinstance(entry, dict)}


def _error_message(response: requests.Response) -> str:
    """The registry's own words for a failure (its ``errors`` list), short."""
    document = _json(response)
    found = document.get("errors") if isinstance(document, dict) else None
    if isinstance(found, list) and found:
        parts = [f"{entry.get('code', '')} {entry.get('message', '')}".strip()
                 for entry in found[:3] if isinstance(entry, dict)]
        if parts:
            return "; ".join(parts)[:300]
    return f"{response.reason or 'no reason given'}"[:300]


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer within the timeout"
    text = str(exc)
    for known in ("Connection refused", "Name or service not known",
                  "Temporary failure in name resolution", "No route to host",
                  "certificate verify failed", "Connection reset by peer"):
        if known in text:
            return known
    return f"{type(exc).__name__}: {text[:200]}"
