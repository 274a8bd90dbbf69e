"""Pack stage: a deterministic gzip tarball of the build directory.

Entries are sorted by path, owned by 0:0 with empty user/group names, their
modes normalised (0755 for directories and executables, 0644 otherwise) and
their mtimes set to SOURCE_DATE_EPOCH (or DEFAULT_EPOCH). Hard links are
stored as regular files so how the build laid files out never shows.

Compression runs on every core: the tar stream is cut into fixed-size blocks,
each compressed as its own gzip member (no name, no time in its header) and
written in order. A multi-member file is plain gzip to every reader, and the
output depends only on the tree, the block size and the level: same tree,
same bytes, whatever the number of cores.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import os
import stat
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# 1980-01-01T00:00:00Z: the oldest time every archive format can represent.
DEFAULT_EPOCH = 315532800
# Uncompressed bytes per gzip member; part of the format (changing it changes bytes).
GZIP_BLOCK = 4 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
LAYOUTS = {"herokuish": ".", "heroku": "./app"}


@dataclass(frozen=True)
class PackedSlug:
    sha256: str
    size: int


def source_date_epoch(explicit: int | None = None) -> int:
    if explicit is not None:
        return explicit
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else DEFAULT_EPOCH


class _ParallelGzipWriter(io.RawIOBase):
    """A write-only stream that gzips fixed-size blocks concurrently, in order."""

    def __init__(self, target: BinaryIO, level: int, workers: int) -> None:
        self.target = target
        self.level = level
        self.buffer = bytearray()
        self.pool = ThreadPoolExecutor(max_workers=workers)  # zlib releases the GIL
        self.pending: collections.deque[Future] = collections.deque()
        self.max_pending = workers * 2

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.buffer += data
        while len(self.buffer) >= GZIP_BLOCK:
            self._submit(bytes(self.buffer[:GZIP_BLOCK]))
            del self.buffer[:GZIP_BLOCK]
        return len(data)

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(gzip.compress, block, self.level, mtime=0))
        while len(self.pending) > self.max_pending:
            self.target.write(self.pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.buffer or not self.pending:
                self._submit(bytes(self.buffer))
                self.buffer.clear()
            while self.pending:
                self.target.write(self.pending.popleft().result())
        finally:
            self.pool.shutdown()
            super().close()


class _HashingWriter(io.RawIOBase):
    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def tree_entries(root: Path) -> list[str]:
    """Every path below root, relative, sorted (directories before their contents)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            entries.append(os.path.normpath(os.path.join(rel_dir, name)))
    return sorted(entries, key=lambda p: p.split(os.sep))


def pack_tree(root: Path, target: BinaryIO, layout: str = "herokuish",
              mtime: int | None = None, compresslevel: int = 6) -> PackedSlug:
    """Write ``root`` as a slug tarball to ``target``; return its sha256 and size."""
    base = LAYOUTS[layout]
    epoch = source_date_epoch(mtime)
    writer = _HashingWriter(target)
    workers = max(1, min(8, os.cpu_count() or 1))
    with _ParallelGzipWriter(writer, compresslevel, workers) as gz:
        tar = _TarWriter(gz)
        parts = [p for p in base.split("/") if p]
        for depth in range(len(parts)):
            tar.add(_dir_info("/".join(parts[: depth + 1]) + "/", epoch))
        root_text = str(root)
        for rel in tree_entries(root):
            path = os.path.join(root_text, rel)
            name = f"{base}/{rel}"
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                tar.add(_dir_info(name + "/", epoch))
            elif stat.S_ISLNK(st.st_mode):
                info = _info(name, epoch, tarfile.SYMTYPE, 0o777)
                info.linkname = os.readlink(path)
                tar.add(info)
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                info = _info(name, epoch, tarfile.REGTYPE, mode)
                info.size = st.st_size
                tar.add(info, path)
        tar.finish()
    return PackedSlug(writer.digest.hexdigest(), writer.size)


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

    def __init__(self, stream) -> None:
        self.stream = stream
        self.written = 0

    def _write(self, data) -> None:
        self.stream.write(data)
        self.written += len(data)

    def add(self, info: tarfile.TarInfo, path: str | None = None) -> None:
        self._write(tar_header(info))
        if path is None:
            return
        remaining = info.size
        with open(path, "rb", buffering=0) as handle:
            while remaining > 0:
                chunk = handle.read(min(remaining, _READ_CHUNK))
                if not chunk:
                    raise OSError(f"{path} shrank while it was being packed")
                self._write(chunk)
                remaining -= len(chunk)
        padding = -info.size % tarfile.BLOCKSIZE
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
