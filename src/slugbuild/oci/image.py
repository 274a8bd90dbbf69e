"""OCI images in and out: an OCI layout, a docker-archive, a registry.

An ``Image`` is its config (JSON bytes), its layers (blobs with their digest,
size, media type and uncompressed digest) and the manifest annotations. Every
writer serialises JSON the same way (sorted keys, no spaces), so the same image
gives the same manifest digest wherever it is written. Writers put nothing in
place until everything is written: a layout's ``index.json`` last, an archive
renamed into place, a registry's manifest after every blob.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from .. import errors
from ..textfiles import small_regular_file
from .options import RegistryOptions
from .reference import DEFAULT_TAG, ImageReference, parse_registry_name
from .registry import CONFIG_LIMIT, MAX_MANIFEST_BYTES, BlobLimit, TransferStats

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"
_GZIP_TYPES = (LAYER_GZIP, DOCKER_LAYER_GZIP)
_CHUNK = 1024 * 1024
# The most a layout's index.json, a manifest or a config read into memory may be (the
# limit containers/image sets for a manifest; slugbuild's own are a few KiB).
MAX_LAYOUT_FILE = MAX_MANIFEST_BYTES


def canonical_json(value: Any) -> bytes:
    """The one serialisation of every JSON document slugbuild writes into an image."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A layer of an image: its bytes (from ``open``), digest, size and media type.

    ``diff_id`` is the sha256 of the uncompressed tar (the config's
    ``rootfs.diff_ids``).
    """

    digest: str
    size: int
    media_type: str
    diff_id: str
    open: Callable[[], IO[bytes]] = field(compare=False, repr=False)
    # Where it came from in a registry (host, repository): a push to another
    # repository of the same registry mounts it from there.
    source: tuple[str, str] | None = field(default=None, compare=False)
    # The image it was read from, for messages ("" for a layer made here).
    origin: str = field(default="", compare=False)

    @property
    def compressed(self) -> bool:
        return self.media_type in _GZIP_TYPES


def file_blob(path: Path, media_type: str, diff_id: str, digest: str | None = None,
              source: tuple[str, str] | None = None, origin: str = "") -> Blob:
    """A blob whose bytes are the file ``path``."""
    if digest is None:
        digest = hash_file(path)
    return Blob(digest, path.stat().st_size, media_type, diff_id,
                lambda: open(path, "rb"), source, origin)


def bytes_blob(data: bytes, media_type: str, diff_id: str) -> Blob:
    return Blob(sha256_of(data), len(data), media_type, diff_id, lambda: io.BytesIO(data))


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass
class Image:
    """An image ready to be written: config, layers, manifest annotations."""

    config: dict[str, Any]
    layers: list[Blob]
    annotations: dict[str, str] = field(default_factory=dict)
    # The manifest digest of an image read from somewhere (its own serialisation).
    source_digest: str | None = None

    @property
    def config_bytes(self) -> bytes:
        return canonical_json(self.config)

    @property
    def config_digest(self) -> str:
        return sha256_of(self.config_bytes)

    def manifest(self) -> bytes:
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config_digest,
                       "size": len(self.config_bytes)},
            "layers": [{"mediaType": _oci_type(layer.media_type), "digest": layer.digest,
                        "size": layer.size} for layer in self.layers],
        }
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return canonical_json(document)

    @property
    def manifest_digest(self) -> str:
        return sha256_of(self.manifest())


def _oci_type(media_type: str) -> str:
    return {DOCKER_LAYER_GZIP: LAYER_GZIP, DOCKER_LAYER_TAR: LAYER_TAR}.get(media_type,
                                                                           media_type)


@dataclass
class WriteResult:
    """Where an image went: its manifest digest and what a push moved."""

    reference: str
    manifest_digest: str
    stats: TransferStats = field(default_factory=TransferStats)


# --- writing -----------------------------------------------------------------------------
def write_image(image: Image, target: ImageReference, epoch: int,
                registry: RegistryOptions | None = None) -> WriteResult:
    """Write ``image`` to ``target``; nothing half-written is left or reported as done."""
    if target.transport == "oci":
        return write_layout(image, target)
    if target.transport == "docker-archive":
        return write_archive(image, target, epoch)
    return push_image(image, target, registry or RegistryOptions())


def write_layout(image: Image, target: ImageReference) -> WriteResult:
    """Add ``image`` to the OCI layout at ``target.path`` under its tag (others kept)."""
    assert target.path is not None
    root = target.path
    tag = target.tag or DEFAULT_TAG
    try:
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        layout_file = root / "oci-layout"
        if not layout_file.exists():
            _atomic_write(layout_file, canonical_json({"imageLayoutVersion": "1.0.0"}))
        for layer in image.layers:
            _store_blob(blobs, layer.digest, layer.open, layer.origin)
        manifest = image.manifest()
        _store_blob(blobs, image.config_digest, lambda: io.BytesIO(image.config_bytes))
        _store_blob(blobs, sha256_of(manifest), lambda: io.BytesIO(manifest))
        # The directory locked while index.json is read and replaced: two images
        # written into one layout at once keep both tags.
        with _locked_directory(root):
            index = _read_index(root)
            entries = [entry for entry in _listed(index.get("manifests"))
                       if isinstance(entry, dict)
                       and _mapping(entry.get("annotations")).get(REF_NAME) != tag]
            entries.append({"mediaType": OCI_MANIFEST, "digest": sha256_of(manifest),
                            "size": len(manifest), "annotations": {REF_NAME: tag}})
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            _atomic_write(root / "index.json", canonical_json(index))
    except OSError as exc:
        raise errors.from_os_error(exc) from exc
    return WriteResult(str(target.with_tag(tag)), sha256_of(manifest))


@contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _read_index(root: Path) -> dict[str, Any]:
    """The layout's index.json ({} where there is none yet), read only as a regular file
    of at most MAX_LAYOUT_FILE bytes: a fifo there hung the read, /dev/zero filled memory."""
    path = root / "index.json"
    data = small_regular_file(path, MAX_LAYOUT_FILE)
    if data is None:
        if not os.path.lexists(path):
            return {}
        raise errors.IMAGE_UNREADABLE.error(
            reference=f"oci:{root}",
            reason=f"index.json is not a regular file of at most {MAX_LAYOUT_FILE} bytes")
    try:
        loaded = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise errors.IMAGE_UNREADABLE.error(
            reference=f"oci:{root}", reason=f"index.json cannot be read ({exc})") from None
    return loaded if isinstance(loaded, dict) else {}


def _store_blob(blobs: Path, digest: str, opener: Callable[[], IO[bytes]],
                origin: str = "") -> None:
    """Copy a blob in under its digest, checked; an existing blob is kept as is."""
    final = blobs / digest.split(":", 1)[1]
    if final.exists():
        return
    handle, name = tempfile.mkstemp(prefix=".blob-", dir=blobs)
    partial = Path(name)
    try:
        hasher = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, opener() as source:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                hasher.update(chunk)
                out.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise _damaged(origin, digest, "its digest")
        os.chmod(partial, 0o644)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(name, 0o644)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def write_archive(image: Image, target: ImageReference, epoch: int) -> WriteResult:
    """A docker-archive (what ``docker load`` / ``podman load`` read): uncompressed layers."""
    assert target.path is not None
    path = target.path
    name = target.repository or "slugbuild-image"
    tag = target.tag or DEFAULT_TAG
    config_name = image.config_digest.split(":", 1)[1] + ".json"
    layer_names = [layer.diff_id.split(":", 1)[1] + ".tar" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": [f"{name}:{tag}"], "Layers": layer_names}]
    try:
        handle, partial_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                                dir=path.parent)
    except OSError as exc:
        raise errors.from_os_error(exc, path) from exc
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as out, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            written: set[str] = set()
            for layer, layer_name in zip(image.layers, layer_names):
                if layer_name in written:
                    continue
                written.add(layer_name)
                with tempfile.TemporaryFile(dir=path.parent) as raw:
                    _uncompressed(layer, raw)
                    _add_member(archive, layer_name, epoch, raw)
            _add_member(archive, config_name, epoch, io.BytesIO(image.config_bytes))
            _add_member(archive, "manifest.json", epoch, io.BytesIO(canonical_json(manifest)))
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except OSError as exc:
        raise errors.from_os_error(exc, path) from exc
    finally:
        partial.unlink(missing_ok=True)
    return WriteResult(str(target.with_tag(tag)), image.manifest_digest)


def _uncompressed(layer: Blob, out: IO[bytes]) -> None:
    """The layer's tar into ``out``, checked against its diff_id."""
    hasher = hashlib.sha256()
    with layer.open() as source:
        stream: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb")) \
            if layer.compressed else source
        try:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                hasher.update(chunk)
                out.write(chunk)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            raise _damaged(layer.origin, layer.digest, "gzip's own checks") from None
    if "sha256:" + hasher.hexdigest() != layer.diff_id:
        raise _damaged(layer.origin, layer.digest, "the config's uncompressed digest for it")
    out.seek(0)


def _damaged(origin: str, digest: str, what: str) -> errors.SlugbuildError:
    return errors.IMAGE_UNREADABLE.error(
        reference=origin or "an image being written",
        reason=f"its layer {digest} does not match {what} (damaged, or changed while "
               f"it was read)")


def _add_member(archive: tarfile.TarFile, name: str, epoch: int, data: IO[bytes]) -> None:
    data.seek(0, os.SEEK_END)
    info = tarfile.TarInfo(name)
    info.size = data.tell()
    info.mtime = epoch
    info.mode = 0o644
    data.seek(0)
    archive.addfile(info, data)


def push_image(image: Image, target: ImageReference, options: RegistryOptions) -> WriteResult:
    """Push blobs the registry lacks (mounting those of another of its repositories),
    then the manifest under the tag: a failure before that leaves no tag changed."""
    assert target.host is not None and target.repository is not None
    tag = target.tag or DEFAULT_TAG
    with options.client(target.host, target.repository) as client:
        for layer in image.layers:
            mount_from = layer.source[1] if layer.source is not None and \
                layer.source[0] == target.host else None
            with layer.open() as source:
                client.push_blob(_readable(source), layer.digest, layer.size,
                                 mount_from=mount_from)
        client.push_blob(image.config_bytes, image.config_digest, len(image.config_bytes))
        digest = client.put_manifest(tag, image.manifest(), OCI_MANIFEST)
        return WriteResult(str(target.with_tag(tag)), digest, client.stats)


def _readable(source: IO[bytes]) -> Path | bytes:
    name = getattr(source, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return Path(name)
    return source.read()


# --- reading -------------------------------------------------------------------------
def read_image(reference: ImageReference, *, blob_dir: Path,
               registry: RegistryOptions | None = None,
               architecture: str | None = None) -> Image:
    """The image at ``reference``: config and layers (a registry's blobs pulled into
    ``blob_dir``, verified, and kept there for the next time)."""
    if reference.transport == "oci":
        return _read_layout(reference, architecture)
    if reference.transport == "docker-archive":
        return _read_archive(reference, blob_dir)
    return _read_registry(reference, blob_dir, registry or RegistryOptions(), architecture)


def _unreadable(reference: ImageReference, reason: str) -> errors.SlugbuildError:
    return errors.IMAGE_UNREADABLE.error(reference=str(reference), reason=reason)


def _json(data: bytes, reference: ImageReference, what: str) -> dict[str, Any]:
    try:
        loaded = json.loads(data)
    except (ValueError, RecursionError):
        raise _unreadable(reference, f"its {what} is not JSON") from None
    if not isinstance(loaded, dict):
        raise _unreadable(reference, f"its {what} is not a JSON object")
    return loaded


def _pick_manifest(index: dict[str, Any], reference: ImageReference, architecture: str | None,
                   tag: str | None) -> dict[str, Any]:
    entries = [entry for entry in _listed(index.get("manifests")) if isinstance(entry, dict)]
    if tag is not None:
        tagged = [entry for entry in entries
                  if _mapping(entry.get("annotations")).get(REF_NAME) == tag]
        if not tagged and len(entries) == 1 and tag == DEFAULT_TAG:
            tagged = entries
        entries = tagged
    if architecture is not None:
        matching = [entry for entry in entries
                    if _mapping(entry.get("platform")).get("architecture")
                    in (None, architecture)]
        entries = matching or entries
    if not entries:
        raise _unreadable(reference, f"it holds no image tagged {tag!r}" if tag
                          else "it holds no image")
    return entries[0]


def _read_layout(reference: ImageReference, architecture: str | None) -> Image:
    assert reference.path is not None
    root = reference.path
    blobs = root / "blobs" / "sha256"

    def blob_path(digest: str, what: str) -> Path:
        return blobs / _digest(digest, what, reference).split(":", 1)[1]

    def blob_bytes(digest: str, what: str) -> bytes:
        path = blob_path(digest, what)
        data = small_regular_file(path, MAX_LAYOUT_FILE)
        if data is None:
            raise _unreadable(reference, f"its {what} {digest} is missing, or not a regular "
                                         f"file of at most {MAX_LAYOUT_FILE} bytes"
                              if os.path.lexists(path) else f"its {what} {digest} is missing")
        if sha256_of(data) != digest:
            raise _unreadable(reference, f"its {what} {digest} does not match its digest")
        return data

    if not os.path.lexists(root / "index.json"):
        raise _unreadable(reference, "it is not an OCI image layout (no index.json)")
    entry = _pick_manifest(_read_index(root), reference, architecture,
                           reference.tag or DEFAULT_TAG)
    manifest_digest = str(entry.get("digest"))
    manifest = _json(blob_bytes(manifest_digest, "manifest"), reference, "manifest")
    if manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        entry = _pick_manifest(manifest, reference, architecture, None)
        manifest_digest = str(entry.get("digest"))
        manifest = _json(blob_bytes(manifest_digest, "manifest"), reference, "manifest")
    config_digest = str(_mapping(manifest.get("config")).get("digest"))
    config = _json(blob_bytes(config_digest, "config"), reference, "config")
    layers = []
    diff_ids = _diff_ids(config, reference)
    for descriptor, diff_id in zip(_layer_descriptors(manifest, reference, diff_ids), diff_ids):
        path = blob_path(str(descriptor["digest"]), "layer")
        if not path.is_file():
            raise _unreadable(reference, f"its layer {descriptor['digest']} is missing")
        layers.append(file_blob(path, str(descriptor.get("mediaType", LAYER_GZIP)), diff_id,
                                digest=str(descriptor["digest"]), origin=str(reference)))
    return Image(config, layers, dict(_mapping(manifest.get("annotations"))),
                 source_digest=manifest_digest)


def _diff_ids(config: dict[str, Any], reference: ImageReference) -> list[str]:
    diff_ids = _mapping(config.get("rootfs")).get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise _unreadable(reference, "its config has no rootfs.diff_ids")
    return list(diff_ids)


def _layer_descriptors(manifest: dict[str, Any], reference: ImageReference,
                       diff_ids: list[str]) -> list[dict[str, Any]]:
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and isinstance(
            layer.get("digest"), str) for layer in layers):
        raise _unreadable(reference, "its manifest lists no layers")
    if len(layers) != len(diff_ids):
        raise _unreadable(reference, "its manifest and config list different numbers of "
                                     "layers")
    return layers


def _open_archive(reference: ImageReference) -> IO[bytes]:
    """The docker-archive's file, if it is a regular one: opened without blocking, so a
    fifo given as the archive is refused instead of hanging the command."""
    assert reference.path is not None
    try:
        fd = os.open(reference.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(reference, f"it cannot be read as a tar ({exc.strerror})") from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise _unreadable(reference, "it is not a regular file")
    return handle


def _read_archive(reference: ImageReference, blob_dir: Path) -> Image:
    with _open_archive(reference) as handle:
        return _read_archive_from(reference, handle, blob_dir)


def _read_archive_from(reference: ImageReference, handle: IO[bytes], blob_dir: Path) -> Image:
    try:
        archive = tarfile.open(fileobj=handle, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        raise _unreadable(reference, f"it cannot be read as a tar ({exc})") from None
    with archive:
        def member(name: str) -> bytes:
            """A metadata member (manifest.json, the config), read only up to
            MAX_LAYOUT_FILE bytes: a multi-GiB member must not fill memory."""
            try:
                info = archive.getmember(name)
                extracted = archive.extractfile(info)
            except KeyError:
                extracted = None
            if extracted is None:
                raise _unreadable(reference, f"it has no {name}")
            if info.size > MAX_LAYOUT_FILE:
                raise _unreadable(reference, f"its {name} is larger than {MAX_LAYOUT_FILE} "
                                             f"bytes")
            return extracted.read()

        try:
            manifests = json.loads(member("manifest.json"))
        except (ValueError, RecursionError):
            raise _unreadable(reference, "its manifest.json is not JSON") from None
        if not isinstance(manifests, list) or not manifests:
            raise _unreadable(reference, "its manifest.json lists no image")
        wanted = f"{reference.repository}:{reference.tag}" if reference.repository else None
        chosen = next((entry for entry in manifests if isinstance(entry, dict)
                       and (wanted is None or any(_same_name(wanted, str(tag)) for tag in
                                                  _listed(entry.get("RepoTags"))))), None)
        if chosen is None:
            raise _unreadable(reference, f"it holds no image named {wanted}")
        config = _json(member(str(chosen.get("Config"))), reference, "config")
        diff_ids = _diff_ids(config, reference)
        names = chosen.get("Layers") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _unreadable(reference, "its manifest.json's Layers is not a list of names")
        if len(names) != len(diff_ids):
            raise _unreadable(reference, "its manifest and config list different numbers of "
                                         "layers")
        blob_dir.mkdir(parents=True, exist_ok=True)
        layers = []
        for name, diff_id in zip(names, diff_ids):
            try:
                extracted = archive.extractfile(name)
            except KeyError:
                extracted = None
            if extracted is None:
                raise _unreadable(reference, f"it has no layer {name}")
            stored = _keep_stream(extracted, blob_dir)
            compressed = stored.open("rb").read(2) == b"\x1f\x8b"
            layers.append(file_blob(stored, LAYER_GZIP if compressed else LAYER_TAR, diff_id,
                                    digest="sha256:" + stored.name, origin=str(reference)))
    return Image(config, layers)


_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _digest(value: object, what: str, reference: ImageReference) -> str:
    """A descriptor's digest, if it is ``sha256:<64 hex>``: only such a digest may name a
    blob file or a registry path ("sha256:../../x" must not leave the blob directory)."""
    if not isinstance(value, str) or not _SHA256_DIGEST.fullmatch(value):
        raise _unreadable(reference, f"its {what} has the malformed digest {str(value)[:80]!r}")
    return value


def _size(descriptor: dict[str, Any], what: str, reference: ImageReference) -> int:
    """A descriptor's size: what a pull of its blob takes at most (the spec requires it)."""
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _unreadable(reference, f"its {what} has no valid size ({str(size)[:40]!r})")
    return size


def _layer_limit() -> BlobLimit:
    """The most a pulled layer may hold: the limit on unpacked slugs (a layer larger
    than any slug slugbuild unpacks is no run image or app layer it reads)."""
    from ..slug.archive import SlugLimits

    return BlobLimit(SlugLimits.from_env().max_unpacked_bytes, "an image layer",
                     " A larger layer needs a larger SLUGBUILD_MAX_UNPACKED_SIZE.")


def _mapping(value: object) -> dict[str, Any]:
    """A manifest field that should be an object, as one (anything else: empty)."""
    return value if isinstance(value, dict) else {}


def _listed(value: object) -> list[Any]:
    """A manifest field that should be a list, as one (anything else: empty)."""
    return value if isinstance(value, list) else []


def _same_name(one: str, other: str) -> bool:
    """Whether two image names are the same once Docker's defaults are filled in
    (``run:base`` is ``docker.io/library/run:base``, as ``docker save`` may write it)."""
    try:
        first, second = parse_registry_name(one), parse_registry_name(other)
    except errors.SlugbuildError:
        return one == other
    return (first.host, first.repository, first.tag or DEFAULT_TAG) == \
        (second.host, second.repository, second.tag or DEFAULT_TAG)


def _keep_stream(source: IO[bytes], blob_dir: Path) -> Path:
    """Copy a stream into ``blob_dir`` under its sha256."""
    handle, name = tempfile.mkstemp(prefix=".blob-", dir=blob_dir)
    partial = Path(name)
    try:
        hasher = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                hasher.update(chunk)
                out.write(chunk)
        final = blob_dir / hasher.hexdigest()
        os.replace(partial, final)
        return final
    finally:
        partial.unlink(missing_ok=True)


def _read_registry(reference: ImageReference, blob_dir: Path, options: RegistryOptions,
                   architecture: str | None) -> Image:
    assert reference.host is not None and reference.repository is not None
    with options.client(reference.host, reference.repository) as client:
        found = client.get_manifest(reference.reference)
        if found is None:
            raise _unreadable(reference, "the registry has no such image")
        body, media_type, manifest_digest = found
        manifest = _json(body, reference, "manifest")
        if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
            entry = _pick_manifest(manifest, reference, architecture, None)
            found = client.get_manifest(_digest(entry.get("digest"), "manifest", reference))
            if found is None:
                raise _unreadable(reference, "its index names a manifest the registry lacks")
            manifest, manifest_digest = _json(found[0], reference, "manifest"), found[2]
        config_descriptor = _mapping(manifest.get("config"))
        config_digest = _digest(config_descriptor.get("digest"), "config", reference)
        config_path = blob_dir / config_digest.split(":", 1)[-1]
        if not config_path.is_file() or hash_file(config_path) != config_digest:
            client.pull_blob(config_digest, config_path, limit=CONFIG_LIMIT,
                             size=_size(config_descriptor, "config", reference))
        config = _json(config_path.read_bytes(), reference, "config")
        diff_ids = _diff_ids(config, reference)
        layers = []
        layer_limit = _layer_limit()
        for descriptor, diff_id in zip(_layer_descriptors(manifest, reference, diff_ids),
                                       diff_ids):
            digest = _digest(descriptor["digest"], "layer", reference)
            path = blob_dir / digest.split(":", 1)[-1]
            if not path.is_file() or hash_file(path) != digest:
                client.pull_blob(digest, path, limit=layer_limit,
                                 size=_size(descriptor, "layer", reference))
            layers.append(file_blob(path, str(descriptor.get("mediaType", LAYER_GZIP)),
                                    diff_id, digest=digest,
                                    source=(reference.host, reference.repository),
                                    origin=str(reference)))
    return Image(config, layers, dict(_mapping(manifest.get("annotations"))),
                 source_digest=manifest_digest)


@contextmanager
def layer_tar(layer: Blob) -> Iterator[IO[bytes]]:
    """The layer's uncompressed tar as a stream."""
    with layer.open() as source:
        if layer.compressed:
            with gzip.GzipFile(fileobj=source, mode="rb") as stream:
                yield cast(IO[bytes], stream)
        else:
            yield source
