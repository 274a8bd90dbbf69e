"""A slug (and a run image) made into an OCI image; an image rebased on a new run image.

Layers, bottom to top: the run image's, then one per cached layer part of the
slug (the Python runtime, the dependencies, and the Aptfile and NLTK layers when
the app has them), then the app. A layer part is taken from the slug file as it
is, plus one gzip member holding the tar's end blocks: nothing is compressed
again, and its digest depends only on the layer. The app layer is made from the
rest of the slug: the app's files and every directory, owned by the image's
user so the app can write where it runs (gunicorn's control socket, a sqlite
file), and the launcher. docs/images.md describes the result.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import platform
import posixpath
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from .. import __version__, errors
from ..cache import default_cache_dir, hold_open
from ..pack import (
    DEFAULT_LEVEL,
    LAYOUTS,
    _info,
    _ParallelGzipWriter,
    _TarWriter,
    _workers,
    source_date_epoch,
    tar_header,
)
from ..slug.archive import check_member, check_no_entry_below_a_link
from ..slug.metadata import metadata_path_for
from ..slug.sbom import sbom_for_slug, sbom_path_for
from ..textfiles import decimal, small_regular_file
from . import image as oci
from .image import Blob, Image, WriteResult
from .options import RegistryOptions
from .reference import ImageReference, parse_image_reference
from .referrer import SBOM_LIMIT, attach_sbom, read_sbom
from .registry import TransferStats

LABEL = "io.slugbuild"
RUN_IMAGE_LAYERS = f"{LABEL}.run-image.layers"
SBOM_DIGEST = f"{LABEL}.sbom.digest"
DEFAULT_UID = 1000
APP_PATH = "/app"
PYTHON_BIN = "/app/.heroku/python/bin"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The end of a tar (two zero blocks) as one gzip member: appended to a slug's layer
# part, it makes the part a complete layer.
END_OF_TAR = gzip.compress(b"\0" * 2 * tarfile.BLOCKSIZE, DEFAULT_LEVEL, mtime=0)
_CHUNK = 1024 * 1024
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                  "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass
class ImageResult:
    """What ``build_image`` wrote: where, its digests, its layers, what a push moved."""

    reference: str
    manifest_digest: str
    config_digest: str
    layers: list[dict[str, Any]]
    stats: TransferStats = field(default_factory=TransferStats)
    seconds: float = 0.0
    # The slug's SBOM attached to the image (referrer.SbomReferrer.as_dict), if any.
    sbom: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "manifest_digest": self.manifest_digest,
                "config_digest": self.config_digest, "layers": self.layers,
                "bytes_uploaded": self.stats.bytes_uploaded,
                "blobs_uploaded": self.stats.blobs_uploaded,
                "blobs_mounted": self.stats.blobs_mounted, "seconds": self.seconds,
                "sbom": self.sbom}


def build_image(slug: str | os.PathLike[str], image: str | ImageReference, *,
                run_image: str | ImageReference | None = None,
                cache_dir: str | os.PathLike[str] | None = None,
                registry: RegistryOptions | None = None,
                source_date_epoch: int | None = None,
                metadata: str | os.PathLike[str] | None = None) -> ImageResult:
    """Make the slug at ``slug`` (with its slug.json: ``metadata``, else beside it) into
    an image written to ``image``.

    ``image`` and ``run_image`` are references (``oci:DIR[:TAG]``,
    ``docker-archive:FILE[:NAME:TAG]``, ``docker://HOST/REPO[:TAG]``). Without
    ``run_image`` the image holds only the slug (a base for a Dockerfile's
    ``COPY --from``, not something that runs). Pulled run image layers and the
    uncompressed digests of layer parts are kept in ``cache_dir``.
    """
    started = time.perf_counter()
    target = _reference(image)
    if target.digest:
        raise errors.IMAGE_REFERENCE_INVALID.error(
            variant="digest-not-allowed", reference=str(image), what="an image to write")
    run_reference = _reference(run_image) if run_image is not None else None
    store = _Store(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    registry = registry or RegistryOptions()
    slug_path = Path(slug)
    described = read_slug_metadata(slug_path, Path(metadata) if metadata is not None else None)
    epoch = _epoch(source_date_epoch)
    base = oci.read_image(run_reference, blob_dir=store.blobs, registry=registry,
                          architecture=_architecture(None)) \
        if run_reference is not None else Image({}, [])
    check_run_image(described, base, str(run_reference) if run_reference else None, slug_path)
    user = image_user(base)
    slug_layers = layers_from_slug(slug_path, described, user=user, store=store, epoch=epoch)
    sbom = slug_sbom(slug_path, described)
    assembled = assemble(base, slug_layers, described, run_reference, user, epoch,
                         sbom_digest=oci.sha256_of(sbom))
    written = _write(assembled, target, epoch, registry, store)
    # After the image: a referrer names its subject, which must be there first.
    attached = attach_sbom(sbom, assembled.manifest(), target, _iso(epoch), registry)
    result = _result(written, assembled, len(base.layers), started)
    result.sbom = attached.as_dict()
    return result


def slug_sbom(slug: Path, metadata: dict[str, Any]) -> bytes:
    """The slug's CycloneDX SBOM: the file the build wrote beside it (slug.cdx.json)
    when it names this slug by its SHA-256, else made from the slug."""
    sha256 = str(metadata.get("checksum", "")).split(":", 1)[-1]
    # A regular file within the SBOM limit: a fifo beside a slug from elsewhere hung.
    written = small_regular_file(sbom_path_for(slug), SBOM_LIMIT.most) or b"null"
    try:
        component = json.loads(written)["metadata"]["component"]
        if any(entry.get("alg") == "SHA-256" and entry.get("content") == sha256
               for entry in component.get("hashes") or []):
            return written
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return sbom_for_slug(slug, metadata)


def _write(image: Image, target: ImageReference, epoch: int, registry: RegistryOptions,
           store: _Store) -> WriteResult:
    """Write the image; for a registry, layers this machine pushed to another repository
    of it before are mounted from there (a stale note costs only an upload)."""
    if target.is_registry:
        assert target.host is not None and target.repository is not None
        host = target.host
        image = Image(image.config, [
            dataclasses.replace(layer, source=(host, known)) if layer.source is None
            and (known := store.pushed_to(host, layer.digest)) is not None else layer
            for layer in image.layers], image.annotations, image.source_digest)
    written = oci.write_image(image, target, epoch, registry)
    if target.is_registry:
        assert target.host is not None and target.repository is not None
        store.remember_pushed(target.host, target.repository,
                              [layer.digest for layer in image.layers])
    return written


def rebase_image(image: str | ImageReference, run_image: str | ImageReference, *,
                 output: str | ImageReference | None = None,
                 cache_dir: str | os.PathLike[str] | None = None,
                 registry: RegistryOptions | None = None,
                 source_date_epoch: int | None = None) -> ImageResult:
    """Put the app layers of ``image`` on ``run_image`` (as ``pack rebase``): the app
    layers keep their digests; written to ``output`` (default: ``image`` itself)."""
    started = time.perf_counter()
    source = _reference(image)
    target = _reference(output) if output is not None else source
    if target.digest:
        raise errors.IMAGE_REFERENCE_INVALID.error(
            variant="digest-not-allowed", reference=str(target), what="an image to write")
    new_base_reference = _reference(run_image)
    store = _Store(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    registry = registry or RegistryOptions()
    current = oci.read_image(source, blob_dir=store.blobs, registry=registry,
                             architecture=_architecture(None))
    labels = _labels_of(current)
    count = labels.get(RUN_IMAGE_LAYERS)
    layer_count = decimal(str(count)) if count is not None else None
    if layer_count is None or layer_count > len(current.layers):
        raise errors.IMAGE_SOURCE_UNUSABLE.error(
            variant="not-slugbuild-image", reference=str(source), label=RUN_IMAGE_LAYERS)
    new_base = oci.read_image(new_base_reference, blob_dir=store.blobs, registry=registry,
                              architecture=_architecture(None))
    try:
        requirements = json.loads(labels.get(f"{LABEL}.stack-requirements") or "null")
    except (ValueError, RecursionError):  # a label edited by hand: nothing to compare
        requirements = None
    metadata = {"stack_requirements": requirements}
    check_run_image(metadata, new_base, str(new_base_reference))
    app_layers = current.layers[layer_count:]
    own_history = [entry for entry in _history_of(current)
                   if str(entry.get("created_by", "")).startswith("slugbuild")]
    config = json.loads(json.dumps(current.config))
    epoch = _epoch(source_date_epoch)
    run_labels = _run_image_labels(new_base, new_base_reference)
    config["config"]["Labels"] = {**_labels_of(new_base),
                                  **{k: v for k, v in labels.items()
                                     if not k.startswith(f"{LABEL}.run-image")
                                     and not k.startswith("org.opencontainers.image.base")},
                                  **run_labels}
    config["config"]["Env"] = _environment(_env_of(new_base))
    config["architecture"] = new_base.config.get("architecture", config.get("architecture"))
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in
                                                         [*new_base.layers, *app_layers]]}
    config["history"] = _base_history(new_base, epoch) + own_history
    annotations = {k: v for k, v in current.annotations.items()
                   if not k.startswith(f"{LABEL}.run-image")
                   and not k.startswith("org.opencontainers.image.base")}
    annotations.update(run_labels)
    rebased = Image(config, [*new_base.layers, *app_layers], annotations)
    written = _write(rebased, target, epoch, registry, store)
    result = _result(written, rebased, len(new_base.layers), started)
    # The slug is the same: its SBOM, found beside the image, is attached to the new one.
    sbom = read_sbom(source, str(labels.get(SBOM_DIGEST, "")), store.blobs, registry)
    if sbom is not None:
        result.sbom = attach_sbom(sbom, rebased.manifest(), target, _iso(epoch),
                                  registry).as_dict()
    return result


def _result(written: WriteResult, image: Image, base_count: int,
            started: float) -> ImageResult:
    roles = ["run image"] * base_count + [
        str(entry.get("comment", "slug")) for entry in image.config.get("history", [])
        if isinstance(entry, dict) and str(entry.get("created_by", "")).startswith("slugbuild")]
    layers = [{"role": roles[index] if index < len(roles) else "slug", "digest": layer.digest,
               "size": layer.size, "diff_id": layer.diff_id}
              for index, layer in enumerate(image.layers)]
    return ImageResult(written.reference, written.manifest_digest, image.config_digest,
                       layers, written.stats, round(time.perf_counter() - started, 3))


def _reference(value: str | ImageReference) -> ImageReference:
    return value if isinstance(value, ImageReference) else parse_image_reference(value)


def _epoch(explicit: int | None) -> int:
    """The image's time: ``explicit``, else SOURCE_DATE_EPOCH, else 1980 (as the slug's)."""
    return source_date_epoch(explicit)


def _architecture(machine: str | None) -> str:
    machine = machine or platform.machine()
    return _ARCHITECTURES.get(machine, machine)


# --- the slug ----------------------------------------------------------------------------
# The most a slug.json read to make an image may be (a large app's is well under 1 MiB).
MAX_SLUG_METADATA = 16 * 1024 * 1024


def read_slug_metadata(slug: Path, metadata_path: Path | None = None) -> dict[str, Any]:
    """slug.json (``metadata_path``, else beside ``slug``), checked to describe the slug
    (its checksum)."""
    metadata_path = metadata_path if metadata_path is not None else metadata_path_for(slug)
    if not slug.is_file():
        raise errors.SLUG_UNREADABLE.error(path=slug, reason="no such file")
    # Read only as a regular file within a bound: the slug (and so its slug.json) may
    # come from elsewhere, and a fifo there hung `slugbuild image`, /dev/zero filled memory.
    data = small_regular_file(metadata_path, MAX_SLUG_METADATA)
    if data is None and os.path.lexists(metadata_path):
        raise errors.IMAGE_SOURCE_UNUSABLE.error(
            variant="metadata-unreadable", metadata=metadata_path, limit=MAX_SLUG_METADATA)
    try:
        if data is None:
            raise ValueError("no slug.json")
        metadata = json.loads(data)
    except (ValueError, RecursionError):
        raise errors.IMAGE_SOURCE_UNUSABLE.error(
            variant="no-metadata", slug=slug, metadata=metadata_path) from None
    if not isinstance(metadata, dict) or \
            metadata.get("checksum") != "SHA256:" + oci.hash_file(slug).split(":", 1)[1]:
        raise errors.IMAGE_SOURCE_UNUSABLE.error(
            variant="metadata-mismatch", slug=slug, metadata=metadata_path)
    return metadata


class _Store:
    """What image building keeps in the cache: blobs (pulled run image layers, layer
    parts made complete, app layers) and the uncompressed digest of each layer part."""

    def __init__(self, cache_root: Path) -> None:
        self.root = cache_root / "oci"
        self.blobs = self.root / "blobs"
        self.parts = self.root / "parts"
        # While images are made from it, ``cache prune`` leaves oci/ alone (closed with us).
        self._open = hold_open(cache_root)
        for directory in (self.blobs, self.parts):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise errors.from_os_error(exc, directory) from exc

    def part_record(self, part_sha256: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.parts / f"{part_sha256}.json").read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def keep_part_record(self, part_sha256: str, record: dict[str, Any]) -> None:
        _atomic_bytes(self.parts / f"{part_sha256}.json", oci.canonical_json(record))

    def _pushed_dir(self, host: str) -> Path:
        return self.root / "pushed" / host.replace(":", "_").replace("/", "_")

    def pushed_to(self, host: str, digest: str) -> str | None:
        """A repository of ``host`` this machine pushed blob ``digest`` to."""
        try:
            return (self._pushed_dir(host) / digest.split(":", 1)[1]).read_text().strip() \
                or None
        except OSError:
            return None

    def remember_pushed(self, host: str, repository: str, digests: list[str]) -> None:
        """Note where blobs went (best effort: a read-only cache only loses mounts)."""
        try:
            directory = self._pushed_dir(host)
            directory.mkdir(parents=True, exist_ok=True)
            for digest in digests:
                _atomic_bytes(directory / digest.split(":", 1)[1], repository.encode())
        except OSError:
            pass


def _atomic_bytes(path: Path, data: bytes) -> None:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class ImageUser:
    uid: int
    gid: int

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"


def image_user(base: Image) -> ImageUser:
    """The run image's user when it names a non-root one (``uid[:gid]``, or a name in
    its /etc/passwd), else uid and gid 1000."""
    configured = str(_config_of(base).get("User") or "").strip()
    name, _, group = configured.partition(":")
    if not name or name in ("0", "root"):
        return ImageUser(DEFAULT_UID, DEFAULT_UID)
    uid, gid = decimal(name, 10), decimal(group, 10)
    if uid is not None:
        return ImageUser(uid, gid if gid is not None else uid)
    for line in _file_in_layers(base.layers, "etc/passwd").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            found_uid, found_gid = decimal(fields[2], 10), decimal(fields[3], 10)
            if found_uid is not None and found_gid is not None:
                return ImageUser(found_uid, gid if gid is not None else found_gid)
    return ImageUser(DEFAULT_UID, DEFAULT_UID)


def _config_of(image: oci.Image) -> dict[str, Any]:
    """An image config's ``config`` object (labels, user, env, ...); empty when a
    crafted config holds something else there."""
    found = image.config.get("config")
    return found if isinstance(found, dict) else {}


def _labels_of(image: oci.Image) -> dict[str, str]:
    """An image config's labels, the string ones (a crafted run image's `Labels` may be
    a list, or hold numbers: merged as they were, that was a TypeError)."""
    found = _config_of(image).get("Labels")
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(found, dict) else {}


def _env_of(image: oci.Image) -> list[str]:
    """An image config's `Env` entries that are strings (anything else: none)."""
    found = _config_of(image).get("Env")
    return [item for item in found if isinstance(item, str)] if isinstance(found, list) else []


def _history_of(image: oci.Image) -> list[dict[str, Any]]:
    """An image config's history entries that are objects (anything else: none)."""
    found = image.config.get("history")
    return [entry for entry in found if isinstance(entry, dict)] \
        if isinstance(found, list) else []


def _file_in_layers(layers: list[Blob], path: str) -> str:
    """The text of ``path`` in the topmost layer that has it ('' if none). A layer that
    is no readable tar (a crafted run image's: its digest matched, its bytes are not a
    layer) is image-unreadable, not a traceback."""
    for layer in reversed(layers):
        try:
            with oci.layer_tar(layer) as stream, \
                    tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.name.lstrip("./").lstrip("/") == path and member.isfile():
                        extracted = tar.extractfile(member)
                        # At most 1 MiB: a run image's /etc/passwd is far smaller.
                        return extracted.read(1 << 20).decode("utf-8", "replace") \
                            if extracted else ""
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise errors.IMAGE_UNREADABLE.error(
                reference=layer.origin or "the run image",
                reason=f"its layer {layer.digest} is not a readable tar ({exc})") from None
    return ""


@dataclass(frozen=True)
class SlugLayer:
    """One image layer made from the slug, and what it holds (its history comment)."""

    role: str
    blob: Blob


def layers_from_slug(slug: Path, metadata: Mapping[str, Any], *, user: ImageUser,
                     store: _Store, epoch: int) -> list[SlugLayer]:
    """The slug's image layers: each layer part as it is, then the app layer."""
    layout = metadata.get("layout")
    parts = metadata.get("layer_parts")
    size = slug.stat().st_size
    usable = layout == "heroku" and isinstance(parts, list) and all(
        isinstance(p, dict) and isinstance(p.get("offset"), int)
        and isinstance(p.get("length"), int) and isinstance(p.get("sha256"), str)
        and p["offset"] >= 0 and p["offset"] + p["length"] <= size for p in parts)
    layers: list[SlugLayer] = []
    ranges: list[tuple[int, int]] = []
    if usable:
        assert isinstance(parts, list)
        with open(slug, "rb") as handle:
            for part in sorted(parts, key=lambda p: p["offset"]):
                blob = _part_layer(handle, part["offset"], part["length"], part["sha256"], store)
                if blob is None:  # not what slug.json says: the bytes go to the app layer
                    continue
                layers.append(SlugLayer(_part_role(handle, part["offset"], len(layers)), blob))
                ranges.append((part["offset"], part["length"]))
    base = LAYOUTS.get(str(layout), ".")
    app = _app_layer(slug, ranges, base, user, epoch, metadata)
    layers.append(SlugLayer("app", app))
    return layers


def _part_layer(handle: IO[bytes], offset: int, length: int, part_sha256: str,
                store: _Store) -> Blob | None:
    """The layer part at ``offset`` made a complete layer blob (kept in the store)."""
    handle.seek(offset)
    hasher, whole = hashlib.sha256(), hashlib.sha256()
    remaining = length
    while remaining:
        chunk = handle.read(min(_CHUNK, remaining))
        if not chunk:
            return None
        hasher.update(chunk)
        whole.update(chunk)
        remaining -= len(chunk)
    if hasher.hexdigest() != part_sha256:
        return None
    whole.update(END_OF_TAR)
    digest = "sha256:" + whole.hexdigest()
    path = store.blobs / digest.split(":", 1)[1]
    record = store.part_record(part_sha256)
    # The kept blob is hashed again (cheap next to compressing): a damaged cache file
    # is made again, never used.
    if not path.is_file() or path.stat().st_size != length + len(END_OF_TAR) \
            or record is None or record.get("digest") != digest \
            or not isinstance(record.get("diff_id"), str) or oci.hash_file(path) != digest:
        handle.seek(offset)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as out:
                remaining = length
                while remaining:
                    chunk = handle.read(min(_CHUNK, remaining))
                    out.write(chunk)
                    remaining -= len(chunk)
                out.write(END_OF_TAR)
            diff_id = _checked_diff_id(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        record = {"digest": digest, "diff_id": diff_id}
        store.keep_part_record(part_sha256, record)
    return oci.file_blob(path, oci.LAYER_GZIP, str(record["diff_id"]), digest=digest)


class _HashingReader(io.RawIOBase):
    """Reads from ``source``, hashing what passes."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        buffer[:len(data)] = data
        self.hasher.update(data)
        return len(data)


def _checked_diff_id(blob: Path) -> str:
    """The uncompressed digest of a gzip layer made from a slug's part, every entry
    checked as the slug readers check them (a slug from elsewhere could hold a path
    that leaves the image's /app)."""
    with open(blob, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
        reader = _HashingReader(cast(IO[bytes], inflated))
        with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
            for member in tar:
                check_member(member)
        while reader.read(_CHUNK):
            pass
    return "sha256:" + reader.hasher.hexdigest()


def _part_role(handle: IO[bytes], offset: int, index: int) -> str:
    """What a layer part holds, from its first entry's path."""
    handle.seek(offset)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    head = inflater.decompress(handle.read(64 * 1024), tarfile.BLOCKSIZE)
    name = head[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    for marker, role in ((".apt/", "Aptfile packages"), ("nltk_data", "NLTK data"),
                         ("site-packages", "dependencies")):
        if marker in name:
            return role
    return "Python runtime" if index == 0 else "dependencies"


def _gaps(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    gaps, position = [], 0
    for offset, length in sorted(ranges):
        if offset > position:
            gaps.append((position, offset - position))
        position = max(position, offset + length)
    if position < size:
        gaps.append((position, size - position))
    return gaps


def _inflate(data: bytes) -> bytes:
    """Every gzip member of ``data``, decompressed."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += inflater.decompress(data)
        out += inflater.flush()
        if not inflater.eof:
            break
        data = inflater.unused_data
    return bytes(out)


class _HashingSink:
    def __init__(self, target: Any) -> None:
        self.target = target
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.target.write(data)
        return len(data)


def _app_layer(slug: Path, layer_ranges: list[tuple[int, int]], base: str, user: ImageUser,
               epoch: int, metadata: Mapping[str, Any]) -> Blob:
    """Everything of the slug outside the layer parts, owned by the image's user and
    placed under /app, plus the launcher: one deterministic gzip layer."""
    size = slug.stat().st_size
    with open(slug, "rb") as handle:
        raw = bytearray()
        for offset, length in _gaps(layer_ranges, size):
            handle.seek(offset)
            raw += _inflate(handle.read(length))
    # The slug's entries sit under ./app/ (heroku layout) or ./ (herokuish).
    strip = "./app/" if base == "./app" else "./"
    out = io.BytesIO()
    with _ParallelGzipWriter(out, DEFAULT_LEVEL, _workers()) as gz:
        sink = _HashingSink(gz)
        tar = _TarWriter(sink)
        tar.add(_owned(_info("./app/", epoch, tarfile.DIRTYPE, 0o755), user))
        data = bytes(raw)
        entries = _tar_entries(data)
        members = [member for member, _ in entries]
        for member in members:
            check_member(member)
        check_no_entry_below_a_link(members)
        for member, offset in entries:
            # Normalised: a herokuish slug's root entry reads back as "." and would
            # become a second "./app/./" entry, which podman refuses as a duplicate.
            relative = posixpath.normpath(member.name)
            name = "./" if relative == "." else "./" + relative
            if member.isdir():
                name = name.rstrip("/") + "/"
            if not name.startswith(strip) or name in (strip, "./"):
                continue
            info = _info("./app/" + name[len(strip):], epoch, member.type,
                         member.mode & 0o7777)
            info.linkname = member.linkname
            info.size = member.size if member.isfile() else 0
            _owned(info, user)
            if member.isfile():
                _add_bytes(tar, info, data[offset:offset + member.size])
            else:
                tar.add(info)
        made: set[str] = set()
        for file_path, (content, mode) in sorted(launcher_files(metadata).items()):
            for directory in _parents(file_path):
                if directory not in made:
                    made.add(directory)
                    tar.add(_info(f".{directory}/", epoch, tarfile.DIRTYPE, 0o755))
            info = _info(f".{file_path}", epoch, tarfile.REGTYPE, mode)
            info.size = len(content)
            _add_bytes(tar, info, content)
        tar.finish()
    # Kept in memory, not in the cache: every app change makes a new one.
    return oci.bytes_blob(out.getvalue(), oci.LAYER_GZIP, "sha256:" + sink.hasher.hexdigest())


def _parents(path: str) -> list[str]:
    """The directories above ``path`` (absolute), outermost first."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


def _owned(info: tarfile.TarInfo, user: ImageUser) -> tarfile.TarInfo:
    info.uid, info.gid = user.uid, user.gid
    return info


def _add_bytes(tar: _TarWriter, info: tarfile.TarInfo, body: bytes) -> None:
    """A file entry from bytes in memory (the app's files, read from the slug)."""
    tar._write(tar_header(info))
    tar._write(body)
    padding = -len(body) % tarfile.BLOCKSIZE
    if padding:
        tar._write(b"\0" * padding)


_ZERO_BLOCK = b"\0" * tarfile.BLOCKSIZE
_TYPES = {b"0": tarfile.REGTYPE, b"\0": tarfile.REGTYPE, b"2": tarfile.SYMTYPE,
          b"5": tarfile.DIRTYPE}


def _tar_entries(data: bytes) -> list[tuple[tarfile.TarInfo, int]]:
    """The entries of a tar in memory with where each one's data starts.

    A slug's tar holds plain ustar headers and pax records for long names (what
    pack.py writes), read here directly: tarfile's reader costs more than the rest
    of the app layer together. Anything else (GNU records, base-256 sizes, a
    header that does not parse) is read by tarfile instead.
    """
    try:
        return _ustar_entries(data)
    except (ValueError, KeyError):
        with tarfile.open(fileobj=io.BytesIO(data + _ZERO_BLOCK * 2), mode="r:") as tar:
            return [(member, member.offset_data) for member in tar.getmembers()]


def _ustar_entries(data: bytes) -> list[tuple[tarfile.TarInfo, int]]:
    entries: list[tuple[tarfile.TarInfo, int]] = []
    position = 0
    pax: dict[str, str] = {}
    while position + tarfile.BLOCKSIZE <= len(data):
        block = data[position:position + tarfile.BLOCKSIZE]
        if block == _ZERO_BLOCK:
            break
        if block[124] & 0x80 or block[257:262] != b"ustar":
            raise ValueError("not a plain ustar header")
        size = int(pax["size"]) if "size" in pax else int(_field(block, 124, 136) or b"0", 8)
        start = position + tarfile.BLOCKSIZE
        position = start + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        kind = block[156:157]
        if kind == b"x":
            pax = _pax_records(data[start:start + size])
            continue
        prefix, name = _field(block, 345, 500), _field(block, 0, 100)
        info = tarfile.TarInfo(pax.get("path") or (
            (prefix + b"/" + name) if prefix else name).decode("utf-8", "surrogateescape"))
        info.type = _TYPES[kind]
        if info.type == tarfile.DIRTYPE:  # named as tarfile names them
            info.name = info.name.rstrip("/")
        info.mode = int(_field(block, 100, 108) or b"0", 8)
        info.size = size
        info.linkname = pax.get("linkpath") or _field(block, 157, 257).decode(
            "utf-8", "surrogateescape")
        entries.append((info, start))
        pax = {}
    return entries


def _field(block: bytes, start: int, end: int) -> bytes:
    return block[start:end].split(b"\0", 1)[0].strip()


def _pax_records(data: bytes) -> dict[str, str]:
    """``LENGTH KEY=VALUE\\n`` records of a pax extended header."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        length = int(data[position:data.index(b" ", position)])
        record = data[position:position + length]
        key, _, value = record[record.index(b" ") + 1:-1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


# --- launcher and compatibility ---------------------------------------------------------------
def launcher_files(metadata: Mapping[str, Any]) -> dict[str, tuple[bytes, int]]:
    """The launcher's files: absolute path -> (content, mode)."""
    process_types = metadata.get("process_types") or {}
    config_vars = metadata.get("release_config_vars") or {}
    from . import launcher

    return launcher.launcher_files(process_types, config_vars)


def launcher_path() -> str:
    from . import launcher

    return str(launcher.LAUNCHER_PATH)


def check_run_image(metadata: Mapping[str, Any], base: Image, name: str | None,
                    slug: Path | None = None) -> None:
    """Refuse a run image that lacks what the slug needs (stack_compat): the needs
    slug.json records, else those read from ``slug`` (an older slug.json)."""
    if name is None:
        return
    from .. import stack_compat

    requirements = stack_compat.StackRequirements.from_dict(metadata.get("stack_requirements"))
    if requirements is None and slug is not None:
        requirements = stack_compat.slug_archive_requirements(
            slug, LAYOUTS.get(str(metadata.get("layout")), "."))
    if requirements is None:
        return
    streams: list[_DigestReader] = []
    try:
        for layer in base.layers:
            streams.append(_DigestReader(layer.open()))
        try:
            files = stack_compat.RunImageFiles.from_layers(
                cast(list[IO[bytes]], streams), base.config.get("architecture"))
        except (gzip.BadGzipFile, EOFError, zlib.error, tarfile.TarError):
            files = None
        # What the check read is what the digests name: a damaged layer is
        # image-unreadable, not a run image that lacks libraries.
        for layer, stream in zip(base.layers, streams):
            if stream.finish() != layer.digest:
                raise oci._damaged(layer.origin, layer.digest, "its digest")
    finally:
        for stream in streams:
            stream.close()
    if files is not None:
        stack_compat.require_compatible(requirements, files, name)


class _DigestReader(_HashingReader):
    """A layer stream hashed as it is read; ``finish`` reads the rest and gives the
    digest of everything."""

    def finish(self) -> str:
        for chunk in iter(lambda: self.source.read(1 << 20), b""):
            self.hasher.update(chunk)
        return "sha256:" + self.hasher.hexdigest()

    def close(self) -> None:
        self.source.close()
        super().close()


# --- the image ---------------------------------------------------------------------------
def _environment(base_env: Iterable[str]) -> list[str]:
    env = {item.split("=", 1)[0]: item.split("=", 1)[1] for item in base_env if "=" in item}
    path = env.get("PATH", DEFAULT_PATH)
    env["PATH"] = path if path.startswith(PYTHON_BIN + ":") else f"{PYTHON_BIN}:{path}"
    env["HOME"] = APP_PATH
    return [f"{name}={value}" for name, value in env.items()]


def _run_image_labels(base: Image, reference: ImageReference | None) -> dict[str, str]:
    if reference is None:
        return {RUN_IMAGE_LAYERS: "0"}
    labels = {RUN_IMAGE_LAYERS: str(len(base.layers)),
              f"{LABEL}.run-image.top-layer": base.layers[-1].diff_id if base.layers else "",
              "org.opencontainers.image.base.digest": base.source_digest or
              base.manifest_digest}
    if reference.is_registry:  # a layout's or archive's path says nothing elsewhere
        labels["org.opencontainers.image.base.name"] = str(reference.with_tag(reference.tag))
    return labels


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _base_history(base: Image, epoch: int) -> list[dict[str, Any]]:
    history = _history_of(base)
    if sum(not entry.get("empty_layer") for entry in history) == len(base.layers):
        return history
    return [{"created": _iso(epoch), "created_by": "run image layer"} for _ in base.layers]


def assemble(base: Image, slug_layers: list[SlugLayer], metadata: Mapping[str, Any],
             run_reference: ImageReference | None, user: ImageUser, epoch: int,
             sbom_digest: str | None = None) -> Image:
    """The image config and manifest annotations for the run image plus the slug layers
    (``sbom_digest``: the slug's SBOM, which the image's referrer carries)."""
    process_types = metadata.get("process_types") or {}
    runtime = metadata.get("runtime") or {}
    packages = [f"{p.get('name')}=={p.get('version')}" for p in metadata.get("packages") or []
                if isinstance(p, dict)]
    labels = {
        f"{LABEL}.version": __version__,
        f"{LABEL}.process-types": json.dumps(process_types, sort_keys=True),
        f"{LABEL}.release-command": str(metadata.get("release_command")
                                        or process_types.get("release") or ""),
        f"{LABEL}.runtime": " ".join(str(runtime.get(key, "")) for key in
                                     ("implementation", "resolved")).strip()
        if isinstance(runtime, dict) else "",
        f"{LABEL}.packages": json.dumps(packages),
        f"{LABEL}.slug.sha256": str(metadata.get("checksum", "")).split(":", 1)[-1],
        **_run_image_labels(base, run_reference),
    }
    if sbom_digest is not None:
        labels[SBOM_DIGEST] = sbom_digest
    if metadata.get("stack_requirements") is not None:
        labels[f"{LABEL}.stack-requirements"] = json.dumps(metadata["stack_requirements"],
                                                           sort_keys=True)
    config = {
        "created": _iso(epoch),
        "architecture": base.config.get("architecture") or _architecture(None),
        "os": base.config.get("os") or "linux",
        "config": {
            "User": user.spec,
            "WorkingDir": APP_PATH,
            "Env": _environment(_env_of(base)),
            "Entrypoint": [launcher_path()],
            "ExposedPorts": {"5000/tcp": {}},
            "Labels": {**_labels_of(base), **labels},
        },
        "rootfs": {"type": "layers", "diff_ids": [
            layer.diff_id for layer in [*base.layers, *(s.blob for s in slug_layers)]]},
        "history": _base_history(base, epoch) + [
            {"created": _iso(epoch), "created_by": f"slugbuild {__version__}",
             "comment": layer.role} for layer in slug_layers],
    }
    if base.config.get("variant"):
        config["variant"] = base.config["variant"]
    return Image(config, [*base.layers, *(s.blob for s in slug_layers)], dict(labels))
