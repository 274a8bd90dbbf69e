"""NLTK corpora listed in ``nltk.txt``, downloaded into the slug as Heroku does.

Heroku's Python buildpack runs ``python -m nltk.downloader -d
.heroku/python/nltk_data <the lines of nltk.txt>`` when ``nltk`` is installed,
and sets ``NLTK_DATA`` to that directory at run time. slugbuild gives the slug
the same files in the same place (``<subdir>/<id>.zip`` and, for packages the
index marks ``unzip="1"``, the unzipped ``<subdir>/<id>/``), but reads NLTK's
index XML and fetches the packages itself rather than running the downloader:

- the downloader's command line has changed behaviour between releases (3.9.3
  broke it on symlinked paths; several releases print an error and exit 0;
  some errors end at an interactive ``input()`` prompt, an ``EOFError`` in a
  build), while the index format has been stable for fifteen years;
- fetching here checks every file against the index's checksum and size, names
  the corpus that could not be had in one catalogue error, and keeps the result
  as a cache layer keyed by the packages' index entries, so a warm build
  reuses it and a changed corpus is fetched again.

The index URL is NLTK's default unless the ``NLTK_INDEX_URL`` config var (or
environment variable) names another, e.g. a mirror.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

from . import errors
from .cache import Cache, Layer
from .lazy_import import lazy_module
from .log import Reporter
from .redact import redact_url
from .retry import GaveUp, retrying

if TYPE_CHECKING:
    import difflib
    import xml.etree.ElementTree as ElementTree
    import zipfile

    import requests
else:
    requests = lazy_module("requests")  # imported when first used (lazy_import.py)
    # Only for an app with nltk.txt: imported when first used.
    difflib = lazy_module("difflib")
    ElementTree = lazy_module("xml.etree.ElementTree")
    zipfile = lazy_module("zipfile")

NLTK_FILE = "nltk.txt"
DEFAULT_INDEX_URL = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/index.xml"
INDEX_URL_VAR = "NLTK_INDEX_URL"
# Where Heroku puts the data (relative to the app root), and the run-time script.
DATA_DIR = ".heroku/python/nltk_data"
PROFILE_SCRIPT = ".profile.d/python-nltk.sh"
_PROFILE = ('# Written by slugbuild: the NLTK data downloaded from nltk.txt at build time.\n'
            f'export NLTK_DATA="${{NLTK_DATA:-$HOME/{DATA_DIR}}}"\n')
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TIMEOUT = 60
_RETRIES = 3
# Bounds on what one package may unpack to (NLTK's largest corpus is ~2 GB unzipped).
_MAX_MEMBERS = 200_000
_MAX_UNZIPPED = 8 * 1024 ** 3
_MAX_PACKAGE = 4 * 1024 ** 3  # a package whose index entry gives no size
_MAX_INDEX = 64 * 1024 ** 2
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class NltkPackage:
    """One package entry of NLTK's index, as far as the download needs it."""

    id: str
    url: str
    subdir: str
    unzip: bool
    size: int | None
    md5: str | None
    sha256: str | None

    @property
    def filename(self) -> str:
        """Where NLTK keeps the package file: ``<subdir>/<id><ext of url>``."""
        extension = os.path.splitext(self.url.rsplit("/", 1)[-1])[1]
        return str(PurePosixPath(self.subdir, self.id + extension))


@dataclass(frozen=True)
class NltkIndex:
    url: str
    packages: dict[str, NltkPackage]
    collections: dict[str, list[str]]


def index_url(config_vars: Mapping[str, str]) -> str:
    """The build's config var wins over the environment, which wins over NLTK's default."""
    return (config_vars.get(INDEX_URL_VAR) or os.environ.get(INDEX_URL_VAR)
            or DEFAULT_INDEX_URL).strip()


def read_nltk_list(build_dir: Path) -> list[str] | None:
    """The identifiers in ``nltk.txt`` (None without the file), in order, once each.

    Heroku passes each line as one argument; slugbuild also splits a line on
    whitespace and skips blank lines and ``#`` comments, which the downloader
    would otherwise try to fetch.
    """
    path = build_dir / NLTK_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.NLTK_LIST_INVALID.error(
            variant="not-text", error=exc.__class__.__name__) from exc
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if raw.lstrip().startswith("#") else raw
        for word in line.split():
            if not _IDENTIFIER.fullmatch(word):
                raise errors.NLTK_LIST_INVALID.error(
                    variant="bad-identifier", line=number, word=word[:80])
            if word not in names:
                names.append(word)
    return names


def parse_index(text: bytes | str, url: str) -> NltkIndex:
    """Packages and collections of an NLTK index XML (relative URLs are made absolute)."""
    def unusable(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.NLTK_INDEX_UNUSABLE.error(variant=variant, url=redact_url(url), **values)

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise unusable("not-xml", reason=exc) from exc
    packages: dict[str, NltkPackage] = {}
    for element in root.iter("package"):
        attrs = element.attrib
        ident, href = attrs.get("id", ""), attrs.get("url", "")
        subdir = attrs.get("subdir", "")
        if not _IDENTIFIER.fullmatch(ident) or not href:
            raise unusable("bad-package-entry", ident=ident[:80])
        parts = PurePosixPath(subdir).parts
        if subdir.startswith("/") or ".." in parts or "\\" in subdir:
            raise unusable("subdir-leaves", ident=ident, subdir=subdir[:80])
        try:
            size = int(attrs["size"]) if "size" in attrs else None
        except ValueError as exc:
            raise unusable("bad-size", ident=ident, size=attrs["size"][:40]) from exc
        packages[ident] = NltkPackage(
            ident, urljoin(url, href), subdir, attrs.get("unzip", "1").strip() != "0", size,
            (attrs.get("checksum") or "").lower() or None,
            (attrs.get("sha256_checksum") or "").lower() or None)
    collections = {element.attrib.get("id", ""): [item.attrib.get("ref", "")
                                                  for item in element.iter("item")]
                   for element in root.iter("collection")}
    if not packages:
        raise unusable("no-packages")
    return NltkIndex(url, packages, collections)


def expand(names: list[str], index: NltkIndex) -> list[NltkPackage]:
    """The packages ``names`` mean, collections expanded, each once, sorted by id."""
    found: dict[str, NltkPackage] = {}
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in index.packages:
            found[name] = index.packages[name]
        elif name in index.collections:
            pending.extend(index.collections[name])
        else:
            near = difflib.get_close_matches(name, [*index.packages, *index.collections],
                                             n=5)
            raise errors.NLTK_CORPUS_UNAVAILABLE.error(
                variant="not-in-index-close" if near else "not-in-index", corpus=name,
                url=redact_url(index.url), close=", ".join(near))
    return [found[key] for key in sorted(found)]


def nltk_layer_key(names: list[str], config_vars: Mapping[str, str]
                   ) -> tuple[str, str, dict[str, Any], list[NltkPackage]]:
    """The layer's name, key and inputs for the corpora ``names``, and the packages they
    mean: from NLTK's index (fetched), as the build and ``slugbuild plan`` key it."""
    url = index_url(config_vars)
    index = parse_index(_get(url, what="index", corpus=None), url)
    packages = expand(names, index)
    inputs = {"index_url": url, "requested": names,
              "packages": [asdict(package) for package in packages]}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"nltk-{key[:20]}", key, inputs, packages


def provide_nltk_data(build_dir: Path, installed: bool, config_vars: Mapping[str, str],
                      cache: Cache, reporter: Reporter) -> Layer | None:
    """The cache layer holding the corpora ``nltk.txt`` lists, made if needed; None when
    there is nothing to download. The caller links it in at DATA_DIR."""
    names = read_nltk_list(build_dir)
    if not installed:
        if names:
            reporter.warn(f"{NLTK_FILE} lists NLTK data, but the nltk package is not "
                          f"installed, so none was downloaded (as on Heroku). Add nltk to "
                          f"the app's dependencies if it uses that data.")
        return None
    reporter.step("Downloading NLTK corpora...")
    if names is None:
        reporter.detail(f"'{NLTK_FILE}' not found, not downloading any corpora")
        return None
    if not names:
        reporter.detail(f"'{NLTK_FILE}' lists no corpora")
        return None
    name, key, inputs, packages = nltk_layer_key(names, config_vars)
    reporter.step(f"Downloading NLTK packages: {' '.join(names)}")
    layer = cache.lookup("layers", name, key)
    if layer is None:
        with cache.lock("layers", name):
            layer = cache.lookup("layers", name, key)
            if layer is None:
                with cache.new_layer("layers", name, key, inputs) as tree:
                    for package in packages:
                        _install(package, tree, reporter)
                layer = cache.lookup("layers", name, key)
                assert layer is not None
                return layer
    reporter.detail(f"Restored {len(packages)} NLTK package(s) from cache")
    return layer


def write_nltk_profile(build_dir: Path) -> None:
    """``NLTK_DATA`` at run time (a value the user set wins), as Heroku's ``set_env``."""
    path = build_dir / PROFILE_SCRIPT
    path.parent.mkdir(exist_ok=True)
    path.write_text(_PROFILE)


def _install(package: NltkPackage, tree: Path, reporter: Reporter) -> None:
    def broken(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.NLTK_CORPUS_UNAVAILABLE.error(
            variant=variant, corpus=package.id, url=redact_url(package.url), **values)

    if not (package.sha256 or package.md5):
        raise broken("no-checksum")
    target = tree / package.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    limit = package.size if package.size is not None else _MAX_PACKAGE
    digests = _fetch(package.url, target, limit, broken)
    received = target.stat().st_size
    if package.size is not None and received != package.size:
        raise broken("wrong-size", received=received, expected=package.size)
    for algorithm, expected in (("sha256", package.sha256), ("md5", package.md5)):
        if expected and digests[algorithm] != expected:
            raise broken("checksum-mismatch", algorithm=algorithm)
    if package.unzip and package.filename.endswith(".zip"):
        _unzip(target, tree / package.subdir, package.id, broken)
    reporter.detail(f"{package.id} ({package.subdir or '.'}, {received} bytes)")


class _Problem(Protocol):
    """Makes the error to raise for a problem: its variant in the catalogue, and data."""

    def __call__(self, variant: str, **values: object) -> Exception: ...


class _Digest(Protocol):
    """A hashlib object, as far as downloads feed and read it."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def _unzip(path: Path, directory: Path, ident: str, broken: _Problem) -> None:
    """Unpack a package zip whose every member lies under ``<id>/`` (as NLTK insists)."""
    try:
        archive = zipfile.ZipFile(path)
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise broken("not-a-zip", reason=exc) from exc
    if len(members) > _MAX_MEMBERS or sum(m.file_size for m in members) > _MAX_UNZIPPED:
        raise broken("zip-too-large")
    with archive:
        for member in members:
            inside = PurePosixPath(member.filename)
            kind = stat.S_IFMT(member.external_attr >> 16)
            if (member.filename.startswith("/") or "\\" in member.filename
                    or ".." in inside.parts or not inside.parts or inside.parts[0] != ident
                    or "\0" in member.filename):
                raise broken("member-outside", member=member.filename[:120])
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise broken("member-not-a-file", member=member.filename[:120])
            destination = directory.joinpath(*inside.parts)
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError) as exc:
                raise broken("unpack-failed", error=exc.__class__.__name__,
                             reason=str(exc)[:200]) from exc


def _get(url: str, what: str, corpus: str | None) -> bytes:
    """The index: GET with retries, at most _MAX_INDEX bytes; one catalogue error."""
    def unusable(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.NLTK_INDEX_UNUSABLE.error(variant=variant, url=redact_url(url), **values)

    buffer = io.BytesIO()
    _retrying(url, lambda response: _copy(response, buffer, _MAX_INDEX, unusable),
              lambda reason: unusable("unfetchable", reason=reason),
              reset=lambda: (buffer.seek(0), buffer.truncate()))
    return buffer.getvalue()


def _fetch(url: str, target: Path, limit: int, broken: _Problem) -> dict[str, str]:
    """Stream ``url`` to ``target`` (at most ``limit`` bytes); its sha256 and md5."""
    digests: dict[str, _Digest] = {}

    def save(response: requests.Response) -> None:
        digests.update(sha256=hashlib.sha256(), md5=hashlib.md5(usedforsecurity=False))
        with open(target, "wb") as handle:
            _copy(response, handle, limit, broken, digests.values())

    _retrying(url, save, lambda reason: broken("undownloadable", reason=reason))
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _copy(response: requests.Response, sink: IO[bytes], limit: int, too_big: _Problem,
          digests: Iterable[_Digest] = ()) -> None:
    received = 0
    for chunk in response.iter_content(_CHUNK):
        received += len(chunk)
        if received > limit:
            raise too_big("too-large", limit=limit)
        sink.write(chunk)
        for digest in digests:
            digest.update(chunk)


class _GetFailed(Exception):
    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def _retrying(url: str, consume: Callable[[requests.Response], None],
              failed: Callable[[str], Exception],
              reset: Callable[[], object] = lambda: None) -> None:
    """GET ``url`` and hand the response to ``consume``, retrying connection errors,
    5xx and 429 a few times; ``failed(reason)`` is raised when that does not help."""
    def attempt() -> None:
        try:
            with requests.get(url, timeout=_TIMEOUT, stream=True) as response:
                if response.status_code < 400:
                    consume(response)
                    return
                status = response.status_code
                raise _GetFailed(f"HTTP {status} {response.reason or ''}".strip(),
                                 retry=status >= 500 or status == 429)
        except requests.RequestException as exc:
            # In plain words, as a runtime download says it, not urllib3's repr cut
            # short; a name that does not resolve will not resolve in a second either.
            from .runtime.download import _describe

            reason = _describe(exc)
            raise _GetFailed(reason, retry="cannot resolve" not in reason) from exc

    try:
        retrying(attempt, attempts=_RETRIES, failure=_GetFailed,
                 retryable=lambda failure: failure.retry,
                 before_retry=lambda _attempt, _failure: reset())
    except GaveUp as gave_up:
        raise failed(gave_up.last.reason) from None
