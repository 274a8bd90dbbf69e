"""A cached layer as an OCI artifact: what travels between caches on different machines.

One artifact per layer key (docs/cache.md#the-second-level-a-registry):

- config blob: the layer's ``manifest.json`` (kind, name, key, inputs) plus the
  namespace it belongs to and how its slug part was made;
- part blob: the layer's kept, compressed slug part (``packed/<name>.gz``), the
  bytes a slug holds for it;
- index blob: its ``files.json`` (size, mode, SHA-256 of each file, each
  symlink's target), its directories and its ``host-paths.json``.

A kept collectstatic output (static_reuse.py, kind ``static``) travels the same
way: it has no slug part, so its part is its tree packed here (sorted, no
times, no owners: the same output gives the same blob on every machine), and
its ``delta.json`` rides in the config.

A reader rebuilds the layer's tree from the part, refuses anything the index
does not list or that differs from it, and publishes it through the cache's
normal path (``Cache.new_layer``: files.json, the RECORD check for dependency
layers, atomic rename); the part is kept beside it, so the pack stage copies
it as it would a part made locally. Blobs are written before the manifest
that names them, so a reader never sees half an entry.

The stores are an OCI image layout directory (``cache export DIR``; skopeo and
CI cache actions can carry it) and a registry (cache_registry.py): both
addressed by tag, both verifying every blob's digest on read.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import posixpath
import queue
import re
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from . import errors
from .cache import (
    FILE_INDEX,
    FORMAT,
    MANIFEST,
    PART_ONLY,
    TREE,
    Cache,
    Layer,
    StatKey,
    TreeCheck,
    build_index,
    read_index,
    stat_key,
    write_bytes_atomic,
    write_json_atomic,
)
from .envflag import env_flag
from .pack import DIRECTORY, FILE, SYMLINK
from .slug.archive import SlugLimits
from .stack_compat import STACK_RECORD, keep_stack_record, stack_record_kept
from .textfiles import small_regular_file

# Bumped whenever the artifact's shape or meaning changes: it is part of every tag,
# so caches of different formats never read each other's entries.
ARTIFACT_FORMAT = 1
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.slugbuild.layer.v1"
CONFIG_TYPE = "application/vnd.slugbuild.layer.config.v1+json"
PART_TYPE = "application/vnd.slugbuild.layer.part.v1.tar+gzip"
INDEX_TYPE = "application/vnd.slugbuild.layer.files.v1+json"
CHECK_TYPE = "application/vnd.slugbuild.import-check.v1+json"
KEY_ANNOTATION = "dev.slugbuild.layer.key"
TITLE_ANNOTATION = "org.opencontainers.image.title"
HOST_PATHS = "host-paths.json"
MEASURE_SUFFIX = ".sizes.json"  # beside a kept part: its size breakdown (pack.py, slug_size.py)
# What an artifact may hold at most (a hostile store must not fill the disk or memory).
MAX_BLOB = 2 * 2 ** 30
MAX_METADATA = 64 * 2 ** 20
# The most seconds one pull from a registry takes (fetch_artifact): a build's own
# default time limit; a registry slower than that is passed over, with its warning.
PULL_SECONDS = 900.0
# A part whose index declares more than this unpacked is unpacked file by file, not
# inflated in memory at once: an index of zero-filled files (a gzip bomb whose digests
# all match) must not exhaust memory. The declared total is also held to the limit on
# unpacked slugs (SLUGBUILD_MAX_UNPACKED_SIZE, docs/security.md).
IN_MEMORY_LIMIT = 512 * 2 ** 20
MAX_CHECK = 2 ** 20
# Kinds whose part is their own tree packed for the artifact (no slug part is kept for
# them), and the JSON files beside their tree that travel in the config.
TREE_PART_KINDS = {"static": ("delta.json",)}
TREE_PART_NAME = "tree"
TREE_PART_PREFIX = "./"
# Kinds a pull or an import keeps part-only (their tree written when a step needs it:
# ensure_tree), and what of their tree is kept beside the part as files, for what a
# build reads of a layer without running its Python (release.py's add-ons, the
# package list, console scripts, the SBOM): the stub.
PART_ONLY_KINDS = ("runtimes", "layers")
PART_ONLY_FORMAT = 1
STUB = "stub"
_STUBBED = re.compile(r"^(?:lib/python[^/]*/site-packages/(?:[^/]+\.dist-info/.+"
                      r"|[^/]+/__init__\.py)|include/python[^/]*/patchlevel\.h|bin/[^/]+)$")
_ELF_MAGIC = b"\x7fELF"


def _stubbed(rel: str, data: bytes | memoryview | None = None) -> bool:
    """Whether a layer's file (or symlink: ``data`` None) is kept in its stub: what
    builds read without running Python, and ``bin/``'s scripts (whose presence a
    process type's check looks for), not its programs (ELF files)."""
    return bool(_STUBBED.match(rel)) and (data is None or not rel.startswith("bin/")
                                          or bytes(data[:4]) != _ELF_MAGIC)


# Parts are inflated with ISA-L (the isal package) where it is installed: the same
# gzip streams, inflated about twice as fast as zlib (checking a pulled part is
# mostly inflating it); zlib otherwise. Both release the GIL while they inflate.
try:
    from isal import isal_zlib as _inflater

    _decompressobj: Callable[[int], Any] = _inflater.decompressobj
    INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,
                                                   cast(type[Exception], _inflater.error))
except ImportError:  # pragma: no cover - isal is a dependency; a bare install still works
    _decompressobj = zlib.decompressobj
    INFLATE_ERRORS = (zlib.error,)

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactInvalid(Exception):
    """An artifact that does not hold what it claims (digest, index, key, namespace)."""


class Store(Protocol):
    """Where artifacts are kept: a registry repository or an OCI layout directory."""

    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, digest: str, data: bytes) -> None: ...

    def get_blob(self, digest: str, size: int) -> bytes:
        """The blob's bytes, their SHA-256 checked against ``digest`` (ArtifactInvalid)."""
        ...

    def get_manifest(self, tag: str) -> bytes | None: ...

    def put_manifest(self, tag: str, data: bytes) -> None: ...

    def tags(self) -> list[str]: ...


def namespace(platform_key: str) -> str:
    """What keeps entries of other platforms and cache formats apart: in every tag."""
    return f"sb{ARTIFACT_FORMAT}-{platform_key}"


def layer_tag(space: str, kind: str, key: str) -> str:
    """The tag of the artifact for layer ``kind`` keyed ``key`` (at most 128
    characters, as OCI tags must be)."""
    short = {"runtimes": "runtime", "layers": "layer"}.get(kind, kind)
    prefix = _TAG_UNSAFE.sub("_", space)[:50]
    return f"{prefix}-{short}-{key}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, digest: str) -> bytes:
    """``data`` if its SHA-256 is ``digest``; else ArtifactInvalid."""
    if digest_of(data) != digest:
        raise ArtifactInvalid(f"blob {digest[:19]}… does not match its digest")
    return data


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class KeptPart:
    """A layer's compressed slug part as kept in its ``packed/`` directory."""

    name: str
    data: bytes
    raw_size: int


def kept_part(layer: Layer, name: str | None = None) -> KeptPart | None:
    """The layer's most recent kept part (``name``: that one) whose bytes match their
    record, else None."""
    try:
        records = sorted(layer.packed_parts.glob(f"{name or '*'}.json"),
                         key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return None
    for record_path in records:
        try:
            record = json.loads(record_path.read_text())
            data = record_path.with_suffix(".gz").read_bytes()
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("raw_size"), int) \
                and hashlib.sha256(data).hexdigest() == record.get("sha256"):
            return KeptPart(record_path.stem, data, record["raw_size"])
    return None


def _directories(tree: Path) -> list[str]:
    found = []
    for directory, dirnames, _ in os.walk(tree):
        for name in dirnames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                found.append(os.path.relpath(path, tree))
    return sorted(found)


def _part_prefix(part: bytes, names: set[str]) -> str:
    """What precedes a layer path in its part's member names (``./.heroku/python/``)."""
    with _open_part(part) as tar:
        member = tar.next()
    if member is None:
        raise ArtifactInvalid("the slug part is empty")
    name = member.name
    for at in [i for i, char in enumerate(name) if char == "/"]:
        if name[at + 1:] in names:
            return name[:at + 1]
    raise ArtifactInvalid(f"the slug part's {name} is not a file of the layer")


def _open_part(part: bytes) -> tarfile.TarFile:
    # GzipFile reads every gzip member (parts are written as several, in parallel).
    return tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(part)), mode="r|")


@dataclass(frozen=True)
class Artifact:
    """The three blobs of one layer's artifact and its manifest."""

    tag: str
    config: bytes
    index: bytes
    part: bytes
    manifest: bytes

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, self.part, self.index]


def make_artifact(layer: Layer, space: str, part_name: str | None = None) -> Artifact | None:
    """The artifact for a published layer, or None when it has no intact kept part
    (``part_name``: that kept part, as ``runtime publish`` names the default slug's)
    or its files.json is unreadable (nothing is shared then)."""
    manifest = layer.manifest
    kind, key = manifest.get("kind"), manifest.get("key")
    if not isinstance(kind, str) or not isinstance(key, str):
        return None
    if layer.lazy:  # its index and directories as the artifact it came from gave them
        try:
            record = _part_only_record(layer.path)
            part: KeptPart | None = KeptPart(record["part"]["name"], _kept_bytes(layer, record),
                                             record["part"]["raw_size"])
        except ArtifactInvalid:
            return None
        files, symlinks = record["index"]["files"], record["index"]["symlinks"]
        index_blob = _canonical(record["index"])
    else:
        index = read_index(layer.path / FILE_INDEX)
        part = tree_part(layer, index) if kind in TREE_PART_KINDS else \
            kept_part(layer, part_name)
        if part is None or index is None:
            return None
        try:
            host_paths = json.loads((layer.path / HOST_PATHS).read_text())
        except (OSError, ValueError, RecursionError):
            host_paths = None
        files = {rel: [entry[0], entry[2], entry[3]] for rel, entry in index["files"].items()}
        symlinks = index["symlinks"]
        index_blob = _canonical({"files": files, "symlinks": symlinks,
                                 "dirs": _directories(layer.tree), "host_paths": host_paths})
    assert part is not None
    prefix = TREE_PART_PREFIX if kind in TREE_PART_KINDS else \
        _part_prefix(part.data, set(files) | set(symlinks))
    part_info: dict[str, Any] = {"name": part.name, "raw_size": part.raw_size,
                                 "prefix": prefix}
    try:  # the part's size breakdown (slug_size.py), so a puller need not measure it again
        part_info["measure"] = json.loads(
            (layer.packed_parts / f"{part.name}{MEASURE_SUFFIX}").read_text())
    except (OSError, ValueError):
        pass
    if not layer.lazy and kind not in TREE_PART_KINDS:
        # Its ELF files' facts (stack_compat.py), read now if no build kept them yet: a
        # puller then needs neither to read them again nor to write the tree for them.
        with contextlib.suppress(OSError):  # its tree gone: shared without the record
            keep_stack_record(layer.tree, layer.packed_parts / STACK_RECORD)
    if stack_record_kept(layer.packed_parts / STACK_RECORD):  # never an empty or bad one
        with contextlib.suppress(OSError, ValueError):
            part_info["stack"] = json.loads((layer.packed_parts / STACK_RECORD).read_text())
    config_data: dict[str, Any] = {
        "format": ARTIFACT_FORMAT, "namespace": space, "kind": kind, "name": manifest["name"],
        "key": key, "inputs": manifest.get("inputs", {}), "part": part_info,
    }
    if kind in TREE_PART_KINDS:
        side = {}
        for name in TREE_PART_KINDS[kind]:
            try:
                side[name] = json.loads((layer.path / name).read_text())
            except (OSError, ValueError):
                return None  # an incomplete entry is not shared
        config_data["side_files"] = side
    config = _canonical(config_data)
    tag = layer_tag(space, kind, key)

    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}

    oci_manifest = _canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(PART_TYPE, part.data), descriptor(INDEX_TYPE, index_blob)],
        "annotations": {KEY_ANNOTATION: key, TITLE_ANNOTATION: f"{kind}/{manifest['name']}"},
    })
    return Artifact(tag, config, index_blob, part.data, oci_manifest)


def tree_part(layer: Layer, index: dict[str, Any] | None) -> KeptPart | None:
    """The layer's tree as an artifact part (for kinds that keep no slug part): every
    file and symlink of its index, sorted, under ``./``, with no times or owners and
    gzip without a name or time, so the same tree gives the same bytes anywhere."""
    if index is None:
        return None
    members = sorted([*index["files"], *index["symlinks"]], key=lambda rel: rel.split("/"))
    raw = io.BytesIO()
    try:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in members:
                info = tarfile.TarInfo(TREE_PART_PREFIX + rel)
                path = layer.tree / rel
                if rel in index["symlinks"]:
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                    tar.addfile(info)
                    continue
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != index["files"][rel][3]:
                    return None  # changed since it was kept: not shared
                info.size, info.mode = len(data), stat.S_IMODE(index["files"][rel][2])
                tar.addfile(info, io.BytesIO(data))
    except OSError:
        return None
    data = gzip.compress(raw.getvalue(), 6, mtime=0)
    return KeptPart(TREE_PART_NAME, data, len(raw.getvalue()))


@dataclass
class Transfer:
    """Bytes moved, for the log and the benchmarks."""

    sent: int = 0
    received: int = 0


def push_artifact(store: Store, artifact: Artifact, transfer: Transfer | None = None) -> bool:
    """Put the artifact in ``store``: its blobs that are missing, then its manifest
    (so a reader never finds a manifest naming a missing blob). False when the
    store already held this very manifest (nothing sent)."""
    if store.get_manifest(artifact.tag) == artifact.manifest:
        return False
    for blob in artifact.blobs:
        digest = digest_of(blob)
        if not store.has_blob(digest):
            store.put_blob(digest, blob)
            if transfer is not None:
                transfer.sent += len(blob)
    store.put_manifest(artifact.tag, artifact.manifest)
    if transfer is not None:
        transfer.sent += len(artifact.manifest)
    return True


# A checked index: its files (size, mode, SHA-256), symlinks (target) and directories.
Expected = tuple[dict[str, tuple[int, int, str]], dict[str, str], list[str]]


@dataclass(frozen=True)
class Fetched:
    """An artifact read from a store, every blob's digest checked. ``expected`` is its
    index as ``_expected`` checked it, and ``inflated`` the part's tar bytes when the
    store inflated the part as it arrived (``stream_part``): not done again."""

    config: dict[str, Any]
    index: dict[str, Any]
    part: bytes
    expected: Expected | None = None
    inflated: memoryview | None = None
    part_sha256: str | None = None  # the part's SHA-256, when hashed as it arrived


def fetch_artifact(store: Store, space: str, kind: str, key: str,
                   transfer: Transfer | None = None) -> Fetched | None:
    """The artifact for ``kind``/``key`` in ``store`` (None if it has none).

    Raises ArtifactInvalid when it is there but wrong: a blob not matching its
    digest, another key or namespace than its tag says, malformed metadata.
    Its config and index are read first: a store that can (``stream_part``) then
    inflates the part while it arrives, bounded by what the index declares.
    A store that can (``within``: a registry) has PULL_SECONDS for the whole pull: a
    registry trickling its answers is a transfer error, not a pull without end.
    """
    with pulling(store):
        return _fetch_artifact(store, space, kind, key, transfer)


def pulling(store: Store) -> contextlib.AbstractContextManager[None]:
    """PULL_SECONDS for all that ``store`` is asked inside (a registry's ``within``;
    a layout directory has no such limit)."""
    within = getattr(store, "within", None)
    return within(PULL_SECONDS) if within is not None else contextlib.nullcontext()


def _fetch_artifact(store: Store, space: str, kind: str, key: str,
                    transfer: Transfer | None) -> Fetched | None:
    raw = store.get_manifest(layer_tag(space, kind, key))
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
        config_desc = manifest["config"]
        part_desc, index_desc = manifest["layers"]
        descriptors = (config_desc, part_desc, index_desc)
        if [d["mediaType"] for d in descriptors] != [CONFIG_TYPE, PART_TYPE, INDEX_TYPE]:
            raise ArtifactInvalid("not a slugbuild layer artifact")
        sizes = [int(d["size"]) for d in descriptors]
        digests = [str(d["digest"]) for d in descriptors]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArtifactInvalid(f"its manifest is malformed ({type(exc).__name__})") from exc
    limits = (MAX_METADATA, MAX_BLOB, MAX_METADATA)
    if any(not 0 <= size <= limit for size, limit in zip(sizes, limits)):
        raise ArtifactInvalid("a blob is larger than slugbuild accepts")
    config_blob = store.get_blob(digests[0], sizes[0])
    index_blob = store.get_blob(digests[2], sizes[2])
    try:
        config, index = json.loads(config_blob), json.loads(index_blob)
    except (ValueError, RecursionError) as exc:
        raise ArtifactInvalid("its metadata is not JSON") from exc
    expected = _streamable(index) if isinstance(index, dict) else None
    if not isinstance(config, dict) or not isinstance(index, dict) \
            or _too_deep(config) or _too_deep(_unchecked(index, expected)):
        raise ArtifactInvalid("its metadata is malformed")
    if (config.get("format"), config.get("namespace"), config.get("kind"), config.get("key")) \
            != (ARTIFACT_FORMAT, space, kind, key):
        raise ArtifactInvalid("it is the entry of another key, platform or format")
    inflated, sha256 = None, None
    stream = getattr(store, "stream_part", None)
    limit = _unpacked_limit(*expected[:2]) if expected is not None and stream else None
    if stream is not None and limit is not None and limit <= IN_MEMORY_LIMIT:
        part, inflated = stream(digests[1], sizes[1], limit)
        sha256 = digests[1].removeprefix("sha256:")  # what the stream was checked against
    else:
        part = store.get_blob(digests[1], sizes[1])
    if transfer is not None:
        transfer.received += len(raw) + len(config_blob) + len(part) + len(index_blob)
    return Fetched(config, index, part, expected, inflated, sha256)


def _unchecked(index: dict[str, Any], expected: Expected | None) -> dict[str, Any]:
    """What of ``index`` is left to check for depth: all of it, or, once ``_expected``
    passed it (its files, symlinks and dirs of a fixed shape, scalars in lists no
    deeper than 3), the rest (host paths, anything a newer pusher adds)."""
    if expected is None:
        return index
    return {key: value for key, value in index.items()
            if key not in ("files", "symlinks", "dirs")}


def _streamable(index: dict[str, Any]) -> Expected | None:
    """The index as ``_expected`` checks it, None when it does not pass (``materialise``
    refuses it then, with its reason, as for a part read whole)."""
    try:
        return _expected(index)
    except ArtifactInvalid:
        return None


class StreamedPart:
    """A part blob as it arrives from a registry (``RegistryClient.read_blob``'s
    sink): its compressed bytes kept, and inflated on a thread of its own while the
    next ones are read (zlib releases the GIL), so the check of its members does
    not wait for the whole blob, nor read it again from a file. Inflation stops at
    ``limit`` bytes (what the index allows: no bomb) or at an unreadable stream;
    ``result`` raises that only once the blob matched its digest (a wrong blob is
    refused as one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._out = bytearray()
        self._problem: str | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._inflate_all, name="slugbuild-inflate",
                                        daemon=True)
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def abort(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join()
        self._chunks.clear()
        self._out = bytearray()

    def result(self) -> tuple[bytes, memoryview]:
        """The part's bytes and its tar bytes (after ``close``); ArtifactInvalid when
        it could not be inflated within the limit."""
        if self._problem is not None:
            raise ArtifactInvalid(self._problem)
        return b"".join(self._chunks), memoryview(self._out)

    def _inflate_all(self) -> None:
        inflate, started = _decompressobj(31), False
        while (chunk := self._queue.get()) is not None:
            if self._problem is not None or self._stopped:
                continue  # drained: the blob is still read to its end and hashed
            data = chunk
            try:
                while data:
                    started = True
                    out = inflate.decompress(data, self.limit - len(self._out) + 1)
                    self._out += out
                    if len(self._out) > self.limit:
                        raise ArtifactInvalid("its slug part unpacks to more than its "
                                              "index holds")
                    if not inflate.eof:
                        break  # all of ``data`` taken: its member goes on in the next
                    data = inflate.unused_data  # another gzip member (parts have several)
                    inflate, started = _decompressobj(31), False
            except ArtifactInvalid as exc:
                self._problem = str(exc)
            except INFLATE_ERRORS as exc:
                self._problem = f"its slug part is unreadable ({exc})"
        if self._problem is None and started and not self._stopped:
            self._problem = "its slug part is truncated"


# How deep an artifact's config and index may nest (slugbuild's own are 4 deep). Parts
# of them are written beside the layer and read again deeper in a build, where a
# document that parsed at the pull would be a RecursionError.
MAX_METADATA_DEPTH = 32


def _too_deep(document: Any, limit: int = MAX_METADATA_DEPTH) -> bool:
    """Whether ``document`` nests lists and objects deeper than ``limit`` (iterative)."""
    pending = [(document, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1)
                           for child in (item.values() if isinstance(item, dict) else item))
    return False


def _check_tag(space: str, digest: str) -> str:
    prefix = _TAG_UNSAFE.sub("_", space)[:50]
    return f"{prefix}-check-{_TAG_UNSAFE.sub('_', digest)[:64]}"


def push_check(store: Store, space: str, digest: str, record: dict[str, Any],
               transfer: Transfer | None = None) -> None:
    """Record a passed entry-point import check (importcheck.py) as a manifest with
    a config blob and no layers: blob first, then the manifest."""
    config = _canonical({"format": ARTIFACT_FORMAT, "namespace": space, "check": digest,
                         **record})
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": CHECK_TYPE,
        "config": {"mediaType": CHECK_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": []})
    tag = _check_tag(space, digest)
    if store.get_manifest(tag) == manifest:
        return
    if not store.has_blob(digest_of(config)):
        store.put_blob(digest_of(config), config)
    store.put_manifest(tag, manifest)
    if transfer is not None:
        transfer.sent += len(config) + len(manifest)


def fetch_check(store: Store, space: str, digest: str,
                transfer: Transfer | None = None) -> dict[str, Any] | None:
    """A passed check's record (without format, namespace and digest), or None when the
    store has none. Raises ArtifactInvalid when it is there but wrong."""
    raw = store.get_manifest(_check_tag(space, digest))
    if raw is None:
        return None
    malformed = ArtifactInvalid("its check record is malformed")
    try:
        descriptor = json.loads(raw)["config"]
        size = int(descriptor["size"])
        if descriptor["mediaType"] != CHECK_TYPE or not 0 <= size <= MAX_CHECK:
            raise malformed
        data = store.get_blob(str(descriptor["digest"]), size)
        record = json.loads(data)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # nested past the limit
        raise malformed from exc
    if not isinstance(record, dict):
        raise malformed
    if transfer is not None:
        transfer.received += len(raw) + len(data)
    if (record.pop("format", None), record.pop("namespace", None), record.pop("check", None)) \
            != (ARTIFACT_FORMAT, space, digest):
        raise ArtifactInvalid("it is the record of another check, platform or format")
    return record


def _safe_rel(rel: object) -> str:
    # Between sentinel slashes a part "", "." or ".." shows as "//", "/./" or "/../"
    # (an index has ~10,000 paths: no split per path).
    if not isinstance(rel, str) or not rel or "\0" in rel \
            or any(bad in f"/{rel}/" for bad in _UNSAFE_PARTS):
        raise ArtifactInvalid(f"unsafe path in the layer index: {rel!r}")
    return rel


_UNSAFE_PARTS = ("//", "/./", "/../")  # a leading "/" makes "//" too


def _inside_link(rel: str, target: object) -> str:
    """A symlink's target if it stays inside the layer: a link out (absolute, or climbing
    above the layer) would have the install and every later build write through it,
    and the pack stage refuse every slug using the layer."""
    if not isinstance(target, str) or not target or "\0" in target:
        raise ArtifactInvalid(f"{rel}: malformed symlink target")
    if target.startswith("/") or posixpath.normpath(
            posixpath.join(posixpath.dirname(rel), target)).split("/")[0] == "..":
        raise ArtifactInvalid(f"{rel}: its link target {target} leaves the layer")
    return target


def _host_paths(found: object, files: dict[str, tuple[int, int, str]]) -> object:
    """host-paths.json as the index gives it: None, or [file of the layer, path] pairs."""
    if found is None:
        return None
    if not isinstance(found, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and pair[0] in files
            and isinstance(pair[1], str) for pair in found):
        raise ArtifactInvalid("its host paths name something other than its own files")
    return found


def _expected(index: dict[str, Any]) -> tuple[dict[str, tuple[int, int, str]], dict[str, str],
                                              list[str]]:
    try:
        files = {_safe_rel(rel): _file_entry(entry) for rel, entry in index["files"].items()}
        symlinks = {_safe_rel(rel): _inside_link(rel, target)
                     for rel, target in index["symlinks"].items()}
        dirs = [_safe_rel(rel) for rel in index["dirs"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactInvalid(f"its file index is malformed ({exc})") from exc
    special = next((rel for rel, (_, mode, _) in files.items() if stat.S_IMODE(mode) & ~0o777),
                   None)
    if special is not None:  # chmod'ed so here, as root: a setuid-root file in the cache
        raise ArtifactInvalid(f"{special}: a setuid, setgid or sticky mode")
    every = sorted([*files, *symlinks, *dirs])
    if len(set(every)) != len(every):  # one path, one kind: else unpacking it fails midway
        raise ArtifactInvalid("its file index lists a path twice")
    # Nothing is placed below a symlink, nor below a file: the paths below ``above``
    # are the run of sorted paths starting with ``above/``, found by bisection.
    for above in (*files, *symlinks):
        at = bisect.bisect_left(every, above + "/")
        if at < len(every) and every[at].startswith(above + "/"):
            kind = "symlink" if above in symlinks else "file"
            raise ArtifactInvalid(f"{every[at]} lies below the {kind} {above}")
    return files, symlinks, dirs


def _file_entry(entry: object) -> tuple[int, int, str]:
    """An index's ``[size, mode, sha256]``, exactly that shape: nothing nested deeper
    (``_too_deep`` need not walk what this checked)."""
    if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[2], str):
        raise ValueError("a file entry is not [size, mode, sha256]")
    return int(entry[0]), int(entry[1]), entry[2]


def _decompress(part: bytes, limit: int) -> bytes:
    """The part's tar bytes (every gzip member), refused past ``limit`` bytes (what its
    index allows): an artifact cannot make this machine unpack a bomb."""
    chunks, total, data = [], 0, part
    while data:
        inflate = _decompressobj(31)
        chunk = inflate.decompress(data, limit - total + 1)
        total += len(chunk)
        chunks.append(chunk)
        if total > limit:
            raise ArtifactInvalid("its slug part unpacks to more than its index holds")
        if not inflate.eof:
            raise ArtifactInvalid("its slug part is truncated")
        data = inflate.unused_data
    return b"".join(chunks)


_WRITE_BATCH = 64  # files per task of the writing threads


def _write_files(batch: list[tuple[str, memoryview, tuple[int, int, str], str]],
                 written: dict[str, tuple[StatKey, str]]) -> None:
    for target, data, expected, rel in batch:
        _write_file(target, data, expected, rel, written)


def _tar_members(raw: memoryview, ends: list[int] | None = None
                 ) -> Iterable[tuple[str, bytes, int, int, str]]:
    """(name, type, data offset, size, link target) of each member of an uncompressed
    tar, as slugbuild's packer writes them (ustar headers, pax records for long or
    non-ASCII names and large sizes), up to the end or an end-of-archive block (a
    zero block, nothing but zeros after it: its offset noted in ``ends``). Anything
    else (a bad checksum, a global or GNU header, a truncated member, data after a
    zero block) is ArtifactInvalid."""
    position, total = 0, len(raw)
    pax: dict[str, str] = {}
    while position < total:
        if position + 512 > total:
            raise ArtifactInvalid("its slug part ends inside a tar header")
        header = bytes(raw[position:position + 512])
        if header == _ZERO_BLOCK:
            _after_end(raw[position:].tobytes().strip(b"\0") == b"")
            if ends is not None:
                ends.append(position)
            return
        if _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            raise ArtifactInvalid("its slug part has a damaged tar header")
        kind = header[156:157]
        size = _octal(header[124:136]) if "size" not in pax else _octal(
            pax["size"].encode(), base=10)
        name = pax.get("path") or _text(header[0:100])
        if header[257:263] == b"ustar\0" and header[345] and "path" not in pax:
            name = _text(header[345:500]) + "/" + name
        linkname = pax.get("linkpath") or _text(header[157:257])
        start = position + 512
        position = start + -(-size // 512) * 512
        if position > total:
            raise ArtifactInvalid("its slug part is truncated")
        if kind == tarfile.XHDTYPE:
            pax = _pax_records(bytes(raw[start:start + size]))
            continue
        _plain_header(name, _octal(header[100:108]), _octal(header[108:116]),
                      _octal(header[116:124]), header[265:329].strip(b"\0"), pax)
        pax = {}
        yield name, kind, start, size, linkname


_ZERO_BLOCK = bytes(512)
# The pax records slugbuild's packer writes (long or non-ASCII names, large sizes).
_PAX_KEYS = frozenset({"path", "linkpath", "size"})


def _plain_header(name: str, mode: int, uid: int, gid: int, owner_names: bytes,
                  pax: Mapping[str, str]) -> None:
    """Refuse a member header carrying what slugbuild's packer never writes: the part is
    shipped in slugs and image layers as it is, where tar or a container runtime
    extracting as root honours it: a setuid, setgid or sticky mode, an owner (uid,
    gid, user or group name), or another pax record (``SCHILY.xattr.*``: file
    capabilities, ACLs). None of it is in the index the part is checked against."""
    if mode & ~0o777:
        raise ArtifactInvalid(f"{name}: a setuid, setgid or sticky mode in the slug part")
    if uid or gid or owner_names or not _PAX_KEYS.issuperset(pax):
        raise ArtifactInvalid(f"{name}: an owner or pax record in the slug part that "
                              f"slugbuild never writes")


def _after_end(only_zeros: bool) -> None:
    """Tar readers stop at a zero block (GNU tar, Python's tarfile): a member after it
    was never checked against the index, yet would ship (a reader told to ignore
    zeros unpacks it). Only zeros may follow one."""
    if not only_zeros:
        raise ArtifactInvalid("its part holds data after its end-of-archive block")


def _no_end_block(ends: list[int]) -> None:
    """A slug part (a runtime's or dependencies' layer) may hold no end-of-archive
    block at all: copied into every slug built from the layer, it would end the slug
    there for tar readers (the app's own files, packed after it, never unpacked). A
    tree part (tarfile's, of a static output) ends with one."""
    if ends:
        raise ArtifactInvalid("its slug part holds an end-of-archive block (slugs built "
                              "from it would end there)")


def _octal(field: bytes, base: int = 8) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    try:
        number = int(text, base) if text else 0
        if number < 0:
            raise ValueError(number)
        return number
    except ValueError:
        raise ArtifactInvalid("its slug part has a damaged tar header") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """A pax extended header's ``LENGTH KEY=VALUE\n`` records."""
    records, at = {}, 0
    while at < len(data) and data[at:at + 1] != b"\0":
        length_text, space, _ = data[at:at + 20].partition(b" ")
        try:
            length = int(length_text)
        except ValueError:
            raise ArtifactInvalid("its slug part has a damaged pax header") from None
        record = data[at:at + length]
        if not space or length <= len(length_text) + 1 or not record.endswith(b"\n"):
            raise ArtifactInvalid("its slug part has a damaged pax header")
        key, equals, value = record[len(length_text) + 1:-1].partition(b"=")
        if not equals:
            raise ArtifactInvalid("its slug part has a damaged pax header")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8",
                                                                         "surrogateescape")
        at += length
    return records


def _write_file(target: str, data: memoryview, expected: tuple[int, int, str],
                rel: str, written: dict[str, tuple[StatKey, str]]) -> None:
    """One file of a part, checked against the index; its digest noted in ``written``
    for files.json (Cache.new_layer then does not read it again)."""
    if hashlib.sha256(data).hexdigest() != expected[2]:
        raise ArtifactInvalid(f"{rel}: content differs from the layer index")
    mode = stat.S_IMODE(expected[1])
    # One open, no path lookups after it: creating thousands of files is most of a pull.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask narrowed the mode open gave
        with open(fd, "wb", closefd=False) as out:
            out.write(data)
        written[rel] = (stat_key(os.fstat(fd)), expected[2])
    finally:
        os.close(fd)


def _inflate(part: bytes, limit: int) -> memoryview:
    try:
        return memoryview(_decompress(part, limit))
    except INFLATE_ERRORS as exc:
        raise ArtifactInvalid(f"its slug part is unreadable ({exc})") from exc


def _part_files(view: memoryview, prefix: str, files: dict[str, tuple[int, int, str]],
                symlinks: dict[str, str], seen: set[str], links: list[tuple[str, str]],
                ends: list[int]) -> Iterator[tuple[str, tuple[int, int, str], memoryview]]:
    """(layer path, index entry, bytes) of each file member of an inflated part, each
    checked by ``_checked_member`` (symlinks noted in ``links``; an end-of-archive
    block's offset in ``ends``)."""
    for name, kind, offset, size, linkname in _tar_members(view, ends):
        found = _checked_member(name, kind == tarfile.SYMTYPE,
                                kind in (tarfile.REGTYPE, tarfile.AREGTYPE), size,
                                linkname, prefix, files, symlinks, seen, links)
        if found is not None:
            yield found[0], found[1], view[offset:offset + size]


def _unpacked_limit(files: dict[str, tuple[int, int, str]], symlinks: dict[str, str]) -> int:
    """The most a part may unpack to, given its index; refused past the limit on
    unpacked slugs (SLUGBUILD_MAX_UNPACKED_SIZE)."""
    limit = sum(-(-size // 512) * 512 + 4096 for size, _, _ in files.values()) \
        + 4096 * len(symlinks) + 2 ** 20
    cap = SlugLimits.from_env().max_unpacked_bytes
    if limit > cap:
        raise ArtifactInvalid(f"its index declares {limit} bytes unpacked, more than "
                              f"SLUGBUILD_MAX_UNPACKED_SIZE ({cap})")
    return limit


def _hash_members(batch: list[tuple[str, memoryview, str]]) -> None:
    for rel, data, digest in batch:
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactInvalid(f"{rel}: content differs from the layer index")


def _verify_part(part: bytes, prefix: str, files: dict[str, tuple[int, int, str]],
                 symlinks: dict[str, str], inflated: memoryview | None = None
                 ) -> tuple[int, dict[str, bytes], list[tuple[str, str]]]:
    """Check a part against its index without writing a file: exactly the files and
    symlinks the index lists (nothing outside the layer, nothing twice), each of its
    type, size and SHA-256, each symlink with its target: the part kept for slugs
    is what the index, the stub and so slug.json and the SBOM describe. Returns its
    raw tar size, the stubbed files' bytes (``_stubbed``) and the stubbed symlinks.
    A part past IN_MEMORY_LIMIT raises ``_TooLarge``: the caller unpacks it file by
    file. ``inflated``: the part's tar bytes, when inflated as it arrived
    (``StreamedPart``, within the same limit)."""
    limit = _unpacked_limit(files, symlinks)
    if limit > IN_MEMORY_LIMIT:
        raise _TooLarge
    view = inflated if inflated is not None else _inflate(part, limit)
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    ends: list[int] = []
    stub: dict[str, bytes] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = []
        batch: list[tuple[str, memoryview, str]] = []
        try:
            for rel, expected, data in _part_files(view, prefix, files, symlinks, seen, links,
                                                   ends):
                if _stubbed(rel, data):
                    stub[rel] = bytes(data)
                batch.append((rel, data, expected[2]))
                if len(batch) == _WRITE_BATCH * 4:
                    checks.append(pool.submit(_hash_members, batch))
                    batch = []
            if batch:
                checks.append(pool.submit(_hash_members, batch))
        finally:
            for check in checks:
                check.result()
    missing = (set(files) | set(symlinks)) - seen
    if missing:
        raise ArtifactInvalid(f"{sorted(missing)[0]}: missing from the slug part")
    _no_end_block(ends)
    return len(view), stub, [(rel, target) for rel, target in links if _stubbed(rel)]


class _TooLarge(Exception):
    """A part too large to check in memory: its tree is written instead (streaming)."""


def _extract(part: bytes, prefix: str, tree: Path, files: dict[str, tuple[int, int, str]],
             symlinks: dict[str, str], dirs: list[str],
             written: dict[str, tuple[StatKey, str]], inflated: memoryview | None = None,
             *, eof: bool = False) -> int:
    """Write the part's members into ``tree``: exactly the files and symlinks the
    index lists, each file with its size, SHA-256 and mode. Returns the raw tar size.
    ``eof``: a tree part, which may end with an end-of-archive block (``_no_end_block``).

    The part is inflated at once, its headers read by ``_tar_members`` (tarfile's
    general reader took longer than writing the files), and its files written in
    batches by a few threads (hashing and file creation release the GIL)."""
    limit = _unpacked_limit(files, symlinks)
    if limit > IN_MEMORY_LIMIT:
        return _extract_streaming(part, prefix, tree, files, symlinks, dirs, written, eof)
    view = inflated if inflated is not None else _inflate(part, limit)
    made, root = {""}, str(tree)
    for rel in dirs:  # sorted: a directory before what is in it
        os.makedirs(os.path.join(root, rel), exist_ok=True)
        made.add(rel)
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    ends: list[int] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = []
        batch: list[tuple[str, memoryview, tuple[int, int, str], str]] = []
        try:
            for rel, expected, data in _part_files(view, prefix, files, symlinks, seen, links,
                                                   ends):
                parent = rel.rpartition("/")[0]
                if parent not in made:  # the index lists every directory: rarely
                    (tree / parent).mkdir(parents=True, exist_ok=True)
                    made.add(parent)
                batch.append((os.path.join(root, rel), data, expected, rel))
                if len(batch) == _WRITE_BATCH:
                    writes.append(pool.submit(_write_files, batch, written))
                    batch = []
            if batch:
                writes.append(pool.submit(_write_files, batch, written))
        finally:
            for write in writes:
                write.result()  # the first failure (a mismatch, a full disk) is raised
    if not eof:
        _no_end_block(ends)
    _place_links(tree, files, symlinks, seen, links)
    return len(view)


def _checked_member(name: str, is_symlink: bool, is_plain_file: bool, size: int,
                    linkname: str, prefix: str, files: dict[str, tuple[int, int, str]],
                    symlinks: dict[str, str], seen: set[str], links: list[tuple[str, str]]
                    ) -> tuple[str, tuple[int, int, str]] | None:
    """A part's file member as (layer path, index entry), or None for a symlink (noted
    in ``links``, placed last); ArtifactInvalid for anything the index does not list
    exactly so (outside the layer, twice, another type, sparse, another size)."""
    if not name.startswith(prefix):
        raise ArtifactInvalid(f"{name} is outside the layer")
    rel = name[len(prefix):]
    if rel in seen:
        raise ArtifactInvalid(f"{rel} is in the part twice")
    seen.add(rel)
    if is_symlink:
        if symlinks.get(rel) != linkname:
            raise ArtifactInvalid(f"{rel}: not the recorded symlink")
        links.append((rel, linkname))
        return None
    expected = files.get(rel)
    if not is_plain_file or expected is None or size != expected[0]:
        raise ArtifactInvalid(f"{rel}: not a file of the layer as recorded")
    return rel, expected


def _place_links(tree: Path, files: dict[str, tuple[int, int, str]],
                 symlinks: dict[str, str], seen: set[str], links: list[tuple[str, str]]
                 ) -> None:
    """After every file: refuse a part missing an indexed path, then make its symlinks
    (last, so no file is ever written through one)."""
    missing = (set(files) | set(symlinks)) - seen
    if missing:
        raise ArtifactInvalid(f"{sorted(missing)[0]}: missing from the slug part")
    for rel, link_target in links:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_target, tree / rel)


def _extract_streaming(part: bytes, prefix: str, tree: Path,
                       files: dict[str, tuple[int, int, str]], symlinks: dict[str, str],
                       dirs: list[str], written: dict[str, tuple[StatKey, str]],
                       eof: bool = False) -> int:
    """``_extract`` for a large part: one member at a time, each file hashed as it is
    written in chunks, so memory stays bounded whatever the index declares; tarfile
    stops at a zero block, so what follows is checked afterwards (``_after_end``)."""
    for rel in dirs:
        (tree / rel).mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    try:
        with _open_part(part) as tar:
            for member in tar:
                _plain_header(member.name, member.mode, member.uid, member.gid,
                              (member.uname + member.gname).encode(), member.pax_headers)
                found = _checked_member(member.name, member.issym(),
                                        member.isreg() and member.sparse is None, member.size,
                                        member.linkname, prefix, files, symlinks, seen, links)
                if found is None:
                    continue
                rel, expected = found
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target = tree / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if _copy_hashed(source, target) != expected[2]:
                    raise ArtifactInvalid(f"{rel}: content differs from the layer index")
                os.chmod(target, stat.S_IMODE(expected[1]))
                written[rel] = (stat_key(os.lstat(target)), expected[2])
            end = tar.offset
        total, only_zeros = _raw_tar_size(part, end)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArtifactInvalid(f"its slug part is unreadable ({exc})") from exc
    if total > end:
        _after_end(only_zeros)
        if not eof:
            _no_end_block([end])
    _place_links(tree, files, symlinks, seen, links)
    return total


def _copy_hashed(source: io.BufferedReader | Any, target: Path) -> str:
    """Write ``source`` to ``target`` in chunks; the SHA-256 of what was written."""
    hasher = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            hasher.update(chunk)
            out.write(chunk)
    return hasher.hexdigest()


def _raw_tar_size(part: bytes, end: int) -> tuple[int, bool]:
    """The part's size inflated, counted in chunks (what the in-memory path measures),
    and whether it holds nothing but zeros from ``end`` on."""
    total, only_zeros = 0, True
    with gzip.GzipFile(fileobj=io.BytesIO(part)) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            if only_zeros and total + len(chunk) > end:
                only_zeros = chunk[max(0, end - total):].strip(b"\0") == b""
            total += len(chunk)
    return total, only_zeros


def materialise(cache: Cache, fetched: Fetched, extra_check: TreeCheck | None = None,
                part_only: bool = False) -> Layer:
    """Publish a fetched artifact as a layer of ``cache``, through the verified path:
    its tree rebuilt from the part, each file checked against the index, the
    layer's own check (RECORDs) passed, files.json written by the cache itself,
    then the part kept for the pack stage. With ``part_only`` (a build's pull,
    ``cache import``: ``part_only_wanted``), a runtime or dependency layer is kept
    part-only instead (``_publish_part_only``): every member of its part checked
    against the index in memory, nothing written but its stub. The caller holds
    ``cache.lock``. Raises ArtifactInvalid (nothing published) when anything does
    not match."""
    config = fetched.config
    kind, name, key = config["kind"], config.get("name"), config["key"]
    part_info = config.get("part")
    if not isinstance(name, str) or _safe_name(name) != name \
            or not isinstance(part_info, dict) or not isinstance(config.get("inputs"), dict):
        raise ArtifactInvalid("its config is malformed")
    prefix, part_name = part_info.get("prefix"), part_info.get("name")
    if not isinstance(prefix, str) or not isinstance(part_name, str) \
            or _safe_name(part_name) != part_name:
        raise ArtifactInvalid("its config is malformed")
    files, symlinks, dirs = fetched.expected or _expected(fetched.index)

    def check(tree: Path, index: dict[str, Any]) -> Iterable[str]:
        made = {rel: (entry[0], entry[2], entry[3]) for rel, entry in index["files"].items()}
        if made != files or index["symlinks"] != symlinks:
            raise ArtifactInvalid("the rebuilt tree differs from the layer index")
        return list(extra_check(tree, index)) if extra_check is not None else []

    draft: dict[str, Any] = {}
    raw_size = 0
    written: dict[str, tuple[StatKey, str]] = {}
    side_files = config.get("side_files", {}) if kind in TREE_PART_KINDS else {}
    if not isinstance(side_files, dict) or sorted(side_files) != sorted(
            TREE_PART_KINDS.get(kind, ())):
        raise ArtifactInvalid("its config is malformed")
    if kind == "static":
        _check_delta(side_files["delta.json"], files, symlinks, dirs)
    (cache.root / kind).mkdir(exist_ok=True)
    if kind in PART_ONLY_KINDS and part_only:
        try:
            return _publish_part_only(cache, fetched, prefix, part_name, (files, symlinks, dirs),
                                      extra_check)
        except _TooLarge:
            pass  # unpacked file by file below
    with cache.new_layer(kind, name, key, config["inputs"], check, draft, written) as tree:
        try:
            raw_size = _extract(fetched.part, prefix, tree, files, symlinks, dirs, written,
                                fetched.inflated, eof=kind in TREE_PART_KINDS)
        except OSError as exc:
            if exc.errno not in _ENTRY_ERRNOS:
                raise  # this machine's (a full disk): the caller's to report
            raise ArtifactInvalid(f"its files cannot be made here ({exc.strerror})") from exc
        host_paths = _host_paths(fetched.index.get("host_paths"), files)
        if host_paths is not None:
            (tree.parent / HOST_PATHS).write_text(json.dumps(host_paths))
        for side_name, content in side_files.items():
            write_bytes_atomic(tree.parent / side_name, json.dumps(content).encode())
    if "unpublished" in draft:
        shutil.rmtree(draft["layer"].path, ignore_errors=True)
        raise ArtifactInvalid("; ".join(draft["unpublished"][:3]))
    layer = cache.lookup(kind, name, key)
    if layer is None:
        raise ArtifactInvalid("the layer vanished right after it was published")
    if kind in TREE_PART_KINDS:
        return layer  # its part is no slug's: nothing for the pack stage to keep
    _keep_part(layer, part_name, fetched.part, raw_size)
    _keep_part_records(layer, part_name, part_info)
    return layer


def part_only_wanted() -> bool:
    """SLUGBUILD_PART_ONLY=0 writes a pulled or imported layer's tree at once, as before."""
    return env_flag("SLUGBUILD_PART_ONLY", unset=True, unknown=True, empty=False)



def _publish_part_only(cache: Cache, fetched: Fetched, prefix: str, part_name: str,
                       expected: Expected, extra_check: TreeCheck | None) -> Layer:
    """Publish a fetched runtime or dependency layer part-only: its part checked
    against its index file by file (nothing written), kept with that index, its
    directories, its host paths and its stub (the files ``_stubbed`` names, taken
    from the part); the layer's own check (RECORDs) run on the stub, which holds
    every RECORD. The directory is renamed into place whole, manifest included:
    a reader sees all of it or nothing. The caller holds ``cache.lock``."""
    config, (files, symlinks, dirs) = fetched.config, expected
    kind, name, key = config["kind"], config["name"], config["key"]
    raw_size, stub, stub_links = _verify_part(fetched.part, prefix, files, symlinks,
                                              fetched.inflated)
    host_paths = _host_paths(fetched.index.get("host_paths"), files)
    too_long = next((rel for rel in (*files, *symlinks, *dirs)
                     if len(rel.encode()) > _NAME_MAX  # no part can be longer than that
                     and any(len(part.encode()) > _NAME_MAX for part in rel.split("/"))),
                    None)
    if too_long is not None:  # its tree could never be written here
        raise ArtifactInvalid(f"its files cannot be made here ({too_long[:60]}…: name too long)")
    scratch = cache.scratch_dir(f"{kind}-{name}")
    try:
        try:
            _write_stub(scratch / STUB, stub, stub_links, files)
        except OSError as exc:
            if exc.errno not in _ENTRY_ERRNOS:
                raise  # this machine's (a full disk): the caller's to report
            raise ArtifactInvalid(f"its files cannot be made here ({exc.strerror})") from exc
        if extra_check is not None:
            index = {"files": {rel: [size, 0, mode, digest]
                               for rel, (size, mode, digest) in files.items()},
                     "symlinks": symlinks}
            problems = list(extra_check(scratch / STUB, index))
            if problems:
                raise ArtifactInvalid("; ".join(problems[:3]))
        if host_paths is not None:
            (scratch / HOST_PATHS).write_text(json.dumps(host_paths))
        layer = Layer(scratch, {}, published=False)
        digest = fetched.part_sha256 or hashlib.sha256(fetched.part).hexdigest()
        # Its only copy of the files: not written (a full disk), nothing is published.
        _write_part(layer, part_name, fetched.part, raw_size, digest)
        _keep_part_records(layer, part_name, config["part"])
        record = {
            "format": PART_ONLY_FORMAT,
            "part": {"name": part_name, "prefix": prefix, "raw_size": raw_size,
                     "sha256": digest},
            "index": {"files": {rel: list(entry) for rel, entry in files.items()},
                      "symlinks": symlinks, "dirs": dirs, "host_paths": host_paths},
            "stub": sorted([*stub, *(rel for rel, _ in stub_links)])}
        # One line, by json's C encoder: the record holds the whole index (~7,000
        # entries for a Django app), which the indented form wrote 3 times slower.
        write_json_atomic(scratch / PART_ONLY, record, compact=True)
        write_json_atomic(scratch / MANIFEST, {"format": FORMAT, "kind": kind, "name": name,
                                               "key": key, "inputs": config["inputs"]})
        published = cache.publish(scratch, kind, name, key)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _remember_record(published, record)
    found = cache.lookup(kind, name, key, lazy=True)
    if found is None:
        raise ArtifactInvalid("the layer vanished right after it was published")
    return found


def _remember_record(path: Path, record: dict[str, Any]) -> None:
    """Note the record just written (its index checked already) as read, with the
    stat its file has now: this build does not read and check it again."""
    with contextlib.suppress(OSError):
        st = os.stat(path / PART_ONLY)
        _RECORDS[path] = ((st.st_ino, st.st_size, st.st_mtime_ns), record)


_NAME_MAX = 255  # bytes in one path component on Linux file systems


def _write_stub(stub_dir: Path, stub: dict[str, bytes], links: list[tuple[str, str]],
                files: dict[str, tuple[int, int, str]]) -> None:
    for rel, data in sorted(stub.items()):
        target = stub_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, stat.S_IMODE(files[rel][1]))
    for rel, link_target in links:
        (stub_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_target, stub_dir / rel)


def _keep_part_records(layer: Layer, part_name: str, part_info: dict[str, Any]) -> None:
    """Beside a kept part: its size breakdown and its ELF files' facts, as the artifact
    carries them (the same digest chain as the part)."""
    measure = part_info.get("measure")
    if isinstance(measure, dict):  # slug_size checks it against the part's digest and size
        with contextlib.suppress(OSError):
            write_bytes_atomic(layer.packed_parts / f"{part_name}{MEASURE_SUFFIX}",
                               json.dumps(measure).encode())
    stack = part_info.get("stack")
    if isinstance(stack, dict):  # stack_compat reads it (and rereads the tree if malformed)
        with contextlib.suppress(OSError):
            write_bytes_atomic(layer.packed_parts / STACK_RECORD, json.dumps(stack).encode())


# Part-only records read and checked in this process, by path, with the stat they had:
# a build reads one several times (verify, view, pack, part name).
_RECORDS: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_LISTINGS: dict[Path, tuple[dict[str, Any], PartListing]] = {}


def _part_only_record(path: Path) -> dict[str, Any]:
    """A part-only layer's record, its index checked as a pulled one is (safe paths,
    links inside the layer); ArtifactInvalid when unreadable or malformed. Read once
    per process while its file is unchanged (the caller must not change it)."""
    try:
        st = os.stat(path / PART_ONLY)
    except OSError as exc:
        raise ArtifactInvalid(f"its {PART_ONLY} is missing") from exc
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    known = _RECORDS.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    record = _read_part_only_record(path)
    _RECORDS[path] = (stamp, record)
    return record


def _read_part_only_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / PART_ONLY).read_text())
        part = record["part"]
        if record["format"] != PART_ONLY_FORMAT or not isinstance(part["name"], str) \
                or _safe_name(part["name"]) != part["name"] or not isinstance(part["prefix"], str) \
                or not isinstance(part["raw_size"], int) or not isinstance(part["sha256"], str) \
                or not isinstance(record["stub"], list) \
                or not all(isinstance(rel, str) for rel in record["stub"]):
            raise ArtifactInvalid(f"its {PART_ONLY} is malformed")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArtifactInvalid(f"its {PART_ONLY} is missing or malformed") from exc
    _expected(record["index"])
    return cast(dict[str, Any], record)


def _kept_bytes(layer: Layer, record: dict[str, Any]) -> bytes:
    """The part a part-only layer keeps, if its bytes are the ones its record names."""
    try:
        data = (layer.packed_parts / f"{record['part']['name']}.gz").read_bytes()
    except OSError as exc:
        raise ArtifactInvalid("its kept slug part is missing") from exc
    if hashlib.sha256(data).hexdigest() != record["part"]["sha256"]:
        raise ArtifactInvalid("its kept slug part does not match its record")
    return data


def part_problems(layer: Layer) -> list[str]:
    """What is wrong with a part-only layer (empty: its record is sound, its kept part
    has the digest it names, and its stub holds exactly the stubbed files of its index
    with their digests: what slug.json's package list is read from is the part's)."""
    try:
        record = _part_only_record(layer.path)
        _kept_bytes(layer, record)
        files, symlinks, _ = _expected(record["index"])
        stub = layer.path / STUB
        found = {rel for rel, _ in _walk_files(stub)}
        wanted, stubbable = set(record["stub"]), {rel for rel in (*files, *symlinks)
                                                  if _stubbed(rel)}
        # Only bin/'s ELF programs may be left out (what the stub holds is its part's).
        if not {rel for rel in stubbable if not rel.startswith("bin/")} <= wanted <= stubbable:
            return [f"its {STUB} is not what its index stubs"]
        if found != wanted:
            return [f"its {STUB} does not hold what its index lists"]
        for rel in sorted(wanted):
            path = stub / rel
            if rel in symlinks:
                if os.readlink(path) != symlinks[rel]:
                    return [f"{STUB}/{rel}: not the recorded symlink"]
            elif path.is_symlink() or hashlib.sha256(path.read_bytes()).hexdigest() \
                    != files[rel][2]:
                return [f"{STUB}/{rel}: content differs from the layer index"]
    except ArtifactInvalid as exc:
        return [str(exc)]
    except OSError as exc:
        return [f"its {STUB} could not be read ({exc.strerror or exc})"]
    return []


def _walk_files(root: Path) -> Iterator[tuple[str, bool]]:
    """(relative path, is a symlink) of every file and symlink below ``root``."""
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        for name in [*filenames, *(d for d in dirnames if os.path.islink(
                os.path.join(directory, d)))]:
            path = os.path.join(directory, name)
            yield (name if rel_dir == "." else f"{rel_dir}/{name}"), os.path.islink(path)


def kept_part_name(layer: Layer) -> str | None:
    """The name of a part-only layer's kept part (pack.py's ``part_name`` of the layout
    and mount it was packed for), None if its record is unreadable."""
    try:
        return str(_part_only_record(layer.path)["part"]["name"])
    except ArtifactInvalid:
        return None


def part_only_index(layer: Layer) -> dict[str, Any]:
    """A part-only layer's checked index (``files``: rel -> [size, mode, sha256],
    ``symlinks``, ``dirs``, ``host_paths``): what a check reads from files.json for a
    layer with its tree. ArtifactInvalid if unreadable; the caller must not change it."""
    return cast(dict[str, Any], _part_only_record(layer.path)["index"])


def ensure_tree(cache: Cache, layer: Layer) -> Layer:
    """The layer with its tree written: what every step that reads, runs or writes a
    part-only layer's files calls first (the one place a part-only layer's tree is
    made). Under the layer's tree lock (not its build lock, which the caller may
    hold); the tree is unpacked from the kept part into scratch, each file checked
    against the index, files.json written, then renamed into place: a crash leaves
    the layer part-only, never a half tree. Raises ArtifactInvalid when the part or
    its record is wrong (the caller discards the layer), OSError when the disk is,
    and the catalogue's disk-full error when the disk is full (the layer is not at
    fault: it stays part-only, and the build ends with that error).

    A build holding the layer's build lock may publish another layer under the same
    name meanwhile: the layer's directory is held open (its inode cannot be reused),
    checked to be the one looked up before and after the record and part are read,
    and files.json and the tree are renamed into that directory through its
    descriptor, so they never land in the new layer's directory; ArtifactInvalid
    when it was replaced."""
    if not layer.lazy:
        return layer
    try:
        return _write_tree(cache, layer)
    except OSError as exc:
        if errors.disk_full(exc):  # the layer stays part-only, as it was: not discarded
            raise errors.from_os_error(exc, note=f" (writing the tree of the cached layer "
                                                 f"{layer.path.name})") from exc
        raise


def _write_tree(cache: Cache, layer: Layer) -> Layer:
    kind, name, path = layer.path.parent.name, layer.path.name, layer.path
    with cache.lock(kind, f"{name}.tree"), _held_directory(path) as held:
        if not (path / TREE).is_dir():
            _still_the_layer(path, held, layer.inode)
            record = _part_only_record(path)
            data = _kept_bytes(layer, record)
            _still_the_layer(path, held, layer.inode)
            files, symlinks, dirs = _expected(record["index"])
            scratch = cache.scratch_dir(f"tree-{name}")
            try:
                tree = scratch / TREE
                written: dict[str, tuple[StatKey, str]] = {}
                tree.mkdir()
                _extract(data, record["part"]["prefix"], tree, files, symlinks, dirs, written)
                index = build_index(tree, written)
                made = {rel: (entry[0], entry[2], entry[3])
                        for rel, entry in index["files"].items()}
                if made != files or index["symlinks"] != symlinks:
                    raise ArtifactInvalid("the written tree differs from the layer index")
                index["checked"] = True  # its RECORDs passed on the stub, same index
                write_json_atomic(scratch / FILE_INDEX, index, compact=True)
                into = _by_descriptor(held, path)
                os.rename(scratch / FILE_INDEX, into / FILE_INDEX)
                os.rename(tree, into / TREE)
                _still_the_layer(path, held, layer.inode)  # else its tree is not at path
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return Layer(path, layer.manifest, layer.published, layer.inode)


@contextlib.contextmanager
def _held_directory(path: Path) -> Iterator[int]:
    """A descriptor of the directory ``path`` names now, closed on exit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError as exc:
        raise ArtifactInvalid("another build removed it meanwhile") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _by_descriptor(held: int, path: Path) -> Path:
    """A path that names the directory ``held`` whatever is renamed meanwhile (Linux's
    /proc/self/fd); ``path`` where there is no /proc."""
    by_fd = Path(f"/proc/self/fd/{held}")
    return by_fd if by_fd.is_dir() else path


def _still_the_layer(path: Path, held: int, inode: int) -> None:
    """ArtifactInvalid unless ``path`` still names the directory ``held`` and that is
    the layer looked up (``inode``; 0: not recorded)."""
    ino = os.fstat(held).st_ino
    if (inode and ino != inode) or os.stat(path).st_ino != ino:
        raise ArtifactInvalid("another build replaced it meanwhile")


def tree_or_none(cache: Cache, layer: Layer) -> Layer | None:
    """``ensure_tree``, or None with the layer discarded when its part or record is
    wrong or its tree cannot be written (the caller then builds or pulls it again).
    A full disk is not the layer's fault: ``ensure_tree``'s disk-full error goes on,
    the layer kept."""
    try:
        return ensure_tree(cache, layer)
    except (ArtifactInvalid, OSError):
        cache.discard(layer)
        return None


@dataclass
class PartListing:
    """A part-only layer's tree as its index lists it, for a view (layer_view.py) and
    the pack stage: its entries, and where a link to each points (its stub for what
    the stub holds, else the tree's path, there once ``ensure_tree`` wrote it)."""

    tree: Path
    stub: Path
    entries: dict[str, bool]  # relative path -> whether it is a directory
    stubbed: set[str]
    children_of: dict[str, list[tuple[str, bool]]]
    symlinks: set[str]
    _scanned: tuple[tuple[str, int, int], ...] | None = None

    def children(self, rel: str) -> list[tuple[str, bool]]:
        return self.children_of.get(rel, [])

    def target(self, rel: str) -> str:
        return str((self.stub if rel in self.stubbed else self.tree) / rel)

    def scanned(self) -> tuple[tuple[str, int, int], ...]:
        """The entries as ``pack.scan_tree`` lists a tree (no inode numbers)."""
        if self._scanned is None:
            found = [(rel, DIRECTORY if is_dir else SYMLINK if rel in self.symlinks else FILE,
                      0) for rel, is_dir in self.entries.items()]
            found.sort(key=lambda item: item[0].split("/"))
            self._scanned = tuple(found)
        return self._scanned


def part_listing(layer: Layer) -> PartListing:
    """The listing of a part-only layer (ArtifactInvalid if its record is unreadable)."""
    record = _part_only_record(layer.path)
    known = _LISTINGS.get(layer.path)
    if known is not None and known[0] is record:
        return known[1]
    listing = _listing_of(layer, record)
    _LISTINGS[layer.path] = (record, listing)
    return listing


def _listing_of(layer: Layer, record: dict[str, Any]) -> PartListing:
    index, stub_list = record["index"], set(record["stub"])
    entries = {rel: False for rel in (*index["files"], *index["symlinks"])}
    entries.update((rel, True) for rel in index["dirs"])
    # A directory the index left out is in any written tree: each path's missing
    # ancestors, added shallowest first; ``complete``: directories whose ancestors are in.
    complete: set[str] = set()
    for rel in list(entries):
        chain = []
        parent = rel.rpartition("/")[0]
        while parent and parent not in complete:
            chain.append(parent)
            parent = parent.rpartition("/")[0]
        for parent in reversed(chain):
            entries[parent] = True
            complete.add(parent)
    children: dict[str, list[tuple[str, bool]]] = {}
    for rel, is_dir in entries.items():
        parent, _, base = rel.rpartition("/")
        children.setdefault(parent, []).append((base, is_dir))
    stubbed: set[str] = set()
    stub = layer.path / STUB
    for rel in entries:
        if rel in stub_list:
            parts = rel.split("/")
            stubbed.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return PartListing(layer.tree, stub, entries, stubbed, children, set(index["symlinks"]))


# What writing an entry's files fails with when the entry itself is at fault (a name
# too long for this file system, a path listed as two things): the entry is not used,
# the registry or store stays usable. Others (a full disk, no permission) are this
# machine's.
_ENTRY_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                           errno.ELOOP, errno.EINVAL, errno.EILSEQ})


def _check_delta(delta: object, files: dict[str, Any], symlinks: dict[str, str],
                 dirs: list[str]) -> None:
    """A collectstatic output's ``delta.json`` (static_reuse.py) names paths inside the
    build directory only, exactly the files and symlinks its tree holds, and every
    directory of the tree (made, or above a path it names): applied to a build, it
    cannot reach outside it. ``cache.restore`` makes every directory of the tree, so
    one the delta does not name could be made through a link of the view, inside a
    cached layer."""
    if not isinstance(delta, dict):
        raise ArtifactInvalid("its delta.json is malformed")
    try:
        listed = {kind: [_safe_rel(rel) for rel in delta[kind]]
                  for kind in ("files", "symlinks", "directories", "removed")}
    except (KeyError, TypeError) as exc:
        raise ArtifactInvalid("its delta.json is malformed") from exc
    if sorted(listed["files"]) != sorted(files) or sorted(listed["symlinks"]) != sorted(symlinks):
        raise ArtifactInvalid("its delta.json does not list the files its tree holds")
    stray = sorted(set(dirs) - delta_directories(listed))
    if stray:
        raise ArtifactInvalid(f"its tree holds the directory {stray[0]}, "
                              "which its delta.json does not name")
    for rel in (rel for paths in listed.values() for rel in paths):
        if in_python_home(rel):
            raise ArtifactInvalid(f"its delta.json names {rel}, in the Python prefix")


def delta_directories(delta: dict[str, list[str]]) -> set[str]:
    """The directories a collectstatic output's tree may hold: those its delta makes,
    and those above the paths it makes (which ``_confined`` checks when it is applied)."""
    allowed = set(delta["directories"])
    for kind in ("files", "symlinks", "directories"):
        for rel in delta[kind]:
            parts = rel.split("/")
            allowed.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    return allowed


# Where the runtime and dependency layers are mounted in a build directory (shown by a
# view while a collectstatic output is applied: links to the cached trees).
PYTHON_HOME = ".heroku/python"


def in_python_home(rel: str) -> bool:
    """Whether a build-relative path is the Python prefix, inside it, or holds it
    (``.heroku``): no collectstatic output may change those (static_reuse.py)."""
    return rel == PYTHON_HOME or rel.startswith(PYTHON_HOME + "/") \
        or PYTHON_HOME.startswith(rel + "/")


def _safe_name(name: str) -> str:
    return _TAG_UNSAFE.sub("_", name)[:120]


def _keep_part(layer: Layer, name: str, data: bytes, raw_size: int,
               sha256: str | None = None) -> None:
    """Keep the part as pack.py keeps its own (``<name>.gz`` + ``<name>.json``); best effort
    (a layer with its tree packs from the tree without it)."""
    with contextlib.suppress(OSError):
        _write_part(layer, name, data, raw_size, sha256)


def _write_part(layer: Layer, name: str, data: bytes, raw_size: int,
                sha256: str | None = None) -> None:
    """``_keep_part``, OSError when not written: a part-only layer is nothing without it."""
    directory = layer.packed_parts
    record = json.dumps({"sha256": sha256 or hashlib.sha256(data).hexdigest(),
                         "raw_size": raw_size})
    directory.mkdir(exist_ok=True)
    write_bytes_atomic(directory / f"{name}.gz", data)
    write_bytes_atomic(directory / f"{name}.json", record.encode())


# --- an OCI image layout directory as a store ----------------------------------------------

# The most a layout's index.json or one of its manifests may be: an export's index lists
# one short entry per layer (the limit containers/image sets for a manifest).
MAX_LAYOUT_INDEX = 4 * 2 ** 20


class LayoutStore:
    """An OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``): what
    ``cache export DIR`` writes and ``cache import DIR`` reads. Each blob is a file
    named by its digest, checked on every read."""

    INDEX = "index.json"

    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = root
        if create:
            (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            layout = root / "oci-layout"
            if not layout.is_file() or layout.is_symlink():  # never written through a link
                write_bytes_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')
            if not (root / self.INDEX).exists():
                self._write_index({"schemaVersion": 2, "manifests": []})

    def _blob(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not _HEX64.match(hexdigest):
            raise ArtifactInvalid(f"unsupported digest {digest!r}")
        return self.root / "blobs" / "sha256" / hexdigest

    def has_blob(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def put_blob(self, digest: str, data: bytes) -> None:
        check_digest(data, digest)
        write_bytes_atomic(self._blob(digest), data)

    def get_blob(self, digest: str, size: int) -> bytes:
        path = self._blob(digest)
        try:  # O_NONBLOCK: a fifo planted as a blob must not hang the reader
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ArtifactInvalid(f"blob {digest[:19]}… is missing") from exc
        with open(fd, "rb") as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactInvalid(f"blob {digest[:19]}… is not a regular file")
            if st.st_size != size:
                raise ArtifactInvalid(f"blob {digest[:19]}… has the wrong size")
            return check_digest(handle.read(size + 1), digest)

    def read_index(self) -> dict[str, Any]:
        """index.json, read only as a regular file of at most MAX_LAYOUT_INDEX bytes (a
        fifo planted there hung ``cache import``, /dev/zero filled its memory)."""
        data = small_regular_file(self.root / self.INDEX, MAX_LAYOUT_INDEX)
        if data is None:
            raise ArtifactInvalid(f"{self.root / self.INDEX} is missing, or not a regular "
                                  f"file of at most {MAX_LAYOUT_INDEX} bytes")
        try:
            index = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ArtifactInvalid(f"{self.root / self.INDEX} is not JSON") from exc
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ArtifactInvalid(f"{self.root / self.INDEX} is not an OCI image index")
        return index

    def tags(self) -> list[str]:
        return [name for name in map(_ref_name, self.read_index()["manifests"])
                if name is not None]

    def _descriptor(self, tag: str) -> dict[str, Any] | None:
        for entry in self.read_index()["manifests"]:
            if _ref_name(entry) == tag:
                return cast(dict[str, Any], entry)
        return None

    def get_manifest(self, tag: str) -> bytes | None:
        entry = self._descriptor(tag)
        if entry is None:
            return None
        try:
            size = int(entry["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactInvalid(f"the index entry of {tag} is malformed") from exc
        if not 0 <= size <= MAX_LAYOUT_INDEX:  # a manifest is a few hundred bytes
            raise ArtifactInvalid(f"the manifest of {tag} is larger than slugbuild accepts")
        return self.get_blob(str(entry.get("digest")), size)

    def put_manifest(self, tag: str, data: bytes) -> None:
        digest = digest_of(data)
        self.put_blob(digest, data)
        index = self.read_index()
        index["manifests"] = [entry for entry in index["manifests"] if _ref_name(entry) != tag]
        index["manifests"].append({
            "mediaType": MANIFEST_TYPE, "digest": digest, "size": len(data),
            "artifactType": ARTIFACT_TYPE,
            "annotations": {"org.opencontainers.image.ref.name": tag}})
        index["manifests"].sort(key=lambda e: _ref_name(e) or "")
        self._write_index(index)

    def _write_index(self, index: dict[str, Any]) -> None:
        write_bytes_atomic(self.root / self.INDEX,
                      (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())


def _ref_name(entry: object) -> str | None:
    """The tag an index entry names (None for an entry not in the layout spec's shape)."""
    annotations = entry.get("annotations") if isinstance(entry, dict) else None
    name = annotations.get("org.opencontainers.image.ref.name") \
        if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def layer_size(path: Path) -> int:
    """Bytes of the regular files under a layer's directory (tree, parts, metadata)."""
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def is_layer_dir(path: Path) -> bool:
    """A finished layer's directory: its tree written, or part-only."""
    return (path / MANIFEST).is_file() and ((path / TREE).is_dir() or (path / PART_ONLY).is_file())

