"""Runtime source: CPython archives downloaded from an index and verified by SHA-256.

The index is a base URL holding a ``SHA256SUMS`` file (``sha256sum`` format:
``<64 hex>  <file name>`` per line, as python-build-standalone publishes with
each release) and the archives it names, beside it. Two archive kinds are
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
from typing import Any

import requests
import urllib3

from . import errors
from .cache import Cache, file_sha256
from .log import Reporter
from .platform_info import Platform
from .redact import redact_url
from .runtimes import LocalRuntime, RuntimeOffer, SourceUnavailable, inspect_prefix

DEFAULT_DOWNLOAD_URL = (
    "https://github.com/astral-sh/python-build-standalone/releases/download/20241016"
)
CHECKSUMS_NAME = "SHA256SUMS"
DOWNLOADS_DIR = "downloads"
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
    """CPython archives from a checksummed index, cached per platform once verified."""

    name = "download"

    def __init__(self, cache: Cache, platform: Platform, base_url: str | None = None,
                 offline: bool = False, retries: int = 3, timeout: float = 30.0) -> None:
        url = base_url or os.environ.get("SLUGBUILD_PYTHON_DOWNLOAD_URL") or DEFAULT_DOWNLOAD_URL
        self.base_url = url.rstrip("/")
        self.cache = cache
        self.platform = platform
        self.offline = offline
        self.retries = max(1, retries)
        self.timeout = timeout
        self.store = cache.root / DOWNLOADS_DIR / platform.key
        self._index: list[Archive] | None = None

    # -- listing -------------------------------------------------------------------------

    def available(self) -> list[RuntimeOffer]:
        """Cached archives; online, the index's archives for this platform replace them.

        Per version the index's preferred archive wins (a changed index is followed);
        versions only the cache holds stay offered.
        """
        cached = {a.version: a for a in self.cached()}
        best = {version: (archive, True) for version, archive in cached.items()}
        if not self.offline:
            from_index: dict[str, Archive] = {}
            for archive in self.index():
                held = from_index.get(archive.version)
                if held is None or archive.preference > held.preference:
                    from_index[archive.version] = archive
            for version, archive in from_index.items():
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
            except (OSError, ValueError, KeyError, TypeError):
                continue
            held = (self.store / archive.name).is_file()
            if record.get("platform") == self.platform.key and held:
                found.append(archive)
        return found

    def index(self) -> list[Archive]:
        """The archives named by ``SHA256SUMS`` that fit this platform (fetched once)."""
        if self._index is None:
            url = f"{self.base_url}/{CHECKSUMS_NAME}"
            try:
                text = self._get_text(url)
            except _FetchFailed as exc:
                raise SourceUnavailable(f"{url}: {exc.reason}") from exc
            archives = []
            for name, sha in parse_checksums(text).items():
                fits = archive_fits(name, self.platform)
                if fits:
                    archives.append(Archive(name, fits[0], sha, f"{self.base_url}/{name}",
                                            fits[1]))
            self._index = archives
        return self._index

    # -- providing ---------------------------------------------------------------------------

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        """Fetch (or reuse) the verified archive, unpack it into ``scratch``, find the prefix."""
        archive: Archive = offer.detail
        path = self.fetch(archive, reporter)
        target = scratch / "unpacked"
        target.mkdir()
        _extract(path, target, archive.url)
        prefix = target / "python" if (target / "python" / "bin").is_dir() else target
        runtime = inspect_prefix(prefix, "download")
        if runtime is None:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(
                url=archive.url, problem="it holds no CPython prefix (bin/pythonX.Y, "
                "lib/pythonX.Y/os.py, include/pythonX.Y/patchlevel.h) at its top or in python/")
        if runtime.version != archive.version:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(
                url=archive.url, problem=f"its name says Python {archive.version} but it holds "
                f"Python {runtime.version}")
        return LocalRuntime(runtime.version, runtime.prefix, archive.url)

    def fetch(self, archive: Archive, reporter: Reporter) -> Path:
        """The archive's path in the cache, downloaded and verified first if needed."""
        final = self.store / archive.name
        if final.is_file() and file_sha256(final) == archive.sha256:
            return final
        if self.offline:
            raise errors.RUNTIME_DOWNLOAD_FAILED.error(
                url=archive.url, reason="not in the cache and --offline forbids downloading",
                attempts=0)
        scratch = self.cache.scratch_dir("download")
        try:
            partial = scratch / archive.name
            digest = self._download(archive.url, partial, reporter)
            if digest != archive.sha256:
                raise errors.RUNTIME_CHECKSUM_MISMATCH.error(
                    url=archive.url, actual=digest, expected=archive.sha256,
                    checksums=f"{self.base_url}/{CHECKSUMS_NAME}")
            self.store.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
            record = scratch / "record.json"
            record.write_text(json.dumps(archive.record(self.platform), indent=2) + "\n")
            os.replace(record, self.store / f"{archive.name}.json")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        reporter.detail(f"Verified SHA-256 {archive.sha256[:16]}… of {archive.name}")
        return final

    def _download(self, url: str, target: Path, reporter: Reporter) -> str:
        """Stream ``url`` to ``target`` with retries; the SHA-256 of what arrived."""
        last = "no attempt made"
        for attempt in range(1, self.retries + 1):
            try:
                return self._download_once(url, target, reporter)
            except _FetchFailed as exc:
                last = exc.reason
                if not exc.retryable or attempt == self.retries:
                    raise errors.RUNTIME_DOWNLOAD_FAILED.error(
                        url=url, reason=last, attempts=attempt) from exc
                reporter.warn(f"Download of {url} failed ({last}); retrying")
                time.sleep(min(0.5 * 2 ** (attempt - 1), 4))
        raise errors.RUNTIME_DOWNLOAD_FAILED.error(url=url, reason=last, attempts=self.retries)

    def _download_once(self, url: str, target: Path, reporter: Reporter) -> str:
        digest = hashlib.sha256()
        received = 0
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                _check_status(response)
                expected = _content_length(response)
                with open(target, "wb") as handle, _Progress(reporter, url, expected) as bar:
                    # Raw bytes: the checksum is of the file as published, whatever
                    # Content-Encoding a server adds.
                    for chunk in response.raw.stream(CHUNK, decode_content=False):
                        handle.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.advance(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _FetchFailed(_describe(exc), retryable=True) from exc
        if expected is not None and received != expected:
            raise _FetchFailed(f"truncated: got {received} of {expected} bytes", retryable=True)
        return digest.hexdigest()

    def _get_text(self, url: str) -> str:
        last: _FetchFailed | None = None
        for attempt in range(1, self.retries + 1):
            try:
                response = requests.get(url, timeout=self.timeout)
                _check_status(response)
                return response.text
            except requests.RequestException as exc:
                last = _FetchFailed(_describe(exc), retryable=True)
            except _FetchFailed as exc:
                last = exc
            if not last.retryable or attempt == self.retries:
                break
            time.sleep(min(0.5 * 2 ** (attempt - 1), 4))
        assert last is not None
        raise last


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
    return int(value) if value and value.isdigit() else None


def _describe(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError)) or "IncompleteRead" in text:
        return f"truncated: the connection closed early ({text[:200]})"
    return f"{type(exc).__name__}: {text[:300]}"


class _Progress:
    """A rich progress bar on a terminal; one log line otherwise."""

    def __init__(self, reporter: Reporter, url: str, total: int | None) -> None:
        self.reporter = reporter
        self.url = url
        self.total = total
        self._progress = None
        self._task = None

    def __enter__(self) -> _Progress:
        size = f" ({self.total / 1e6:.1f} MB)" if self.total else ""
        self.reporter.detail(f"Downloading {self.url}{size}")
        stream = self.reporter.stream
        if not self.reporter.quiet and getattr(stream, "isatty", lambda: False)():
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
            url=url, problem=f"it cannot be unpacked ({exc})") from exc


def _extract_members(tar: tarfile.TarFile, target: Path, url: str) -> None:
    for member in tar:
        problem = _unsafe(member)
        if problem:
            raise errors.RUNTIME_ARCHIVE_INVALID.error(url=url, problem=f"{member.name}: {problem}")
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
