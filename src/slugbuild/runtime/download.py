"""Runtime sources: CPython archives downloaded from an index and verified by SHA-256.

``DownloadSource``'s index is, by default, the newest python-build-standalone
release, looked up at build time in GitHub's releases API (bounded and
remembered under ``CACHE/runtime-index/``, with a pinned fallback); an exact
pin is searched for in the whole release history. A mirror of that API, or a
base URL (or local directory) holding a ``SHA256SUMS`` file (``sha256sum``
format: ``<64 hex>  <file name>`` per line, as python-build-standalone
publishes with each release) and the archives it names beside it, can stand
in. ``HerokuSource`` reads Heroku's own archives by name. Two archive kinds are
understood, by file name:

- python-build-standalone ``install_only`` (or ``install_only_stripped``):
  ``cpython-3.12.1+20240107-x86_64-unknown-linux-gnu-install_only.tar.gz``,
  a top-level ``python/`` prefix;
- Heroku's ``python-3.12.1-ubuntu-24.04-amd64.tar.zst``, the prefix at the top.

Only archives for this machine's architecture and libc (and, for Heroku's,
its Ubuntu release) are offered. An archive is streamed to a scratch file
while hashed, refused unless its length and SHA-256 match, and only then
renamed into ``CACHE/downloads/<platform key>/`` with a small JSON record, so
offline builds can use it later and a failed download leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable

from .. import errors
from ..cache import Cache, file_sha256
from ..lazy_import import lazy_module
from ..log import Reporter
from ..platform_info import Platform
from ..redact import redact_url
from ..retry import GaveUp, retrying
from ..slug_size import human
from ..textfiles import decimal
from .local import inspect_prefix
from .sources import LocalRuntime, RuntimeOffer, SourceUnavailable

if TYPE_CHECKING:
    import requests
    import urllib3
else:
    requests = lazy_module("requests")  # imported when first used (lazy_import.py)
    urllib3 = lazy_module("urllib3")  # imported when first used (lazy_import.py)

# The newest python-build-standalone release is looked up here at build time
# (GitHub's releases API, newest first); a mirror laid out the same way can
# stand in for it: --python-download-url https://mirror/repos/OWNER/REPO/releases
DEFAULT_RELEASES_API = "https://api.github.com/repos/astral-sh/python-build-standalone/releases"
# The pinned fallback when that lookup fails and no earlier answer is cached:
# a release known to exist, with a SHA256SUMS beside its archives.
DEFAULT_DOWNLOAD_URL = (
    "https://github.com/astral-sh/python-build-standalone/releases/download/20241016"
)
CHECKSUMS_NAME = "SHA256SUMS"
# The index lookup is bounded: one attempt, a short timeout, and its answer
# (or its failure) remembered in the cache so the next builds do not wait.
INDEX_TIMEOUT = (3.0, 5.0)  # connect, read (seconds)
INDEX_FRESH_SECONDS = 3600  # a cached releases listing newer than this is used as is
INDEX_FAILURE_SECONDS = 600  # after a failed lookup, do not try again for this long
# An exact pin is searched for in at most this many pages of HISTORY_PAGE_SIZE
# releases (a python-build-standalone release lists ~1,500 assets: pages are kept small).
HISTORY_PAGES = 40
HISTORY_PAGE_SIZE = 5
DOWNLOADS_DIR = "downloads"
INDEX_DIR = "runtime-index"  # remembered index answers (releases listings, SHA256SUMS)
CHUNK = 1 << 16

_PBS_NAME = re.compile(
    r"^cpython-(?P<version>\d+\.\d+\.\d+)\+\d+-(?P<arch>x86_64|aarch64|i686|armv7|ppc64le|s390x)"
    r"-unknown-linux-(?P<libc>gnu|musl)(?:eabihf)?-install_only(?P<stripped>_stripped)?"
    r"\.tar\.(?P<compression>gz|xz|bz2|zst)$"
)
_HEROKU_NAME = re.compile(
    r"^python-(?P<version>\d+\.\d+\.\d+)-ubuntu-(?P<ubuntu>\d\d\.\d\d)-(?P<arch>amd64|arm64)"
    r"\.tar\.(?P<compression>gz|xz|bz2|zst)$"
)
_DEBIAN_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_CHECKSUM_LINE = re.compile(r"^(?P<sha>[0-9a-fA-F]{64})\s+\*?(?P<name>\S+)$")


@dataclass(frozen=True)
class Archive:
    """One archive named by the index (or found in the cache)."""

    name: str
    version: str
    sha256: str
    url: str
    preference: int  # higher wins when one version has several archives

    def record(self, platform: Platform) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "url": self.url, "platform": platform.key}


def parse_checksums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` text as {file name: lowercase hex digest}; other lines are skipped."""
    sums = {}
    for line in text.splitlines():
        match = _CHECKSUM_LINE.match(line.strip())
        if match:
            sums[PurePosixPath(match.group("name")).name] = match.group("sha").lower()
    return sums


def archive_fits(name: str, platform: Platform) -> tuple[str, int] | None:
    """(version, preference) if ``name`` is a runtime archive for ``platform``, else None."""
    libc = "musl" if platform.libc.startswith("musl") else "gnu"
    match = _PBS_NAME.match(name)
    if match:
        if match.group("arch") != platform.arch or match.group("libc") != libc:
            return None
        if not _can_decompress(match.group("compression")):
            return None
        return match.group("version"), 2 if match.group("stripped") else 1
    match = _HEROKU_NAME.match(name)
    if match:
        stack_ubuntu = _ubuntu_release(platform)
        if _DEBIAN_ARCH[match.group("arch")] != platform.arch or libc != "gnu":
            return None
        if stack_ubuntu != match.group("ubuntu") or not _can_decompress(match.group("compression")):
            return None
        return match.group("version"), 0
    return None


def _ubuntu_release(platform: Platform) -> str | None:
    """``24.04`` on an Ubuntu host, else None.

    The host decides, not ``STACK``: a ``heroku-24`` label on a Debian host does not
    give it Ubuntu 24.04's glibc.
    """
    return platform.distro_version if platform.distro == "ubuntu" else None


def _can_decompress(compression: str) -> bool:
    return compression != "zst" or shutil.which("zstd") is not None


class DownloadSource:
    """CPython archives from a checksummed index, cached per platform once verified.

    The index is, by default, the newest python-build-standalone release (GitHub's
    releases API, looked up at build time within INDEX_TIMEOUT and remembered in
    the cache), falling back to the pinned DEFAULT_DOWNLOAD_URL. A URL ending in
    ``/releases`` names another releases API (a mirror); any other URL (or a
    local directory / ``file://`` URL: an offline index) holds ``SHA256SUMS``
    and the archives beside it.
    """

    name = "download"
    downloads = True  # a source that needs the network (for the "unavailable" advice)

    def __init__(self, cache: Cache, platform: Platform, base_url: str | None = None,
                 offline: bool = False, retries: int = 3, timeout: float = 30.0) -> None:
        url = base_url or os.environ.get("SLUGBUILD_PYTHON_DOWNLOAD_URL") or ""
        self.releases_api: str | None = None
        self.fallback_url: str | None = None
        if not url:
            self.releases_api, self.fallback_url = DEFAULT_RELEASES_API, DEFAULT_DOWNLOAD_URL
            url = DEFAULT_RELEASES_API
        elif _is_releases_api(url):
            self.releases_api = url.rstrip("/")
        elif url.rstrip("/").endswith("/" + CHECKSUMS_NAME):
            url = url.rstrip("/")[: -len(CHECKSUMS_NAME) - 1]  # the index file itself named
        self.base_url = _as_url(url).rstrip("/")
        self.cache = cache
        self.platform = platform
        self.offline = offline
        self.retries = max(1, retries)
        self.timeout = timeout
        self.store = cache.root / DOWNLOADS_DIR / platform.key
        self.index_store = cache.root / INDEX_DIR
        self._index: list[Archive] | None = None
        self.index_origin: str | None = None  # what the index was read from, for the log
        self.checksums_url = f"{self.base_url}/{CHECKSUMS_NAME}"

    # -- listing -------------------------------------------------------------------------

    def available(self) -> list[RuntimeOffer]:
        """Cached archives; online, the index's archives for this platform replace them.

        Per version the index's preferred archive wins (a changed index is followed);
        versions only the cache holds stay offered.
        """
        cached = {a.version: a for a in self.cached()}
        best = {version: (archive, True) for version, archive in cached.items()}
        if not self.offline:
            for version, archive in _preferred(self.index()).items():
                same = version in cached and cached[version].sha256 == archive.sha256
                best[version] = (archive, same)
        return [self._offer(a, is_cached) for a, is_cached in best.values()]

    def _offer(self, archive: Archive, cached: bool) -> RuntimeOffer:
        origin = redact_url(archive.url) + (" (cached)" if cached else "")
        return RuntimeOffer(
            version=archive.version, source=self, origin=origin,
            identity={"archive": archive.name, "archive_sha256": archive.sha256},
            metadata={"origin": redact_url(archive.url), "archive_sha256": archive.sha256},
            detail=archive,
        )

    def cached(self) -> list[Archive]:
        """Archives already verified into the cache for this platform."""
        found = []
        for record_path in sorted(self.store.glob("*.json")):
            try:
                record = json.loads(record_path.read_text())
                archive = Archive(record["name"], record["version"], record["sha256"],
                                  record["url"], 3)
            except (OSError, ValueError, RecursionError, KeyError, TypeError):
                continue
            held = (self.store / archive.name).is_file()
            if record.get("platform") == self.platform.key and held:
                found.append(archive)
        return found

    def index(self) -> list[Archive]:
        """The archives of the index that fit this platform (read once per build)."""
        if self._index is None:
            if self.releases_api is None:
                self._index = self._sums_index(self.base_url)
                self.index_origin = redact_url(self.base_url)
            else:
                try:
                    tag, self._index = self._latest_release()
                    self.index_origin = f"python-build-standalone release {tag}"
                except SourceUnavailable as exc:
                    if self.fallback_url is None:
                        raise
                    try:
                        self._index = self._sums_index(self.fallback_url)
                    except SourceUnavailable as fallback:
                        raise SourceUnavailable(
                            f"{exc}; pinned fallback: {fallback}") from fallback
                    self.index_origin = (f"the pinned fallback {redact_url(self.fallback_url)}"
                                         f" (newest-release lookup failed: {exc})")
        return self._index

    def _sums_index(self, base_url: str) -> list[Archive]:
        url = f"{base_url}/{CHECKSUMS_NAME}"
        pinned = base_url == DEFAULT_DOWNLOAD_URL
        sums = self._cached_fetch(url, _NEVER_STALE if pinned else 0, parse_checksums,
                                  bounded=pinned)
        archives = []
        for name, sha in sums.items():
            fits = archive_fits(name, self.platform)
            if fits:
                archives.append(Archive(name, fits[0], sha, f"{base_url}/{name}", fits[1]))
        return archives

    # -- python-build-standalone releases -----------------------------------------------------

    def _latest_release(self) -> tuple[str, list[Archive]]:
        """The newest release with archives for this platform: (tag, archives)."""
        for per_page in (1, HISTORY_PAGE_SIZE):  # the newest may be a release in progress
            for release in self._release_page(1, per_page, fresh=INDEX_FRESH_SECONDS):
                archives = self._release_archives(release)
                if archives:
                    return release["tag"], archives
        raise SourceUnavailable(f"{redact_url(self.releases_api or '')}: the newest releases "
                                f"have no archive for {self.platform.key}")

    def find_exact(self, version: str) -> RuntimeOffer | None:
        """An archive of exactly ``version`` from any release (newest release first).

        python-build-standalone publishes every patch in some release, each
        release holding the newest patch of every minor: the search stops at the
        first release older than the patch. Offline, only remembered pages are read.
        """
        if self.releases_api is None:
            return None
        wanted = tuple(int(p) for p in version.split("."))
        anchor = ""
        for page in range(1, HISTORY_PAGES + 1):
            # Later pages shift when a release is published: they are remembered
            # under the newest release's tag, so a new release re-reads them.
            releases = self._release_page(page, per_page=HISTORY_PAGE_SIZE,
                                          fresh=_NEVER_STALE if page > 1
                                          else INDEX_FRESH_SECONDS, anchor=anchor)
            if page == 1 and releases:
                anchor = releases[0]["tag"]
            for release in releases:
                same_minor = []
                for archive in self._release_archives(release, need_sums=False):
                    parts = tuple(int(p) for p in archive.version.split("."))
                    if parts[:2] == wanted[:2]:
                        same_minor.append(parts)
                if version in {".".join(map(str, p)) for p in same_minor}:
                    for archive in _preferred(self._release_archives(release)).values():
                        if archive.version == version:
                            cached = any(a.sha256 == archive.sha256 for a in self.cached())
                            return self._offer(archive, cached)
                if same_minor and max(same_minor) < wanted:
                    return None  # older releases hold older patches only
            if not releases:
                break  # past the last page
        return None

    def _release_page(self, page: int, per_page: int, fresh: float, anchor: str = ""
                      ) -> list[dict[str, Any]]:
        """One page of the releases API, compacted to what this platform needs."""
        url = f"{self.releases_api}?per_page={per_page}&page={page}"
        releases: list[dict[str, Any]] = self._cached_fetch(
            url, fresh, lambda text: _compact_releases(text, self.platform),
            key_extra=f"{self.platform.key}|{anchor}", valid=_valid_releases)
        return releases

    def _release_archives(self, release: dict[str, Any], need_sums: bool = True
                          ) -> list[Archive]:
        """A compacted release's archives with their SHA-256 (asset digest, the
        release's SHA256SUMS, or a ``.sha256`` asset); unverifiable ones are left out."""
        assets: dict[str, dict[str, Any]] = release.get("assets", {})
        sums: dict[str, str] | None = None
        archives = []
        for name, asset in sorted(assets.items()):
            fits = archive_fits(name, self.platform)
            if not fits:
                continue
            sha = asset.get("sha256")
            if not sha and need_sums:
                if sums is None:
                    sums = self._release_sums(release)
                sha = sums.get(name)
                if not sha and f"{name}.sha256" in assets:
                    try:
                        sha = self._cached_fetch(assets[f"{name}.sha256"]["url"], _NEVER_STALE,
                                                 _first_digest,
                                                 valid=lambda v: isinstance(v, str)) or None
                    except SourceUnavailable:
                        sha = None  # left out: it cannot be verified
            if sha or not need_sums:
                archives.append(Archive(name, fits[0], sha or "", asset["url"], fits[1]))
        return archives

    def _release_sums(self, release: dict[str, Any]) -> dict[str, str]:
        asset = release.get("assets", {}).get(CHECKSUMS_NAME)
        if not asset:
            return {}
        try:
            sums: dict[str, str] = self._cached_fetch(asset["url"], _NEVER_STALE,
                                                      parse_checksums)
        except SourceUnavailable:
            return {}
        return sums

    # -- the index cache ------------------------------------------------------------------

    def _cached_fetch(self, url: str, fresh: float, parse: Callable[[str], Any],
                      key_extra: str = "", bounded: bool = True,
                      valid: Callable[[Any], bool] = lambda value: isinstance(value, dict)
                      ) -> Any:
        """``parse(text of url)``, remembered in the cache.

        A remembered answer younger than ``fresh`` seconds is used without asking;
        offline, any remembered answer is. ``bounded`` (the default index, not a
        mirror the user named): one attempt with a short timeout, and a failure
        is remembered for INDEX_FAILURE_SECONDS so the next builds do not wait
        for it again. An older remembered answer is used when a lookup fails.
        A remembered answer that is not ``valid`` (a damaged file) is ignored.
        """
        path = self.index_store / (hashlib.sha256(f"{url}|{key_extra}".encode())
                                   .hexdigest()[:32] + ".json")
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            record = {}
        if not isinstance(record, dict) or ("value" in record and not valid(record["value"])):
            record = {}
        now = time.time()
        has_value = "value" in record
        if has_value and (self.offline or now - record.get("fetched_at", 0) < fresh):
            return record["value"]
        if self.offline:
            raise SourceUnavailable(f"{redact_url(url)}: not read before, and --offline "
                                    f"forbids reading it now")
        if bounded and "failed_at" in record and now - record["failed_at"] < INDEX_FAILURE_SECONDS:
            if has_value:
                return record["value"]
            raise SourceUnavailable(f"{redact_url(url)}: {record.get('reason')} (a lookup "
                                    f"{int(now - record['failed_at'])} s ago; not retried "
                                    f"before {INDEX_FAILURE_SECONDS} s)")
        try:
            value = parse(self._get_text(url, timeout=INDEX_TIMEOUT if bounded else None,
                                         retries=1 if bounded else None))
        except (_FetchFailed, ValueError) as exc:
            reason = exc.reason if isinstance(exc, _FetchFailed) else f"unreadable ({exc})"
            if bounded:
                record.update(failed_at=now, reason=reason)
                _write_json(path, record)
            if has_value:
                return record["value"]
            raise SourceUnavailable(f"{redact_url(url)}: {reason}") from exc
        _write_json(path, {"url": redact_url(url), "fetched_at": now, "value": value})
        return value

    # -- providing ---------------------------------------------------------------------------

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        """Fetch (or reuse) the verified archive, unpack it into ``scratch``, find the prefix."""
        archive = offer.detail
        assert isinstance(archive, Archive), "an offer of another source"
        path = self.fetch(archive, reporter)
        target = scratch / "unpacked"
        target.mkdir()
        _extract(path, target, archive.url)
        prefix = target / "python" if (target / "python" / "bin").is_dir() else target
        runtime = inspect_prefix(prefix, "download")
        if runtime is None:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(variant="no-prefix", url=archive.url)
        if runtime.version != archive.version:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(
                variant="wrong-version", url=archive.url, named=archive.version,
                held=runtime.version)
        return LocalRuntime(runtime.version, runtime.prefix, archive.url)

    def fetch(self, archive: Archive, reporter: Reporter) -> Path:
        """The archive's path in the cache, downloaded and verified first if needed."""
        final = self.store / archive.name
        if final.is_file() and file_sha256(final) == archive.sha256:
            return final
        if self.offline:
            raise errors.RUNTIME_DOWNLOAD_FAILED.error(variant="offline", url=archive.url)
        scratch = self.cache.scratch_dir("download")
        try:
            partial = scratch / archive.name
            received = self._download(archive.url, partial, reporter)
            sha256 = self._verify(archive, received)
            self.store.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
            record = scratch / "record.json"
            verified = Archive(archive.name, archive.version, sha256, archive.url,
                               archive.preference)
            record.write_text(json.dumps(verified.record(self.platform), indent=2) + "\n")
            os.replace(record, self.store / f"{archive.name}.json")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        reporter.detail(f"Verified SHA-256 {sha256[:16]}… of {archive.name}")
        return final

    def _verify(self, archive: Archive, received: _Received) -> str:
        """The archive's SHA-256 once it matches the published one (else refused)."""
        if received.sha256 != archive.sha256:
            raise errors.RUNTIME_CHECKSUM_MISMATCH.error(
                url=archive.url, actual=received.sha256, expected=archive.sha256,
                checksums=self.checksums_url)
        return received.sha256

    def _download(self, url: str, target: Path, reporter: Reporter) -> _Received:
        """Stream ``url`` to ``target`` with retries; the digests of what arrived."""
        def warn(attempt: int, failed: _FetchFailed) -> None:
            reporter.warn(f"Download of {redact_url(url)} failed ({failed.reason}); retrying")

        try:
            return retrying(lambda: self._download_once(url, target, reporter),
                            attempts=self.retries, failure=_FetchFailed,
                            retryable=lambda failed: failed.retryable, before_retry=warn)
        except GaveUp as gave_up:
            raise errors.RUNTIME_DOWNLOAD_FAILED.error(
                url=redact_url(url), reason=gave_up.last.reason,
                attempts=gave_up.attempts) from gave_up.last

    def _download_once(self, url: str, target: Path, reporter: Reporter) -> _Received:
        received = _Received()
        local = _local_path(url)
        if local is not None:
            try:
                with open(local, "rb") as source, open(target, "wb") as handle:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        handle.write(chunk)
                        received.update(chunk)
            except OSError as exc:
                raise _FetchFailed(f"cannot read {local}: {exc.strerror}", retryable=False) \
                    from exc
            return received
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                _check_status(response)
                expected = _content_length(response)
                received.etag = response.headers.get("ETag", "").strip('"') or None
                with open(target, "wb") as handle, _Progress(reporter, url, expected) as bar:
                    # Raw bytes: the checksum is of the file as published, whatever
                    # Content-Encoding a server adds.
                    for chunk in response.raw.stream(CHUNK, decode_content=False):
                        handle.write(chunk)
                        received.update(chunk)
                        bar.advance(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _FetchFailed(_describe(exc), retryable=True) from exc
        if expected is not None and received.size != expected:
            raise _FetchFailed(f"truncated: got {received.size} of {expected} bytes",
                               retryable=True)
        return received

    def _get_text(self, url: str, timeout: float | tuple[float, float] | None = None,
                  retries: int | None = None) -> str:
        local = _local_path(url)
        if local is not None:
            try:
                return local.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise _FetchFailed(f"cannot read {local}: {exc.strerror}", retryable=False) \
                    from exc
        def get() -> str:
            try:
                response = requests.get(url, timeout=timeout or self.timeout,
                                        headers={"Accept": "application/json, text/plain"})
            except requests.RequestException as exc:
                raise _FetchFailed(_describe(exc), retryable=True) from exc
            _check_status(response)
            return response.text

        try:
            return retrying(get, attempts=retries if retries is not None else self.retries,
                            failure=_FetchFailed, retryable=lambda failed: failed.retryable)
        except GaveUp as gave_up:
            raise gave_up.last from None


_NEVER_STALE = float("inf")  # published releases and pinned checksums never change
# S3 multipart upload part sizes tried when an ETag names several parts (the AWS
# CLI's default is 8 MiB).
_S3_PART_SIZES = (8 << 20, 16 << 20, 5 << 20, 64 << 20)


class _Received:
    """Digests of a download as it streams: SHA-256, MD5, and S3 multipart MD5s."""

    def __init__(self) -> None:
        self.size = 0
        self.etag: str | None = None
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._parts: dict[int, tuple[list[bytes], Any, int]] = {
            size: ([], hashlib.md5(usedforsecurity=False), 0) for size in _S3_PART_SIZES}

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        self._md5.update(chunk)
        for size, (done, current, filled) in list(self._parts.items()):
            view = memoryview(chunk)
            while view:
                take = min(size - filled, len(view))
                current.update(view[:take])
                filled += take
                view = view[take:]
                if filled == size:
                    done.append(current.digest())
                    current, filled = hashlib.md5(usedforsecurity=False), 0
            self._parts[size] = (done, current, filled)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def matches_etag(self) -> bool | None:
        """Whether the body matches the server's S3 ETag; None when it cannot tell
        (no ETag, not an MD5 one, or multipart with an unknown part size)."""
        etag = (self.etag or "").lower()
        if re.fullmatch(r"[0-9a-f]{32}", etag):
            return self._md5.hexdigest() == etag
        match = re.fullmatch(r"([0-9a-f]{32})-(\d+)", etag)
        if not match:
            return None
        for done, current, filled in self._parts.values():
            digests = done + ([current.digest()] if filled else [])
            if len(digests) == int(match.group(2)):
                combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
                if combined == match.group(1):
                    return True
        return None  # uploaded in parts of a size not tried: it cannot tell


def _preferred(archives: list[Archive]) -> dict[str, Archive]:
    """Per version, the archive with the highest preference."""
    best: dict[str, Archive] = {}
    for archive in archives:
        held = best.get(archive.version)
        if held is None or archive.preference > held.preference:
            best[archive.version] = archive
    return best


def _compact_releases(text: str, platform: Platform) -> list[dict[str, Any]]:
    """GitHub releases API JSON, reduced to the assets this platform can use."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("the releases API did not answer with a list")
    releases = []
    for release in data:
        if not isinstance(release, dict) or release.get("draft") or release.get("prerelease"):
            continue
        assets = {}
        raw_assets = release.get("assets")
        for asset in raw_assets if isinstance(raw_assets, list) else []:
            if not isinstance(asset, dict):
                continue
            name, url = asset.get("name"), asset.get("browser_download_url")
            if not isinstance(name, str) or not isinstance(url, str):
                continue
            base = name[: -len(".sha256")] if name.endswith(".sha256") else name
            if name == CHECKSUMS_NAME or archive_fits(base, platform):
                digest = asset.get("digest")
                match = re.fullmatch(r"sha256:([0-9a-fA-F]{64})", digest) \
                    if isinstance(digest, str) else None
                sha = match.group(1).lower() if match else None
                assets[name] = {"url": url, "sha256": sha}
        releases.append({"tag": str(release.get("tag_name", "?")), "assets": assets})
    return releases


def _valid_releases(value: Any) -> bool:
    """The shape _compact_releases writes (a remembered answer may have been damaged)."""
    return isinstance(value, list) and all(
        isinstance(r, dict) and isinstance(r.get("tag"), str) and isinstance(r.get("assets"), dict)
        and all(isinstance(a, dict) and isinstance(a.get("url"), str)
                for a in r["assets"].values())
        for r in value)


def _first_digest(text: str) -> str:
    match = re.search(r"\b[0-9a-fA-F]{64}\b", text)
    return match.group(0).lower() if match else ""


def _is_releases_api(url: str) -> bool:
    """An http(s) URL whose path ends in ``/releases`` (GitHub's API, or a mirror)."""
    if not url.startswith(("http://", "https://")):
        return False
    return (urllib3.util.parse_url(url).path or "").rstrip("/").endswith("/releases")


def _as_url(url: str) -> str:
    """A local directory given as a plain path becomes a ``file://`` URL."""
    if "://" not in url:
        return Path(url).absolute().as_uri()
    return url


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path))
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(data))
        os.replace(partial, path)
    except OSError:
        pass  # an unwritable cache only loses the memory of this lookup


class HerokuSource(DownloadSource):
    """Heroku's own runtime archives for its Ubuntu stacks (heroku-22, heroku-24).

    Laid out as Heroku's Python buildpack fetches them:
    ``BASE/python-3.12.8-ubuntu-24.04-amd64.tar.zst``. The bucket cannot be
    listed, so (as the buildpack does) each policy minor's newest known patch
    is offered, and an exact pin is looked for by name. Heroku publishes no
    checksums: an archive is verified against a ``<archive>.sha256`` beside it
    when the mirror has one, else against the S3 ETag (the object's MD5, or
    its multipart MD5), and refused when neither can be checked.
    """

    name = "heroku"

    def __init__(self, cache: Cache, platform: Platform, base_url: str | None = None,
                 offline: bool = False, retries: int = 3, timeout: float = 30.0) -> None:
        url = base_url or os.environ.get("SLUGBUILD_HEROKU_PYTHON_URL") or HEROKU_BASE_URL
        super().__init__(cache, platform, base_url=url, offline=offline, retries=retries,
                         timeout=timeout)
        self.releases_api = self.fallback_url = None

    def _name(self, version: str) -> str | None:
        ubuntu = _ubuntu_release(self.platform)
        arch = {v: k for k, v in _DEBIAN_ARCH.items()}.get(self.platform.arch)
        if ubuntu is None or arch is None or self.platform.libc.startswith("musl"):
            return None
        return f"python-{version}-ubuntu-{ubuntu}-{arch}.tar.zst"

    def _offer(self, archive: Archive, cached: bool) -> RuntimeOffer:
        """As the download source's, but keyed by name: the SHA-256 is known only once
        the first download is verified (then pinned in the cache), and the layers
        must not change keys between that build and the next."""
        offer = super()._offer(archive, cached)
        return dataclasses.replace(offer, identity={"archive": archive.name})

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        runtime = super().provide(offer, scratch, reporter)
        assert isinstance(offer.detail, Archive), "an offer of another source"
        verified = {a.name: a.sha256 for a in self.cached()}.get(offer.detail.name)
        if verified:
            offer.metadata["archive_sha256"] = verified  # for slug.json
        return runtime

    def _archive(self, version: str) -> Archive | None:
        name = self._name(version)
        if name is None or not _can_decompress("zst"):
            return None
        cached = {a.name: a for a in self.cached()}
        sha = cached[name].sha256 if name in cached else ""
        return Archive(name, version, sha, f"{self.base_url}/{name}", 0)

    def index(self) -> list[Archive]:
        if self._index is None:
            if self._name("3.12.0") is None:
                raise SourceUnavailable(f"Heroku's runtime archives are built for Ubuntu "
                                        f"(heroku-22, heroku-24); this host is "
                                        f"{self.platform.key}")
            from ..versions import POLICY, REFUSED

            archives = [self._archive(row.newest_patch) for row in POLICY
                        if row.status != REFUSED]
            self._index = [a for a in archives if a is not None]
            self.index_origin = redact_url(self.base_url)
        return self._index

    def find_exact(self, version: str) -> RuntimeOffer | None:
        """The archive of exactly ``version`` if the bucket has it (a HEAD request)."""
        archive = self._archive(version)
        if archive is None:
            return None
        if archive.sha256:
            return self._offer(archive, True)
        if self.offline:
            return None
        try:
            response = requests.head(archive.url, timeout=INDEX_TIMEOUT, allow_redirects=True)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{redact_url(archive.url)}: {_describe(exc)}") from exc
        if response.status_code in (403, 404):
            return None
        return self._offer(archive, False)

    def _download(self, url: str, target: Path, reporter: Reporter) -> _Received:
        try:
            return super()._download(url, target, reporter)
        except errors.SlugbuildError as exc:
            if exc.code == "runtime-download-failed" and re.search(r"HTTP 40[34]", exc.found):
                raise errors.RUNTIME_DOWNLOAD_FAILED.error(
                    variant="missing-on-s3", url=redact_url(url)) from exc
            raise

    def _verify(self, archive: Archive, received: _Received) -> str:
        if archive.sha256:  # verified into the cache before: the same bytes again
            return super()._verify(archive, received)
        try:
            published = _first_digest(self._get_text(archive.url + ".sha256",
                                                     timeout=INDEX_TIMEOUT, retries=1))
        except _FetchFailed:
            published = ""
        if published:
            self.checksums_url = archive.url + ".sha256"
            return super()._verify(Archive(archive.name, archive.version, published,
                                           archive.url, 0), received)
        etag = received.matches_etag()
        if etag is True:
            return received.sha256
        if etag is False:
            raise errors.RUNTIME_CHECKSUM_MISMATCH.error(
                variant="etag", url=archive.url, actual=received.sha256, etag=received.etag)
        raise errors.RUNTIME_CHECKSUM_MISSING.error(url=redact_url(archive.url))


HEROKU_BASE_URL = "https://heroku-buildpack-python.s3.dualstack.us-east-1.amazonaws.com"


class _FetchFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _check_status(response: requests.Response) -> None:
    if response.status_code >= 400:
        raise _FetchFailed(f"HTTP {response.status_code} {response.reason or ''}".strip(),
                           retryable=response.status_code >= 500 or response.status_code == 429)


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return decimal(value) if value else None


def _describe(exc: Exception) -> str:
    """A network failure in a few plain words, never a raw exception dump."""
    text = str(exc)
    request = getattr(exc, "request", None)
    host = urllib3.util.parse_url(request.url).host if request is not None and \
        getattr(request, "url", None) else None
    at = f" {host}" if host else ""
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError)) or "IncompleteRead" in text:
        return "truncated: the connection closed early"
    if "NameResolutionError" in text or "Name or service not known" in text or \
            "Temporary failure in name resolution" in text or "nodename nor servname" in text:
        return f"cannot resolve the host name{at} (no DNS or no network)"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed with{at or ' the server'} (certificate not trusted?)"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"timed out connecting to{at or ' the server'}"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"{host or 'the server'} stopped answering (read timed out)"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused the connection"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if "Connection refused" in text:
            return f"connection refused by{at or ' the server'}"
        return f"cannot connect to{at or ' the server'}"
    if isinstance(exc, requests.exceptions.InvalidURL):
        return "the URL is not valid"
    return f"request failed ({type(exc).__name__})"


class _Progress:
    """A rich progress bar on a terminal; one log line otherwise."""

    def __init__(self, reporter: Reporter, url: str, total: int | None) -> None:
        self.reporter = reporter
        self.url = url
        self.total = total
        self._progress: Any = None  # rich's Progress, on a terminal
        self._task: Any = None

    def __enter__(self) -> _Progress:
        size = f" ({human(self.total)})" if self.total else ""  # one spelling of sizes
        self.reporter.detail(f"Downloading {self.url}{size}")
        stream = self.reporter.stream
        if (not self.reporter.quiet and self.reporter.verbosity != "quiet"
                and getattr(stream, "isatty", lambda: False)()):
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self._progress = Progress("       Downloading", BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(file=stream),
                                      transient=True)
            self._progress.start()
            self._task = self._progress.add_task("download", total=self.total)
        return self

    def advance(self, count: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, count)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _extract(path: Path, target: Path, url: str) -> None:
    """Unpack a verified archive into ``target``, refusing entries that would leave it."""
    try:
        if path.name.endswith(".zst"):
            with subprocess.Popen(["zstd", "-dcq", str(path)], stdout=subprocess.PIPE) as zstd:
                with tarfile.open(fileobj=zstd.stdout, mode="r|") as tar:
                    _extract_members(tar, target, url)
                if zstd.wait() != 0:
                    raise tarfile.TarError("zstd could not decompress it")
        else:
            with tarfile.open(path, mode="r:*") as tar:
                _extract_members(tar, target, url)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise errors.RUNTIME_ARCHIVE_INVALID.error(
            variant="cannot-unpack", url=url, reason=exc) from exc


def _extract_members(tar: tarfile.TarFile, target: Path, url: str) -> None:
    for member in tar:
        problem = _unsafe(member)
        if problem:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(
                variant="unsafe-member", url=url, member=member.name, reason=problem)
        if hasattr(tarfile, "data_filter"):
            tar.extract(member, target, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extract(member, target)


def _unsafe(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "path leaves the archive's directory"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "not a regular file, directory or link"
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        if link.is_absolute() or _climbs_out(base / link):
            return f"link to {member.linkname} leaves the archive's directory"
    return None


def _climbs_out(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False
