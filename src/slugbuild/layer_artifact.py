"""A cached layer as an OCI artifact: what travels between caches on different machines.

One artifact per layer key (docs/cache.md#the-second-level-a-registry):

- config blob: the layer's ``manifest.json`` (kind, name, key, inputs) plus the
  namespace it belongs to and how its slug part was made;
- part blob: the layer's kept, compressed slug part (``packed/<name>.gz``), the
  bytes a slug holds for it;
- index blob: its ``files.json`` (size, mode, SHA-256 of each file, each
  symlink's target), its directories and its ``host-paths.json``.

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

import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from .cache import (
    FILE_INDEX,
    MANIFEST,
    TREE,
    Cache,
    Layer,
    StatKey,
    TreeCheck,
    read_index,
    stat_key,
    write_bytes_atomic,
)
from .slug.archive import SlugLimits

# Bumped whenever the artifact's shape or meaning changes: it is part of every tag,
# so caches of different formats never read each other's entries.
ARTIFACT_FORMAT = 1
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.slugbuild.layer.v1"
CONFIG_TYPE = "application/vnd.slugbuild.layer.config.v1+json"
PART_TYPE = "application/vnd.slugbuild.layer.part.v1.tar+gzip"
INDEX_TYPE = "application/vnd.slugbuild.layer.files.v1+json"
KEY_ANNOTATION = "dev.slugbuild.layer.key"
TITLE_ANNOTATION = "org.opencontainers.image.title"
HOST_PATHS = "host-paths.json"
MEASURE_SUFFIX = ".sizes.json"  # beside a kept part: its size breakdown (pack.py, slug_size.py)
# What an artifact may hold at most (a hostile store must not fill the disk or memory).
MAX_BLOB = 2 * 2 ** 30
MAX_METADATA = 64 * 2 ** 20
# A part whose index declares more than this unpacked is unpacked file by file, not
# inflated in memory at once: an index of zero-filled files (a gzip bomb whose digests
# all match) must not exhaust memory. The declared total is also held to the limit on
# unpacked slugs (SLUGBUILD_MAX_UNPACKED_SIZE, docs/security.md).
IN_MEMORY_LIMIT = 512 * 2 ** 20
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


def kept_part(layer: Layer) -> KeptPart | None:
    """The layer's most recent kept part whose bytes match their record, else None."""
    try:
        records = sorted(layer.packed_parts.glob("*.json"), key=lambda p: p.stat().st_mtime_ns,
                         reverse=True)
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


def make_artifact(layer: Layer, space: str) -> Artifact | None:
    """The artifact for a published layer, or None when it has no intact kept part
    or its files.json is unreadable (nothing is shared then)."""
    part = kept_part(layer)
    index = read_index(layer.path / FILE_INDEX)
    if part is None or index is None:
        return None
    manifest = layer.manifest
    kind, key = manifest.get("kind"), manifest.get("key")
    if not isinstance(kind, str) or not isinstance(key, str):
        return None
    try:
        host_paths = json.loads((layer.path / HOST_PATHS).read_text())
    except (OSError, ValueError, RecursionError):
        host_paths = None
    files = {rel: [entry[0], entry[2], entry[3]] for rel, entry in index["files"].items()}
    index_blob = _canonical({"files": files, "symlinks": index["symlinks"],
                             "dirs": _directories(layer.tree), "host_paths": host_paths})
    prefix = _part_prefix(part.data, set(files) | set(index["symlinks"]))
    part_info: dict[str, Any] = {"name": part.name, "raw_size": part.raw_size,
                                 "prefix": prefix}
    try:  # the part's size breakdown (slug_size.py), so a puller need not measure it again
        part_info["measure"] = json.loads(
            (layer.packed_parts / f"{part.name}{MEASURE_SUFFIX}").read_text())
    except (OSError, ValueError):
        pass
    config = _canonical({
        "format": ARTIFACT_FORMAT, "namespace": space, "kind": kind, "name": manifest["name"],
        "key": key, "inputs": manifest.get("inputs", {}), "part": part_info,
    })
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


@dataclass(frozen=True)
class Fetched:
    """An artifact read from a store, every blob's digest checked."""

    config: dict[str, Any]
    index: dict[str, Any]
    part: bytes


def fetch_artifact(store: Store, space: str, kind: str, key: str,
                   transfer: Transfer | None = None) -> Fetched | None:
    """The artifact for ``kind``/``key`` in ``store`` (None if it has none).

    Raises ArtifactInvalid when it is there but wrong: a blob not matching its
    digest, another key or namespace than its tag says, malformed metadata.
    """
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
    blobs = [store.get_blob(digest, size) for digest, size in zip(digests, sizes)]
    if transfer is not None:
        transfer.received += len(raw) + sum(len(blob) for blob in blobs)
    try:
        config, index = json.loads(blobs[0]), json.loads(blobs[2])
    except (ValueError, RecursionError) as exc:
        raise ArtifactInvalid("its metadata is not JSON") from exc
    if not isinstance(config, dict) or not isinstance(index, dict):
        raise ArtifactInvalid("its metadata is malformed")
    if (config.get("format"), config.get("namespace"), config.get("kind"), config.get("key")) \
            != (ARTIFACT_FORMAT, space, kind, key):
        raise ArtifactInvalid("it is the entry of another key, platform or format")
    return Fetched(config, index, blobs[1])


def _safe_rel(rel: object) -> str:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel \
            or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ArtifactInvalid(f"unsafe path in the layer index: {rel!r}")
    return rel


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
        files = {_safe_rel(rel): (int(size), int(mode), str(digest))
                 for rel, (size, mode, digest) in index["files"].items()}
        symlinks = {_safe_rel(rel): _inside_link(rel, target)
                     for rel, target in index["symlinks"].items()}
        dirs = [_safe_rel(rel) for rel in index["dirs"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactInvalid(f"its file index is malformed ({exc})") from exc
    for rel in [*files, *symlinks, *dirs]:  # nothing is placed below a symlink
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in symlinks:
                raise ArtifactInvalid(f"{rel} lies below the symlink {'/'.join(parts[:depth])}")
    return files, symlinks, dirs


def _decompress(part: bytes, limit: int) -> bytes:
    """The part's tar bytes (every gzip member), refused past ``limit`` bytes (what its
    index allows): an artifact cannot make this machine unpack a bomb."""
    chunks, total, data = [], 0, part
    while data:
        inflate = zlib.decompressobj(31)
        chunk = inflate.decompress(data, limit - total + 1)
        total += len(chunk)
        chunks.append(chunk)
        if total > limit:
            raise ArtifactInvalid("its slug part unpacks to more than its index holds")
        if not inflate.eof:
            raise ArtifactInvalid("its slug part is truncated")
        data = inflate.unused_data
    return b"".join(chunks)


def _write_file(target: Path, data: memoryview, expected: tuple[int, int, str],
                rel: str, written: dict[str, tuple[StatKey, str]]) -> None:
    """One file of a part, checked against the index; its digest noted in ``written``
    for files.json (Cache.new_layer then does not read it again)."""
    if hashlib.sha256(data).hexdigest() != expected[2]:
        raise ArtifactInvalid(f"{rel}: content differs from the layer index")
    with open(target, "wb") as out:
        out.write(data)
    os.chmod(target, stat.S_IMODE(expected[1]))
    written[rel] = (stat_key(os.lstat(target)), expected[2])


def _extract(part: bytes, prefix: str, tree: Path, files: dict[str, tuple[int, int, str]],
             symlinks: dict[str, str], dirs: list[str],
             written: dict[str, tuple[StatKey, str]]) -> int:
    """Write the part's members into ``tree``: exactly the files and symlinks the
    index lists, each file with its size, SHA-256 and mode. Returns the raw tar size.

    The part is inflated at once and its files written by a few threads (hashing
    and file creation release the GIL): pulling a layer is mostly this."""
    limit = sum(-(-size // 512) * 512 + 4096 for size, _, _ in files.values()) \
        + 4096 * len(symlinks) + 2 ** 20
    cap = SlugLimits.from_env().max_unpacked_bytes
    if limit > cap:
        raise ArtifactInvalid(f"its index declares {limit} bytes unpacked, more than "
                              f"SLUGBUILD_MAX_UNPACKED_SIZE ({cap})")
    if limit > IN_MEMORY_LIMIT:
        return _extract_streaming(part, prefix, tree, files, symlinks, dirs, written)
    try:
        raw = _decompress(part, limit)
    except zlib.error as exc:
        raise ArtifactInvalid(f"its slug part is unreadable ({exc})") from exc
    view = memoryview(raw)
    for rel in dirs:
        (tree / rel).mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = []
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for member in tar:
                    found = _checked_member(member, prefix, files, symlinks, seen, links)
                    if found is None:
                        continue
                    rel, expected = found
                    target = tree / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    data = view[member.offset_data:member.offset_data + member.size]
                    writes.append(pool.submit(_write_file, target, data, expected, rel,
                                              written))
        except (tarfile.TarError, EOFError) as exc:
            raise ArtifactInvalid(f"its slug part is unreadable ({exc})") from exc
        finally:
            for write in writes:
                write.result()  # the first failure (a mismatch, a full disk) is raised
    _place_links(tree, files, symlinks, seen, links)
    return len(raw)


def _checked_member(member: tarfile.TarInfo, prefix: str,
                    files: dict[str, tuple[int, int, str]], symlinks: dict[str, str],
                    seen: set[str], links: list[tuple[str, str]]
                    ) -> tuple[str, tuple[int, int, str]] | None:
    """A part's file member as (layer path, index entry), or None for a symlink (noted
    in ``links``, placed last); ArtifactInvalid for anything the index does not list
    exactly so (outside the layer, twice, another type, sparse, another size)."""
    if not member.name.startswith(prefix):
        raise ArtifactInvalid(f"{member.name} is outside the layer")
    rel = member.name[len(prefix):]
    if rel in seen:
        raise ArtifactInvalid(f"{rel} is in the part twice")
    seen.add(rel)
    if member.issym():
        if symlinks.get(rel) != member.linkname:
            raise ArtifactInvalid(f"{rel}: not the recorded symlink")
        links.append((rel, member.linkname))
        return None
    expected = files.get(rel)
    if not member.isreg() or member.sparse is not None or expected is None \
            or member.size != expected[0]:
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
                       dirs: list[str], written: dict[str, tuple[StatKey, str]]) -> int:
    """``_extract`` for a large part: one member at a time, each file hashed as it is
    written in chunks, so memory stays bounded whatever the index declares."""
    for rel in dirs:
        (tree / rel).mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    try:
        with _open_part(part) as tar:
            for member in tar:
                found = _checked_member(member, prefix, files, symlinks, seen, links)
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
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArtifactInvalid(f"its slug part is unreadable ({exc})") from exc
    _place_links(tree, files, symlinks, seen, links)
    return _raw_tar_size(part)


def _copy_hashed(source: io.BufferedReader | Any, target: Path) -> str:
    """Write ``source`` to ``target`` in chunks; the SHA-256 of what was written."""
    hasher = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            hasher.update(chunk)
            out.write(chunk)
    return hasher.hexdigest()


def _raw_tar_size(part: bytes) -> int:
    """The part's size inflated, counted in chunks (what the in-memory path measures)."""
    total = 0
    with gzip.GzipFile(fileobj=io.BytesIO(part)) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            total += len(chunk)
    return total


def materialise(cache: Cache, fetched: Fetched, extra_check: TreeCheck | None = None) -> Layer:
    """Publish a fetched artifact as a layer of ``cache``, through the verified path:
    its tree rebuilt from the part, each file checked against the index, the
    layer's own check (RECORDs) passed, files.json written by the cache itself,
    then the part kept for the pack stage. The caller holds ``cache.lock``.
    Raises ArtifactInvalid (nothing published) when anything does not match."""
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
    files, symlinks, dirs = _expected(fetched.index)

    def check(tree: Path, index: dict[str, Any]) -> Iterable[str]:
        made = {rel: (entry[0], entry[2], entry[3]) for rel, entry in index["files"].items()}
        if made != files or index["symlinks"] != symlinks:
            raise ArtifactInvalid("the rebuilt tree differs from the layer index")
        return list(extra_check(tree, index)) if extra_check is not None else []

    draft: dict[str, Any] = {}
    raw_size = 0
    written: dict[str, tuple[StatKey, str]] = {}
    with cache.new_layer(kind, name, key, config["inputs"], check, draft, written) as tree:
        raw_size = _extract(fetched.part, prefix, tree, files, symlinks, dirs, written)
        host_paths = _host_paths(fetched.index.get("host_paths"), files)
        if host_paths is not None:
            (tree.parent / HOST_PATHS).write_text(json.dumps(host_paths))
    if "unpublished" in draft:
        shutil.rmtree(draft["layer"].path, ignore_errors=True)
        raise ArtifactInvalid("; ".join(draft["unpublished"][:3]))
    layer = cache.lookup(kind, name, key)
    if layer is None:
        raise ArtifactInvalid("the layer vanished right after it was published")
    _keep_part(layer, part_name, fetched.part, raw_size)
    measure = part_info.get("measure")
    if isinstance(measure, dict):  # slug_size checks it against the part's digest and size
        with contextlib.suppress(OSError):
            write_bytes_atomic(layer.packed_parts / f"{part_name}{MEASURE_SUFFIX}",
                          json.dumps(measure).encode())
    return layer


def _safe_name(name: str) -> str:
    return _TAG_UNSAFE.sub("_", name)[:120]


def _keep_part(layer: Layer, name: str, data: bytes, raw_size: int) -> None:
    """Keep the part as pack.py keeps its own (``<name>.gz`` + ``<name>.json``); best effort."""
    directory = layer.packed_parts
    record = json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "raw_size": raw_size})
    with contextlib.suppress(OSError):
        directory.mkdir(exist_ok=True)
        write_bytes_atomic(directory / f"{name}.gz", data)
        write_bytes_atomic(directory / f"{name}.json", record.encode())


# --- an OCI image layout directory as a store ----------------------------------------------

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
            if not layout.exists():
                layout.write_text('{"imageLayoutVersion":"1.0.0"}')
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
        try:
            index = json.loads((self.root / self.INDEX).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ArtifactInvalid(f"{self.root / self.INDEX} is missing or not JSON") from exc
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
            return self.get_blob(str(entry["digest"]), int(entry["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactInvalid(f"the index entry of {tag} is malformed") from exc

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
    return (path / MANIFEST).is_file() and (path / TREE).is_dir()

