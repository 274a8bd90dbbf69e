"""Pack stage: a deterministic gzip tarball of the build directory.

Every entry is owned by 0:0 with empty user/group names, its mode
normalised (0755 for directories and executables, 0644 otherwise) and its
mtime set to SOURCE_DATE_EPOCH (or DEFAULT_EPOCH). Hard links are stored as
regular files so how the build laid files out never shows.

The archive is written in parts, each its own run of gzip members:

1. every directory of the tree, sorted (so an extractor meets a directory
   before anything in it);
2. for each cached layer the build used (the runtime, then the
   dependencies), the layer's files and symlinks that are still unchanged in
   the tree, sorted;
3. every other file and symlink, sorted, then the end-of-archive blocks.

A layer part depends only on the layer and the packing parameters, so it is
compressed once and kept with the layer, in the directory the cache gives
for it (``cache.Layer.packed_parts``); a warm
build copies it instead of compressing the runtime and packages again.
Within a part, compression runs on every core: the tar stream is cut into
fixed-size blocks, each compressed as its own gzip member (no name, no time
in its header) and written in order. A multi-member file is plain gzip to
every reader, and the output depends only on the tree, the layers, the block
size and the level: same inputs, same bytes, whatever the cache held.
"""

from __future__ import annotations

import collections
import contextlib
import filecmp
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Protocol

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

from . import errors
from .cache import DIGESTS, FILE_INDEX, StatKey, read_index, stat_key
from .slug_size import measure_part_ahead
from .textfiles import decimal

# 1980-01-01T00:00:00Z: the oldest time every archive format can represent.
DEFAULT_EPOCH = 315532800
# Uncompressed bytes per gzip member; part of the format (changing it changes bytes).
GZIP_BLOCK = 4 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
LAYOUTS = {"herokuish": ".", "heroku": "./app"}


@dataclass(frozen=True)
class PackedPart:
    """Where one part lies in the slug file; a layer's part also names the file its
    size measurement is kept in (slug_size.measure_slug), valid for ``sha256``."""

    start: int
    length: int
    sha256: str = ""
    measure_path: Path | None = None
    # A part kept by the pack that is not a layer's (not in slug.json's layer_parts):
    # the SHA-256 of its bytes, which its kept measurement at measure_path must name.
    measured_as: str = ""


@dataclass(frozen=True)
class PackedSlug:
    sha256: str
    size: int
    parts: tuple[PackedPart, ...] = field(default=(), compare=False)


def source_date_epoch(explicit: int | None = None) -> int:
    if explicit is not None:
        return explicit
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    epoch = decimal(value)
    return epoch if epoch is not None else DEFAULT_EPOCH


class _Sink(Protocol):
    """Where compressed or tar bytes go: the slug file, a buffer, a hashing writer."""

    def write(self, data: bytes, /) -> object: ...


class _ParallelGzipWriter(io.RawIOBase):
    """A write-only stream that gzips fixed-size blocks concurrently, in order."""

    def __init__(self, target: _Sink, level: int, workers: int) -> None:
        self.target = target
        self.level = level
        self.buffer = bytearray()
        self.pool = ThreadPoolExecutor(max_workers=workers)  # zlib releases the GIL
        # Members to write in order; None marks the end of a unit (``end_unit``).
        self.pending: collections.deque[Future[bytes] | None] = collections.deque()
        self.max_pending = workers * 2
        self.written = 0
        self.unit_ends: list[int] = []  # compressed bytes written when each unit ended
        self.in_units = False

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        before = len(self.buffer)
        self.buffer += data
        added = len(self.buffer) - before
        while len(self.buffer) >= GZIP_BLOCK:
            self._submit(bytes(self.buffer[:GZIP_BLOCK]))
            del self.buffer[:GZIP_BLOCK]
        return added

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(gzip.compress, block, self.level, mtime=0))
        while len(self.pending) > self.max_pending:
            self._write_next()

    def _write_next(self) -> None:
        member = self.pending.popleft()
        if member is None:
            self.unit_ends.append(self.written)
            return
        data = member.result()
        self.target.write(data)
        self.written += len(data)

    def end_unit(self) -> None:
        """End a unit (PART_FORMAT 2): what is buffered becomes a member of its own,
        so the next unit's members depend on nothing written before them."""
        self.in_units = True
        if self.buffer:
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        self.pending.append(None)

    def add_unit(self, members: bytes) -> None:
        """A whole unit, compressed already (a donor's checked members), in its place."""
        assert not self.buffer, "a unit starts on a member boundary"
        done: Future[bytes] = Future()
        done.set_result(members)
        self.pending.append(done)
        self.end_unit()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.buffer or not (self.pending or self.in_units):
                self._submit(bytes(self.buffer))
                self.buffer.clear()
            while self.pending:
                self._write_next()
        finally:
            self.pool.shutdown()
            super().close()


class OutputWriteError(OSError):
    """Writing the packed slug to its target failed (a full disk, a closed pipe).

    Every other failure while packing is one of reading the tree being packed,
    raised as PACK_SOURCE_UNREADABLE, so the caller tells "the output cannot be
    written" from "a file of the slug cannot be read".
    """


class _HashingWriter:
    """Passes writes on to ``target``, counting and hashing them."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        try:
            self.target.write(data)
        except OutputWriteError:
            raise
        except OSError as exc:
            raise OutputWriteError(exc.errno, exc.strerror or str(exc)) from exc
        self.digest.update(data)
        self.size += len(data)
        return len(data)


# Kinds of entry, as the scan below sees them (without following links).
DIRECTORY, SYMLINK, FILE, OTHER = range(4)


def scan_tree(root: Path | str) -> list[tuple[str, int, int]]:
    """(relative path, kind, inode number) of every entry below ``root``, sorted by
    path components (a directory right before its contents).

    One ``scandir`` per directory: kinds and inode numbers come with the
    directory listing, so nothing is stat'ed (slugs hold tens of thousands of
    entries, and this runs for the tree and for every layer).
    """
    entries = []
    pending = [("", str(root))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    kind = DIRECTORY
                    pending.append((rel + "/", entry.path))
                elif entry.is_symlink():
                    kind = SYMLINK
                elif entry.is_file(follow_symlinks=False):
                    kind = FILE
                else:
                    kind = OTHER
                entries.append((rel, kind, entry.inode()))
    entries.sort(key=lambda item: item[0].split("/"))
    return entries


@dataclass(frozen=True)
class LayerPart:
    """A cached layer whose files were placed at ``mount`` (relative) in the packed tree.

    ``packed_dir`` keeps compressed copies of the part, one per set of packing
    parameters: a directory the cache gives (``cache.Layer.packed_parts``), inside
    the layer's own, so it goes when the layer goes.
    """

    mount: str
    tree: Path
    packed_dir: Path
    # The build's own copies of the layer's files (a build that did not hold the
    # cache's link lock): relative path -> (inode, size, mtime_ns, ctime_ns) just
    # after copying; a copy with that stat still is the layer's file. None: links.
    copies: Mapping[str, tuple[int, int, int, int]] | None = field(default=None, compare=False)
    symlinks: Mapping[str, str] = field(default_factory=dict, compare=False)  # with copies
    # Whether the files a part was just compressed from were unchanged meanwhile
    # (a part made from files a build step or another build changed is not kept).
    unchanged: Callable[[], bool] | None = field(default=None, compare=False)
    # Shown in the packed tree by a view (layer_view.py): its files are not there, and
    # these paths of the tree are the view's links (not packed). None: placed.
    view_links: frozenset[str] | None = field(default=None, compare=False)
    # A part-only layer's entries (layer_artifact.PartListing.scanned): its tree is
    # not written, so its directories come from here. None: scanned from ``tree``.
    listing: tuple[tuple[str, int, int], ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _PackParams:
    base: str
    epoch: int
    level: int

    def part_name(self, mount: str) -> str:
        settings = json.dumps([PART_FORMAT, f"{self.base}/{mount}", self.epoch, self.level,
                               GZIP_BLOCK])
        return hashlib.sha256(settings.encode()).hexdigest()[:24]


# Changes whenever the bytes of a layer part would change for the same inputs.
# 2: cut into units (``layer_units``), each its own run of members.
PART_FORMAT = 2
# zlib level 5: the smallest level whose slugs are no larger than Heroku's
# `tar | gzip -6` of the same app (our slug holds fewer bytes than Heroku's build
# directory, but at level 4 compressed 1% larger on a large data stack). Level 6
# costs twice level 4's CPU, level 5 a third more; a cold build is short of CPU on
# two cores (docs/benchmarks.md, session 6: the data stack and sdists).
DEFAULT_LEVEL = 5


def pack_tree(root: Path, target: BinaryIO, layout: str = "herokuish",
              mtime: int | None = None, compresslevel: int = DEFAULT_LEVEL,
              layers: Sequence[LayerPart] = ()) -> PackedSlug:
    """Write ``root`` as a slug tarball to ``target``; return its sha256 and size.

    ``layers`` are cached layers the build linked into ``root``: their
    unchanged files are written as a part of their own, taken from the
    layer's ``packed/`` copy when one is there (and made and kept when not).
    """
    params = _PackParams(LAYOUTS[layout], source_date_epoch(mtime), compresslevel)
    try:
        return _pack_tree(root, target, params, layers)
    except OutputWriteError:
        raise
    except OSError as exc:  # listing or reading the tree, not writing the slug
        raise _unreadable(exc.filename or str(root), exc) from exc


def _unreadable(path: str, exc: OSError) -> errors.SlugbuildError:
    return errors.PACK_SOURCE_UNREADABLE.error(
        variant="unreadable", path=path, reason=exc.strerror or str(exc))


def _pack_tree(root: Path, target: BinaryIO, params: _PackParams,
               layers: Sequence[LayerPart]) -> PackedSlug:
    writer = _HashingWriter(target)
    root_text = str(root)
    scanned = scan_tree(root)
    directories = [rel for rel, kind, _ in scanned if kind == DIRECTORY]
    view_links = frozenset().union(*(layer.view_links for layer in layers
                                     if layer.view_links is not None))
    placed = {rel: (kind, inode) for rel, kind, inode in scanned
              if kind in (SYMLINK, FILE) and rel not in view_links}
    viewed: dict[LayerPart, list[tuple[str, int, int]]] = {}
    for layer in layers:
        if layer.view_links is not None:
            # Its directories, as they would be in the tree had its files been placed.
            try:
                viewed[layer] = list(layer.listing) if layer.listing is not None \
                    else _viewed_listing(layer)
            except OSError:
                raise errors.CACHE_LAYER_GONE.error(layer=layer.tree.parent.name) from None
            directories += [_under(layer.mount, rel) for rel, kind, _ in viewed[layer]
                            if kind == DIRECTORY]
    if viewed:
        directories = sorted(set(directories), key=lambda rel: rel.split("/"))

    raw_size, kept = _kept_or_compressed(writer, params, lambda tar: _add_directories(
        tar, params, directories), 0, layers[-1].packed_dir if layers else None)
    parts = [PackedPart(0, writer.size, measure_path=kept[0], measured_as=kept[1])]
    claimed: set[str] = set()
    for layer in layers:
        if layer in viewed:
            members = [_under(layer.mount, rel) for rel, kind, _ in viewed[layer]
                       if kind in (SYMLINK, FILE)]
            if any(name in placed or name in claimed for name in members):
                # Never: a view is materialised before any step may write there.
                raise RuntimeError(f"a file of the build hides one of {layer.tree}, "
                                   f"shown by a view")
            complete = True
        else:
            try:
                members, complete = _intact_members(root_text, placed, layer, claimed)
            except OSError:  # the layer went (another build discarded it): pack the tree
                continue
        claimed.update(members)
        start = writer.size
        if complete:
            within = [name[len(layer.mount) + 1:] if layer.mount else name for name in members]
            written, digest = (
                _write_layer_part(writer, layer, params) if layer in viewed else
                _write_layer_part(writer, layer, params,
                                  os.path.join(root_text, layer.mount), within))
            raw_size += written
            parts.append(PackedPart(start, writer.size - start, digest, layer.packed_dir / (
                params.part_name(layer.mount) + ".sizes.json")))
        elif members:  # a build step replaced some of its files: pack the rest, keep nothing
            raw_size += _compress_part(writer, params.level, partial(
                _add_files, params=params, root=root_text, names=members))
            parts.append(PackedPart(start, writer.size - start))
    rest = [rel for rel in placed if rel not in claimed]  # still sorted

    def add_rest(tar: _TarWriter) -> None:
        _add_files(tar, params, root_text, rest)
        tar.finish()

    start = writer.size
    kept = _kept_or_compressed(writer, params, add_rest, raw_size, layers[-1].packed_dir
                               if layers and _small(root_text, rest) else None)[1]
    parts.append(PackedPart(start, writer.size - start, measure_path=kept[0],
                            measured_as=kept[1]))
    return PackedSlug(writer.digest.hexdigest(), writer.size, tuple(parts))


# A viewed layer's directories, files and symlinks, kept in its packed/ directory.
LISTING = "tree-listing.v1"


def _viewed_listing(layer: LayerPart) -> list[tuple[str, int, int]]:
    """``scan_tree`` of a layer shown by a view, without the inode numbers (unused for
    a view): kept beside its parts, as its tree never changes once published (the
    cache compares its paths with files.json before a build may show it), so a warm
    build reads one file instead of listing thousands of directories."""
    memo = layer.packed_dir / LISTING
    try:
        kept = json.loads(memo.read_text())
        if isinstance(kept, dict) and kept.get("tree") == str(layer.tree):
            entries = [(rel, kind, 0) for rel, kind in kept["entries"]
                       if isinstance(rel, str) and kind in (DIRECTORY, SYMLINK, FILE, OTHER)]
            if _listing_is_the_trees(layer.tree, entries):
                return entries
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        pass
    scanned = scan_tree(layer.tree)
    if layer.packed_dir.parent.is_dir():
        temporary = memo.with_name(f".{LISTING}.{os.getpid()}.{threading.get_ident()}")
        try:
            layer.packed_dir.mkdir(exist_ok=True)
            temporary.write_text(json.dumps({"tree": str(layer.tree), "entries": [
                [rel, kind] for rel, kind, _ in scanned]}))
            os.replace(temporary, memo)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return scanned


def _listing_is_the_trees(tree: Path, entries: list[tuple[str, int, int]]) -> bool:
    """Whether a kept listing is the layer's: the layer (and so its packed/ directory)
    is shared by every app with the same packages, and any app's hook could write a
    listing there that adds entries to other apps' slugs (a directory named
    ``../../.profile.d``), or leaves some out. Its files and symlinks must be exactly
    those of the layer's files.json (which the cache compares with the tree before a
    build may show it), its paths plain relative ones, listed once; and each of its
    directories a directory of the tree with as many subdirectories as it lists (a
    directory's link count: one left out shows), which costs a stat per directory
    rather than a listing. Where link counts do not count subdirectories (btrfs),
    the tree is listed again."""
    index = read_index(tree.parent / FILE_INDEX)
    if index is None:
        return False
    by_kind: dict[int, set[str]] = {DIRECTORY: set(), SYMLINK: set(), FILE: set(), OTHER: set()}
    for rel, kind, _ in entries:
        by_kind[kind].add(rel)
    directories = by_kind[DIRECTORY]
    if by_kind[OTHER] or sum(map(len, by_kind.values())) != len(entries) \
            or by_kind[FILE] != set(index["files"]) \
            or by_kind[SYMLINK] != set(index["symlinks"]):
        return False
    children = collections.Counter(rel.rpartition("/")[0] for rel in directories)
    for rel, _, _ in entries:
        parent = rel.rpartition("/")[0]
        if parent and parent not in directories:
            return False  # a parent left out (files.json paths are plain: so are theirs)
    for rel in ["", *directories]:
        if rel and any(part in ("", ".", "..") for part in rel.split("/")):
            return False
        try:
            st = os.lstat(os.path.join(tree, rel) if rel else tree)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_nlink != 2 + children[rel]:
            return False
    return True


# How many parts made here a layer keeps (one per set of the app's directories, one
# per state of the app's files), and the largest app part kept.
KEPT_PARTS = 8
KEPT_PART_MAX_RAW = 64 * 1024 * 1024


def _small(root: str, names: list[str]) -> bool:
    """Whether the files ``names`` are small enough to be packed in memory and kept."""
    total = 0
    for rel in names:
        total += os.lstat(os.path.join(root, rel)).st_size
        if total > KEPT_PART_MAX_RAW:
            return False
    return True


def _kept_or_compressed(writer: _Sink, params: _PackParams, fill: Callable[[_TarWriter], object],
                        start: int, memo_dir: Path | None
                        ) -> tuple[int, tuple[Path | None, str]]:
    """Write the part ``fill`` makes (tar records after ``start`` raw bytes); its raw
    size, and where its size measurement is kept with the SHA-256 it is valid for.

    A warm build's first part (every directory entry) and last (the app's files,
    static files included) are usually the bytes the last build made. With
    ``memo_dir`` (a cached layer's packed/ directory) the raw part is made in
    memory and its compressed bytes are kept there under the SHA-256 of the raw
    bytes and everything else that decides them (level, block size, zlib), and
    copied from there when they match: hashing costs a fraction of compressing."""
    if memo_dir is None:
        return _compress_part(writer, params.level, fill, start), (None, "")
    raw = io.BytesIO()
    tar = _TarWriter(raw, start)
    fill(tar)
    data = raw.getvalue()
    key = hashlib.sha256(json.dumps([PART_FORMAT, params.level, GZIP_BLOCK,
                                     zlib.ZLIB_RUNTIME_VERSION]).encode() + data).hexdigest()
    memo = memo_dir / f"part-{key[:32]}.kept"
    measure = memo.with_suffix(".sizes")
    try:
        head, _, kept = memo.read_bytes().partition(b"\n")
        digest = hashlib.sha256(kept).hexdigest()
        if digest == json.loads(head)["sha256"] and _inflates_to(kept, data):
            writer.write(kept)
            memo.touch()  # recently used: kept longest
            return len(data), (measure, digest)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    buffer = io.BytesIO()
    with _ParallelGzipWriter(buffer, params.level, _workers()) as gz:
        gz.write(data)
    compressed = buffer.getvalue()
    writer.write(compressed)
    digest = hashlib.sha256(compressed).hexdigest()
    if memo_dir.parent.is_dir():
        header = json.dumps({"sha256": digest})
        temporary = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            memo_dir.mkdir(exist_ok=True)
            temporary.write_bytes(header.encode() + b"\n" + compressed)
            os.replace(temporary, memo)
            kept_parts = sorted(memo_dir.glob("part-*.kept"),
                                key=lambda path: path.stat().st_mtime_ns)
            for stale in kept_parts[:-KEPT_PARTS]:
                stale.unlink()
                with contextlib.suppress(FileNotFoundError):
                    stale.with_suffix(".sizes").unlink()
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return len(data), (measure, digest)


def _inflates_to(kept: bytes, raw: bytes) -> bool:
    """Whether the kept gzip members inflate to exactly ``raw``, the bytes the memo is
    keyed by. The memo sits in a shared layer's packed/ directory, which any build's
    hook could write: its own SHA-256 header proves only that one writer wrote it, so
    without this one app could plant tar entries in another's slug. Inflating stops
    one byte past ``raw``'s length (no bomb) and costs a fraction of compressing."""
    inflated: list[bytes] = []
    total = 0
    rest = kept
    try:
        while rest:
            member = zlib.decompressobj(wbits=31)
            chunk = member.decompress(rest, len(raw) - total + 1)
            total += len(chunk)
            if total > len(raw) or not member.eof:
                return False
            inflated.append(chunk)
            rest = member.unused_data
    except zlib.error:
        return False
    return total == len(raw) and b"".join(inflated) == raw


def _under(mount: str, rel: str) -> str:
    return f"{mount}/{rel}" if mount else rel


def layer_part_name(layout: str, mount: str, mtime: int | None = None,
                    compresslevel: int = DEFAULT_LEVEL) -> str:
    """The name a layer's kept part has for a slug of ``layout`` with the layer at
    ``mount`` (what ``prepare_layer_part`` looks for)."""
    return _PackParams(LAYOUTS[layout], source_date_epoch(mtime), compresslevel).part_name(mount)


def prepare_layer_part(layer: LayerPart, layout: str = "herokuish", mtime: int | None = None,
                       compresslevel: int = DEFAULT_LEVEL) -> int:
    """Compress and keep ``layer``'s part ahead of packing (a build does it while it
    installs or collects static files, so the pack stage only copies it); its
    compressed size (what it adds to the slug, checked against the size limit early)."""
    params = _PackParams(LAYOUTS[layout], source_date_epoch(mtime), compresslevel)
    measure_path = layer.packed_dir / (params.part_name(layer.mount) + ".sizes.json")
    kept = _cached_part(layer, params)
    if kept is not None:
        # Measured from the file only when no measurement is kept for its digest.
        measure_part_ahead(kept.path, kept.digest, layout, measure_path)
        return kept.size
    buffer = io.BytesIO()
    digest = _write_layer_part(buffer, layer, params)[1]
    data = buffer.getvalue()
    # Measured now, beside the build, rather than in the slug_size stage after packing.
    measure_part_ahead(data, digest, layout, measure_path)
    return len(data)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _compress_part(target: _Sink, level: int, fill: Callable[[_TarWriter], object],
                   start: int = 0) -> int:
    """Gzip what ``fill`` writes to a tar writer as members of their own; the raw size.

    ``start`` is how many tar bytes earlier parts held (the end padding counts them).
    """
    with _ParallelGzipWriter(target, level, _workers()) as gz:
        tar = _TarWriter(gz, start)
        fill(tar)
    return tar.written - start


def _add_directories(tar: _TarWriter, params: _PackParams, directories: list[str]) -> None:
    parts = [p for p in params.base.split("/") if p]
    for depth in range(len(parts)):
        tar.add(_dir_info("/".join(parts[: depth + 1]) + "/", params.epoch))
    for rel in directories:
        tar.add(_dir_info(f"{params.base}/{rel}/", params.epoch))


def _add_files(tar: _TarWriter, params: _PackParams, root: str, names: list[str],
               mount: str = "") -> None:
    """Regular files and symlinks ``names`` (relative to ``root``), in the order given,
    named as if ``root`` sat at ``mount`` in the slug."""
    for header, path, size in _entries(params, root, names, mount):
        tar.add_encoded(header, path, size)


class _Entry(NamedTuple):
    """A tar entry to write: its header, and the path and size of a file's body."""

    header: bytes
    path: str | None  # None: no body (a symlink)
    size: int


def _entries(params: _PackParams, root: str, names: list[str], mount: str = ""
             ) -> list[_Entry]:
    """The tar header of each regular file and symlink of ``names`` (as ``_add_files``
    writes them), with the path and size of a file's body (None, 0: a symlink);
    other kinds of entry are left out."""
    prefix = f"{params.base}/{mount}/" if mount else f"{params.base}/"
    entries: list[_Entry] = []
    for rel in names:
        path = os.path.join(root, rel)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            info = _info(prefix + rel, params.epoch, tarfile.SYMTYPE, 0o777)
            info.linkname = os.readlink(path)
            entries.append(_Entry(tar_header(info), None, 0))
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            info = _info(prefix + rel, params.epoch, tarfile.REGTYPE, mode)
            info.size = st.st_size
            entries.append(_Entry(tar_header(info), path, st.st_size))
    return entries


def _layer_files(layer: LayerPart) -> list[tuple[str, int, int]]:
    """The layer's files and symlinks, sorted as ``scan_tree`` sorts; for copies, as
    the build placed them (the cached layer may be gone by now)."""
    if layer.copies is None:
        return [item for item in scan_tree(layer.tree) if item[1] in (SYMLINK, FILE)]
    items = [(rel, FILE, 0) for rel in layer.copies]
    items += [(rel, SYMLINK, 0) for rel in layer.symlinks]
    items.sort(key=lambda item: item[0].split("/"))
    return items


def _intact_members(root: str, placed: dict[str, tuple[int, int]], layer: LayerPart,
                    claimed: set[str]) -> tuple[list[str], bool]:
    """The layer's files and symlinks still in place in ``root`` (as paths relative to
    it), and whether that is all of them.

    ``placed`` maps the tree's files and symlinks to their kind and inode. A
    file is in place when it is the layer's own inode (a hard link), or has the
    same bytes and execute bits (restores copy where links are impossible); a
    symlink when it has the same target. Raises OSError if the layer is gone.
    """
    members, complete = [], True
    tree = str(layer.tree)
    same_device = layer.copies is None and os.stat(tree).st_dev == os.stat(root).st_dev
    for rel, kind, inode in _layer_files(layer):
        name = f"{layer.mount}/{rel}" if layer.mount else rel
        found = placed.get(name)
        if found is None or name in claimed or found[0] != kind:
            complete = False
            continue
        source, target = os.path.join(tree, rel), os.path.join(root, name)
        if kind == SYMLINK:
            wanted = layer.symlinks[rel] if layer.copies is not None else os.readlink(source)
            intact = wanted == os.readlink(target)
        elif layer.copies is not None:
            st = os.lstat(target)
            intact = layer.copies.get(rel) == (st.st_ino, st.st_size, st.st_mtime_ns,
                                               st.st_ctime_ns)
        elif same_device and found[1] == inode:
            intact = True
        else:
            intact = _same_file_content(source, target)
        if intact:
            members.append(name)
        else:
            complete = False
    return members, complete


def _same_file_content(source: str, target: str) -> bool:
    """Same size, execute bits and bytes (what the slug would hold for either)."""
    here, there = os.lstat(source), os.lstat(target)
    if here.st_size != there.st_size or (here.st_mode & 0o111 != 0) != (there.st_mode & 0o111 != 0):
        return False
    return filecmp.cmp(source, target, shallow=False)


def _write_layer_part(writer: _Sink, layer: LayerPart, params: _PackParams,
                      placed_in: str | None = None, names: list[str] | None = None
                      ) -> tuple[int, str]:
    """Write the layer's part (kept copy, else made now and kept); its raw tar size
    and the sha256 of its compressed bytes.

    A part made now reads the layer's files from the tree being packed when
    ``placed_in`` (that tree's directory at the mount) and ``names`` (all the
    layer's files, in order, found intact there) are given, else from the
    layer: the same bytes either way, and the slug never depends on the
    layer still being there.
    """
    kept = _cached_part(layer, params)
    copied = _copy_kept_part(writer, kept, layer) if kept is not None else None
    if kept is not None and copied is not None:
        return kept.raw_size, copied
    # Kept through a handle on the layer's directory, not its path: a layer
    # discarded meanwhile (renamed away to be deleted, perhaps replaced by a
    # fresh one) takes this part with it instead of receiving it.
    try:
        layer_fd = os.open(layer.packed_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        layer_fd = None
    try:
        buffer = io.BytesIO()
        if names is None or placed_in is None:
            names, placed_in = [rel for rel, _, _ in _layer_files(layer)], str(layer.tree)
        with _donor_of(layer, params) as donor:
            raw_size, units = _compress_units(buffer, params, placed_in, names, layer.mount,
                                              donor)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        if layer_fd is not None and (layer.unchanged is None or layer.unchanged()):
            _keep_part(layer_fd, layer.packed_dir.name, params.part_name(layer.mount),
                       data, raw_size, digest, units)
    finally:
        if layer_fd is not None:
            os.close(layer_fd)
    writer.write(data)
    return raw_size, digest


# A layer part is cut into units (PART_FORMAT 2), each compressed as a run of gzip
# members of its own: one unit per top-level entry of site-packages (a package's
# directory, its dist-info, a module), one per run of the layer's other files. A
# unit's compressed bytes then depend on its files alone (and the level and block
# size), never on what precedes it, so a layer built from another (incremental.py)
# takes the donor's members for every unit whose bytes are the same.
_SITE_PACKAGES_ENTRY = re.compile(r"lib/[^/]+/site-packages/([^/]+)")


def layer_units(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The units of a layer part holding ``names`` (relative to the layer's tree, in
    packing order): (label, names) for each run of names of one site-packages entry
    (``site-packages/<entry>``) or of none (``rest/<n>``)."""
    units: list[tuple[str, list[str]]] = []
    current, rest = "", 0
    for rel in names:
        found = _SITE_PACKAGES_ENTRY.match(rel)
        label = f"site-packages/{found.group(1)}" if found else "rest"
        if label != current or not units:
            current = label
            if not found:
                label, rest = f"rest/{rest}", rest + 1
            units.append((label, []))
        units[-1][1].append(rel)
    return units


class _Digesting:
    """Hashes what is written and hands it on to ``target`` (None: drops it)."""

    def __init__(self, target: _Sink | None = None) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)


def _compress_units(target: _Sink, params: _PackParams, root: str, names: list[str],
                    mount: str, donor: _Donor | None) -> tuple[int, list[list[str | int]]]:
    """Gzip the layer's files ``names`` (relative to ``root``, named at ``mount``) unit
    by unit, each unit's members taken from ``donor`` when it has them for the same
    bytes; the raw tar size and, per unit, [label, raw size, raw SHA-256, compressed
    length] (what the part's record keeps for a layer built from this one)."""
    made: list[tuple[str, int, str]] = []

    def prepared(label: str, unit_names: list[str]) -> tuple[list[_Entry], _Reused | None]:
        entries = _entries(params, root, unit_names, mount)
        return entries, donor.members(label, entries) if donor is not None else None

    units = iter(layer_units(names))
    # The next units' headers (and donor checks: hashing, inflating) made on every core
    # while this one is written; a few ahead, so the donor's members are not all held.
    with ThreadPoolExecutor(max_workers=_workers()) as ahead_pool, \
            _ParallelGzipWriter(target, params.level, _workers()) as gz:
        ahead: collections.deque[tuple[str, Future[tuple[list[_Entry], _Reused | None]]]] = \
            collections.deque()
        while True:
            while len(ahead) < 2 * _workers():
                unit = next(units, None)
                if unit is None:
                    break
                ahead.append((unit[0], ahead_pool.submit(prepared, *unit)))
            if not ahead:
                break
            label, future = ahead.popleft()
            entries, reused = future.result()
            if reused is not None:
                members, raw_size, raw_sha256 = reused
                gz.add_unit(members)
            else:
                digesting = _Digesting(gz)
                tar = _TarWriter(digesting)
                for entry in entries:
                    tar.add_encoded(*entry)
                gz.end_unit()
                raw_size, raw_sha256 = tar.written, digesting.sha256.hexdigest()
            made.append((label, raw_size, raw_sha256))
    lengths = [end - start for start, end in zip([0, *gz.unit_ends], gz.unit_ends)]
    return sum(raw for _, raw, _ in made), [
        [label, raw, sha, length] for (label, raw, sha), length in zip(made, lengths)]


# In a layer's packed/ directory: the layer it was built from (incremental.py).
DONOR = "donor"
_LAYER_NAME = re.compile(r"[0-9a-f]{24}")


def record_donor(packed_dir: Path, donor_dir: Path, donor_key: str) -> None:
    """Name, in a new layer's ``packed_dir`` (before it is published), the layer it was
    built from: packing the new layer then takes the donor's compressed units whose
    bytes are the same instead of compressing them again."""
    packed_dir.mkdir(exist_ok=True)
    (packed_dir / DONOR).write_text(json.dumps({"layer": donor_dir.name, "key": donor_key}))


class _Reused(NamedTuple):
    """A donor's checked members for a unit, and the unit's raw size and SHA-256."""

    members: bytes
    raw_size: int
    raw_sha256: str


@dataclass(frozen=True)
class _DonorUnit:
    offset: int
    length: int
    raw_size: int
    raw_sha256: str


class _Donor:
    """The kept part of the layer a layer was built from, by unit. Its record and bytes
    sit in a shared layer's packed/ directory that any build's hook could write, so
    a unit's members are used only once they inflate, member by member, to exactly the
    bytes the unit would be compressed from (``_clean_members``)."""

    def __init__(self, fd: int, units: dict[str, _DonorUnit], level: int) -> None:
        self.fd = fd
        self.units = units
        self.level = level

    def members(self, label: str, entries: list[_Entry]) -> _Reused | None:
        """The donor's members for the unit ``label`` of these tar entries, with its raw
        size and SHA-256, if they are the ones compressing it would give; else None."""
        unit = self.units.get(label)
        raw_size = sum(len(header) + size + -size % tarfile.BLOCKSIZE
                       for header, _, size in entries)
        if unit is None or unit.raw_size != raw_size:
            return None
        digesting = _Digesting()
        tar = _TarWriter(digesting)
        for entry in entries:
            tar.add_encoded(*entry)
        raw_sha256 = digesting.sha256.hexdigest()
        if raw_sha256 != unit.raw_sha256:
            return None
        try:
            members = os.pread(self.fd, unit.length, unit.offset)
        except OSError:
            return None
        if not _clean_members(members, raw_size, raw_sha256, self.level):
            return None
        return _Reused(members, raw_size, raw_sha256)


@contextlib.contextmanager
def _donor_of(layer: LayerPart, params: _PackParams) -> Iterator[_Donor | None]:
    """The donor of ``layer`` (its packed/donor names it: a layer of the same cache
    directory with the recorded key) with its kept part for these parameters and the
    units its record lists; None when there is none or any of it is unreadable."""
    fd = None
    try:
        record = json.loads((layer.packed_dir / DONOR).read_text())
        name, key = record["layer"], record["key"]
        if not isinstance(name, str) or not _LAYER_NAME.fullmatch(name):
            raise ValueError(name)
        donor_dir = layer.packed_dir.parent.parent / name
        if json.loads((donor_dir / "manifest.json").read_text())["key"] != key:
            raise ValueError("another layer under the donor's name")
        base = donor_dir / layer.packed_dir.name / params.part_name(layer.mount)
        kept = json.loads(base.with_suffix(".json").read_text())
        units, offset = {}, 0
        for label, raw_size, raw_sha256, length in kept["units"]:
            if not (isinstance(label, str) and isinstance(raw_sha256, str)
                    and all(isinstance(n, int) and n >= 0 for n in (raw_size, length))):
                raise ValueError(label)
            units[label] = _DonorUnit(offset, length, raw_size, raw_sha256)
            offset += length
        fd = os.open(base.with_suffix(".gz"), os.O_RDONLY | os.O_NOFOLLOW)
        if os.fstat(fd).st_size != offset:  # the units cover the part exactly: no unit
            raise ValueError("the donor's units are not its part")  # reads past it
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        if fd is not None:
            os.close(fd)
        yield None
        return
    try:
        yield _Donor(fd, units, params.level)
    finally:
        os.close(fd)


@functools.cache
def _member_header(level: int) -> bytes:
    """The first bytes of every gzip member the pack writes at ``level``."""
    return gzip.compress(b"", level, mtime=0)[:10]


def _clean_members(data: bytes, raw_size: int, raw_sha256: str, level: int) -> bool:
    """Whether ``data`` is gzip members cut as the pack cuts a unit of ``raw_size`` bytes
    (one per GZIP_BLOCK, the last shorter), each with the pack's header, inflating to
    bytes with ``raw_sha256``. Inflated a slice at a time, each member at most one byte
    past its block (no bomb); costs a fraction of compressing."""
    view = memoryview(data)
    digest = hashlib.sha256()
    header = _member_header(level)
    position = total = 0
    try:
        while total < raw_size:
            if view[position:position + len(header)] != header:
                return False
            want = min(GZIP_BLOCK, raw_size - total)
            member = zlib.decompressobj(wbits=31)
            got = 0
            while not member.eof:
                piece = view[position:position + _READ_CHUNK]
                if not piece:
                    return False  # ends inside a member
                out = member.decompress(piece, want - got + 1)
                got += len(out)
                if got > want:
                    return False
                digest.update(out)
                position += len(piece) - len(member.unused_data)
            if got != want:
                return False
            total += got
    except zlib.error:
        return False
    return position == len(data) and digest.hexdigest() == raw_sha256


@dataclass(frozen=True)
class _KeptPart:
    """A layer's kept part, checked: its file, the stat it had when its bytes matched
    the recorded ``digest``, its compressed ``size`` and the ``raw_size`` of its tar."""

    path: Path
    key: StatKey
    digest: str
    size: int
    raw_size: int


def _cached_part(layer: LayerPart, params: _PackParams) -> _KeptPart | None:
    """The layer's kept part if its bytes match the checksum recorded with them, else
    None. Hashed once per process while the file is unchanged (``cache.DIGESTS``), in
    chunks: a build checks it ahead of packing, then streams it into the slug, and
    never holds the part (hundreds of MB for a large stack) in memory."""
    base = layer.packed_dir / params.part_name(layer.mount)
    path = base.with_suffix(".gz")
    try:
        record = json.loads(base.with_suffix(".json").read_text())
        with open(path, "rb", buffering=0) as handle:
            before = os.fstat(handle.fileno())
            digest = DIGESTS.known(before)
            if digest is None:
                clock = DIGESTS.clock(before.st_dev)
                digest = _stream_sha256(handle)
                after = os.fstat(handle.fileno())
                if stat_key(after) != stat_key(before):
                    return None  # written while read: made again instead
                DIGESTS.remember(after, digest, clock)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or digest != record.get("sha256"):
        return None
    raw_size = record.get("raw_size")
    if not isinstance(raw_size, int):
        return None
    return _KeptPart(path, stat_key(before), digest, before.st_size, raw_size)


def _stream_sha256(handle: io.FileIO) -> str:
    """SHA-256 of the rest of ``handle``, read in chunks into one buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    while True:
        count = handle.readinto(view)
        if not count:
            return digest.hexdigest()
        digest.update(view[:count])


def _copy_kept_part(writer: _Sink, kept: _KeptPart, layer: LayerPart) -> str | None:
    """Stream a checked kept part into the slug; its digest, or None (nothing written)
    when the file is gone or changed since it was checked (the part is made again).

    The part was checked when its stat was ``kept.key``: a file whose stat is the
    same before and after the copy still holds those bytes (``cache.Digests`` gives
    the ctime argument). A file written in place during the copy (never by
    slugbuild, which replaces parts whole) fails the build rather than ship bytes
    nobody checked."""
    try:
        handle = open(kept.path, "rb", buffering=0)
    except OSError:
        return None
    with handle:
        try:
            if stat_key(os.fstat(handle.fileno())) != kept.key:
                return None
            shutil.copyfileobj(handle, writer, _READ_CHUNK)
            steady = stat_key(os.fstat(handle.fileno())) == kept.key
        except OutputWriteError:
            raise
        except OSError:  # reading the part
            steady = False
    if not steady:
        raise errors.CACHE_LAYER_GONE.error(layer=layer.tree.parent.name)
    return kept.digest


def _keep_part(layer_fd: int, directory: str, name: str, data: bytes, raw_size: int,
               digest: str, units: list[list[str | int]]) -> None:
    """Store a part in the layer's ``directory`` with its units (for a layer built from
    this one, ``_Donor``); best effort (the cache may be read-only)."""
    record = json.dumps({"sha256": digest, "raw_size": raw_size, "units": units})
    suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, dir_fd=layer_fd)
        for final, content in ((f"{directory}/{name}.gz", data),
                               (f"{directory}/{name}.json", record.encode())):
            try:
                handle = os.open(final + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644,
                                 dir_fd=layer_fd)
                with open(handle, "wb") as stream:
                    stream.write(content)
                os.replace(final + suffix, final, src_dir_fd=layer_fd, dst_dir_fd=layer_fd)
            finally:  # a failed write (full disk) leaves no temporary file behind
                with contextlib.suppress(OSError):
                    os.unlink(final + suffix, dir_fd=layer_fd)
    except OSError:
        pass


_USTAR_MAGIC = b"ustar\x0000"


def tar_header(info: tarfile.TarInfo) -> bytes:
    """The pax-format header tarfile would write for ``info``, made faster.

    Entries whose name and link target are ASCII and short, with sizes that fit
    (all but a few in a slug), need no pax records: their header is one plain
    ustar block, written here directly (tarfile's general path cost ~1 s per
    10,000 entries). Anything else goes through tarfile itself. The bytes are
    the same either way (tests/test_pack.py).
    """
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") \
        else info.name
    size = info.size if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    if not (name.isascii() and info.linkname.isascii() and len(name) <= 100
            and len(info.linkname) <= 100 and size < 8 ** 11 and 0 <= info.mtime < 8 ** 11
            and not info.uname and not info.gname and 0 <= info.uid < 8 ** 7
            and 0 <= info.gid < 8 ** 7):
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:len(name)] = name.encode("ascii")
    block[100:108] = b"%07o\0" % (info.mode & 0o7777)
    block[108:116] = b"%07o\0" % info.uid
    block[116:124] = b"%07o\0" % info.gid
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % int(info.mtime)
    block[148:156] = b"        "
    block[156:157] = info.type
    block[157:157 + len(info.linkname)] = info.linkname.encode("ascii")
    block[257:265] = _USTAR_MAGIC
    checksum = sum(block)
    block[148:155] = b"%06o\0" % checksum
    return bytes(block)


class _TarWriter:
    """POSIX (pax) tar records written straight to a stream, file bodies in big reads."""

    def __init__(self, stream: _Sink, written: int = 0) -> None:
        self.stream = stream
        self.written = written

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.written += len(data)

    def add(self, info: tarfile.TarInfo, path: str | None = None) -> None:
        self.add_encoded(tar_header(info), path, info.size)

    def add_encoded(self, header: bytes, path: str | None, size: int) -> None:
        """An entry whose header is made already: with ``path``, a file of ``size`` bytes."""
        self._write(header)
        if path is None:
            return
        remaining = size
        with open(path, "rb", buffering=0) as handle:
            while remaining > 0:
                try:
                    chunk = handle.read(min(remaining, _READ_CHUNK))
                except OSError as exc:  # EIO...: has no file name, give it one
                    raise _unreadable(path, exc) from exc
                if not chunk:
                    raise errors.PACK_SOURCE_UNREADABLE.error(variant="shrank", path=path)
                self._write(chunk)
                remaining -= len(chunk)
        padding = -size % tarfile.BLOCKSIZE
        if padding:
            self._write(b"\0" * padding)

    def finish(self) -> None:
        """End-of-archive blocks, padded to a whole record as tar(1) writes it."""
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        padding = -self.written % tarfile.RECORDSIZE
        if padding:
            self._write(b"\0" * padding)


def _dir_info(name: str, epoch: int) -> tarfile.TarInfo:
    return _info(name, epoch, tarfile.DIRTYPE, 0o755)


def _info(name: str, epoch: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
