"""The SBOM of a slug: CycloneDX JSON listing what the slug ships, read from the slug.

Like ``inspect``, every fact comes from the tarball itself: the CPython version
from the runtime's ``patchlevel.h``, each installed distribution from its
``.dist-info`` (name and version from METADATA, its license from METADATA's
``License-Expression``, ``License`` or license classifiers, and the SHA-256 of
its RECORD, which lists every file of the distribution with its own hash). What
the tarball cannot say (where the runtime came from) is taken from slug.json
only when slug.json names this slug by its checksum. The document is
deterministic: its serial number is derived from the slug's SHA-256 and its
timestamp is the slug's file time (SOURCE_DATE_EPOCH), so the same slug always
has the same SBOM, byte for byte. docs/sbom.md describes it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .. import errors
from ..dist_version import installed_version
from .archive import SlugArchive, SlugLimits
from .metadata import metadata_path_for

if TYPE_CHECKING:
    import email.parser as email_parser
    import uuid
else:
    from ..lazy_import import lazy_module

    # Only when a document is made (a kept one is reused): imported when first used.
    email_parser = lazy_module("email.parser")
    uuid = lazy_module("uuid")

PathLike = Union[str, "os.PathLike[str]"]
SPEC_VERSION = "1.6"
# The files an SBOM reads, relative to the app root (the same in a slug and a build tree).
_WANTED = re.compile(
    r"^\.heroku/python/(lib/python[\d.]+/site-packages/[^/]+\.dist-info/(METADATA|RECORD)"
    r"|include/python[\d.]+[a-z]*/patchlevel\.h)$")
_PATCHLEVEL = re.compile(rb'#define\s+PY_VERSION\s+"([^"]+)"')
_LICENSE_CLASSIFIER = "License :: "
# slug.json's runtime fields an SBOM repeats about the runtime's origin.
_RUNTIME_ORIGIN_FIELDS = ("source", "origin", "archive_sha256", "platform")


def sbom_path_for(slug_path: Path) -> Path:
    """slug.tgz -> slug.cdx.json, beside slug.json (CycloneDX's file name convention)."""
    return metadata_path_for(slug_path).with_suffix(".cdx.json")


@errors.user_errors
def sbom_for_slug(path: PathLike, metadata: dict[str, Any] | None = None,
                  limits: SlugLimits | None = None) -> bytes:
    """The CycloneDX 1.6 JSON of the slug at ``path``. ``metadata`` (the build's
    slug.json, before it is written) names the runtime's origin; without it,
    slug.json beside the slug does when its checksum matches the slug."""
    archive = SlugArchive(Path(path), limits)
    sha256 = archive.sha256()
    wanted = {n for n in archive.names() if _WANTED.match(n)}
    heads = {n for n in wanted if not n.endswith("/RECORD")}
    contents = archive.read_many(wanted, heads=heads)
    if metadata is None:
        metadata = _matching_metadata(archive.path, sha256)
    epoch = int(max((m.mtime for m in archive.members), default=0))
    return _document(sha256, epoch, contents, metadata or {})


def sbom_for_packed_tree(tree: Path, sha256: str, epoch: int,
                         metadata: dict[str, Any], memo_dir: Path | None = None) -> bytes:
    """The SBOM of the slug just packed from ``tree`` (its SHA-256, the file time of
    its entries): the same document ``sbom_for_slug`` reads from that slug, made from
    the same files without reading the tarball again (the build's own SBOM).

    ``memo_dir`` (an existing directory of the cache) keeps the document made for
    the same inputs with a stand-in checksum: a warm build fills in its own and
    skips loading the CycloneDX library (``_memoised``)."""
    return _from_contents(_tree_contents(tree), sha256, epoch, metadata, memo_dir)


class SbomInProgress:
    """The SBOM of the slug about to be packed from ``tree``, made while it is packed.

    Its files are read at once (packing reads the same files and changes none); the
    document with the stand-in checksum (``_template``: kept in ``memo_dir``, or made
    with the CycloneDX library, ~0.1 s of Python on a fresh runner) is made by a
    thread while the slug is compressed, written and synced (zlib and the disk
    leave the interpreter free); ``result`` fills in the packed slug's SHA-256: the
    bytes ``sbom_for_packed_tree`` gives. Without ``memo_dir`` nothing runs early."""

    def __init__(self, tree: Path, epoch: int, metadata: dict[str, Any],
                 memo_dir: Path | None) -> None:
        self._contents = _tree_contents(tree)
        self._epoch, self._metadata, self._memo_dir = epoch, metadata, memo_dir
        self._template: bytes | None = None
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        if memo_dir is not None:
            self._thread = threading.Thread(target=self._make, args=(memo_dir,),
                                            name="slugbuild-sbom", daemon=True)
            self._thread.start()

    def _make(self, memo_dir: Path) -> None:
        try:
            self._template = _template(memo_dir, self._epoch, self._contents, self._metadata)
        except BaseException as exc:  # noqa: BLE001 - raised by result(), in the build's thread
            self._failure = exc

    def result(self, sha256: str, metadata: dict[str, Any]) -> bytes:
        """The document for the packed slug. ``metadata`` (its slug.json) must name the
        runtime's origin as the metadata given at the start did; if it does not, the
        document is made again from it."""
        if self._thread is None or _runtime(self._contents, metadata) != _runtime(
                self._contents, self._metadata):
            self.wait()
            return _from_contents(self._contents, sha256, self._epoch, metadata, self._memo_dir)
        self.wait()
        if self._failure is not None:
            raise self._failure
        assert self._template is not None
        filled = _fill(self._template, sha256)
        if filled is None:  # never: the stand-in is where _document puts the checksum
            return _document(sha256, self._epoch, self._contents, metadata)
        return filled

    def wait(self) -> None:
        """Until the thread (if any) is done: nothing of it runs past the build."""
        if self._thread is not None:
            self._thread.join()


def _from_contents(contents: dict[str, bytes], sha256: str, epoch: int,
                   metadata: dict[str, Any], memo_dir: Path | None) -> bytes:
    """``sbom_for_packed_tree`` from files already read (``_tree_contents``)."""
    if memo_dir is None:
        return _document(sha256, epoch, contents, metadata)
    return _memoised(memo_dir, sha256, epoch, contents, metadata)


def _tree_contents(tree: Path) -> dict[str, bytes]:
    """The files of ``tree`` an SBOM reads (``_WANTED``), by path relative to it."""
    candidates = [*tree.glob(".heroku/python/lib/python*/site-packages/*.dist-info/METADATA"),
                  *tree.glob(".heroku/python/lib/python*/site-packages/*.dist-info/RECORD"),
                  *tree.glob(".heroku/python/include/python*/patchlevel.h")]
    contents = {}
    for path in candidates:
        rel = path.relative_to(tree).as_posix()
        if _WANTED.match(rel) and path.is_file() and not path.is_symlink():
            contents[rel] = path.read_bytes()
    return contents


def warm_memo(tree: Path, epoch: int, metadata: dict[str, Any], memo_dir: Path) -> None:
    """Make and keep the memo ``sbom_for_packed_tree`` will look for, before the slug
    exists (while the build waits on something else, such as the entry-point check):
    the build's own call then finds it and only fills in the slug's checksum. Its key
    holds every input, so a tree or runtime changed meanwhile just misses it."""
    sbom_for_packed_tree(tree, _STAND_IN, epoch, metadata, memo_dir)


# The checksum a memoised document is made with; the slug's own replaces it (and its
# serial number, derived from it). No real document holds its first 12 digits.
_STAND_IN = hashlib.sha256(b"slugbuild sbom memo stand-in").hexdigest()
# Changes whenever what a memoised document holds, or how it is keyed, changes.
_MEMO_FORMAT = 1
# The distributions whose code decides a document's bytes (their versions key a memo).
_WRITERS = ("slugbuild", "cyclonedx-python-lib", "py-serializable", "packageurl-python",
            "license-expression")


def _memoised(memo_dir: Path, sha256: str, epoch: int, contents: dict[str, bytes],
              metadata: dict[str, Any]) -> bytes:
    """``_document`` through a memo (``_template``) with the slug's checksum filled in."""
    filled = _fill(_template(memo_dir, epoch, contents, metadata), sha256)
    if filled is None:  # never: the stand-in is where _document puts the checksum
        return _document(sha256, epoch, contents, metadata)
    return filled


def _template(memo_dir: Path, epoch: int, contents: dict[str, bytes],
              metadata: dict[str, Any]) -> bytes:
    """``_document`` with the stand-in checksum, kept in a memo keyed by everything else
    it reads: the bytes of every file it was given, the runtime's origin it repeats,
    the epoch and the versions of slugbuild and the CycloneDX library (which write its
    bytes). Best effort: an unreadable or unwritable memo makes the document afresh."""
    inputs = {"format": _MEMO_FORMAT, "spec": SPEC_VERSION, "epoch": epoch,
              "runtime": _runtime(contents, metadata),
              "files": sorted((name, _sha256(data)) for name, data in contents.items()),
              "versions": [_version_of(name) for name in _WRITERS]}
    key = _sha256(json.dumps(inputs, sort_keys=True).encode())
    path = memo_dir / f"sbom-{key[:32]}.cdx"
    try:
        template = path.read_bytes()
    except OSError:
        template = None
    if template is not None and _fill(template, _STAND_IN) is not None:
        return template
    template = _document(_STAND_IN, epoch, contents, metadata)
    if memo_dir.is_dir():
        temporary = memo_dir / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            temporary.write_bytes(template)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return template


def _fill(template: bytes, sha256: str) -> bytes | None:
    """The memoised document with the slug's checksum in place of the stand-in (in
    full, shortened to 12 digits, and in the serial number); None if it is not one."""
    stand_in_serial = _serial_text(_STAND_IN).encode()
    if stand_in_serial not in template or _STAND_IN.encode() not in template:
        return None
    text = template.replace(_STAND_IN.encode(), sha256.encode())
    text = text.replace(stand_in_serial, _serial_text(sha256).encode())
    return text.replace(_STAND_IN[:12].encode(), sha256[:12].encode())


def _serial(sha256: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"slugbuild:slug:sha256:{sha256}")


# uuid.NAMESPACE_URL's bytes (RFC 4122, appendix C).
_NAMESPACE_URL = bytes.fromhex("6ba7b8119dad11d180b400c04fd430c8")


def _serial_text(sha256: str) -> str:
    """``str(_serial(sha256))`` (RFC 4122 version 5) without loading ``uuid``: a warm
    build fills a kept document's serial number and needs nothing else from it."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_URL + f"slugbuild:slug:sha256:{sha256}".encode(),
                                 usedforsecurity=False).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _version_of(distribution: str) -> str:
    return installed_version(distribution) or "unknown"


def _document(sha256: str, epoch: int, contents: dict[str, bytes],
              metadata: dict[str, Any]) -> bytes:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    slug = Component(
        type=ComponentType.APPLICATION, name="slug", version=f"sha256:{sha256[:12]}",
        bom_ref=f"slug:sha256:{sha256}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)])
    tool = Component(type=ComponentType.APPLICATION, name="slugbuild", version=_own_version(),
                     bom_ref="slugbuild")
    bom = Bom(
        serial_number=_serial(sha256),
        metadata=BomMetaData(
            timestamp=datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc),
            component=slug))
    bom.metadata.tools.components.add(tool)
    runtime = _runtime(contents, metadata)
    if runtime is not None:
        version, origin = runtime
        bom.components.add(Component(
            type=ComponentType.PLATFORM, name="cpython", version=version,
            bom_ref=f"cpython@{version}",
            purl=PackageURL(type="generic", name="cpython", version=version),
            properties=[Property(name=f"slugbuild:runtime:{key}", value=value)
                        for key, value in sorted(origin.items())]))
    for dist_info, meta in sorted(_dist_infos(contents).items()):
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            continue
        record = contents.get(f"{dist_info}/RECORD")
        hashes = ([HashType(alg=HashAlgorithm.SHA_256,
                            content=_sha256(record))] if record is not None else [])
        bom.components.add(Component(
            type=ComponentType.LIBRARY, name=name, version=version,
            bom_ref=f"pypi:{_normal(name)}@{version}",
            purl=PackageURL(type="pypi", name=_normal(name), version=version),
            licenses=_licenses(meta), hashes=hashes,
            properties=[Property(name="slugbuild:hash-of", value="RECORD"),
                        Property(name="slugbuild:dist-info", value=dist_info)]))
    # The slug ships every component (a flat graph: which package needs which is
    # not recorded in a slug as installed).
    bom.register_dependency(slug, bom.components)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    return (text + "\n").encode()


def _own_version() -> str:
    """slugbuild's version, from its installed metadata (slug readers do not import
    the package's __init__, which loads the builder)."""
    return _version_of("slugbuild")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_infos(contents: dict[str, bytes]) -> dict[str, Any]:
    """dist-info directory -> its METADATA headers, read as the UTF-8 text the core
    metadata spec makes them (as bytes, a non-ASCII value came back as a Header object)."""
    parser = email_parser.HeaderParser()
    return {name[: -len("/METADATA")]: parser.parsestr(data.decode("utf-8", "replace"))
            for name, data in contents.items() if name.endswith("/METADATA")}


def _licenses(meta: Any) -> list[Any]:
    """PEP 639's License-Expression, else a short License field, else the classifiers."""
    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:  # cyclonedx-python-lib before the contrib package
        from cyclonedx.factory.license import LicenseFactory  # type: ignore[no-redef,unused-ignore]

    factory = LicenseFactory()
    expression = str(meta.get("License-Expression") or "").strip()
    if expression:
        return [factory.make_from_string(expression)]
    # A value with non-ASCII bytes comes as an email Header: str() decodes it.
    text = str(meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 100 and text.upper() != "UNKNOWN":
        return [factory.make_from_string(text)]
    classifiers = sorted({value.split(" :: ")[-1] for value in meta.get_all("Classifier") or []
                          if value.startswith(_LICENSE_CLASSIFIER)
                          and value.count(" :: ") >= 2})
    return [factory.make_with_name(name) for name in classifiers]


def _runtime(contents: dict[str, bytes], metadata: dict[str, Any]
             ) -> tuple[str, dict[str, str]] | None:
    """The runtime's version (from the slug) and its origin (from slug.json)."""
    for name, data in sorted(contents.items()):
        if name.endswith("patchlevel.h"):
            match = _PATCHLEVEL.search(data)
            if match:
                version = match.group(1).decode("ascii", "replace")
                recorded = metadata.get("runtime")
                origin: dict[str, str] = {}
                if isinstance(recorded, dict) and recorded.get("resolved") == version:
                    origin = {key: str(recorded[key]) for key in _RUNTIME_ORIGIN_FIELDS
                              if isinstance(recorded.get(key), (str, int))}
                return version, origin
    return None


def _matching_metadata(slug: Path, sha256: str) -> dict[str, Any] | None:
    """slug.json beside the slug, when it names this slug by its checksum."""
    try:
        metadata = json.loads(metadata_path_for(slug).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(metadata, dict) and metadata.get("checksum") == f"SHA256:{sha256}":
        return metadata
    return None
