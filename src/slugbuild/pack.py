"""Pack stage: a deterministic gzip tarball of the build directory.

Entries are sorted by path, owned by 0:0 with empty user/group names, their
modes normalised (0755 for directories and executables, 0644 otherwise) and
their mtimes set to SOURCE_DATE_EPOCH (or DEFAULT_EPOCH). Hard links are
stored as regular files so how the build laid files out never shows. The gzip
header carries no name and no time. Same tree, same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# 1980-01-01T00:00:00Z: the oldest time every archive format can represent.
DEFAULT_EPOCH = 315532800
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
    with gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=0,
                       compresslevel=compresslevel) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            parts = [p for p in base.split("/") if p]
            for depth in range(len(parts)):
                tar.addfile(_dir_info("/".join(parts[: depth + 1]) + "/", epoch))
            for rel in tree_entries(root):
                path = root / rel
                name = f"{base}/{Path(rel).as_posix()}"
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    tar.addfile(_dir_info(name + "/", epoch))
                elif stat.S_ISLNK(st.st_mode):
                    info = _info(name, epoch, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    info = _info(name, epoch, tarfile.REGTYPE, mode)
                    info.size = st.st_size
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
    return PackedSlug(writer.digest.hexdigest(), writer.size)


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
