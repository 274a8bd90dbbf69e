"""The tar writer: its fast headers equal tarfile's, and packing is deterministic."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from slugbuild.pack import _dir_info, _info, pack_tree, tar_header


@pytest.mark.parametrize("name", [
    "./a", "./.heroku/python/lib/python3.12/site-packages/x.py", "./" + "n" * 98,
    "./" + "n" * 99, "./" + "l" * 150, "./ünïcødé.txt", "./new\nline", "./dir",
])
@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE])
def test_fast_headers_are_tarfiles_headers(name, kind):
    if kind == tarfile.DIRTYPE:
        info = _dir_info(name, 315532800)
    else:
        info = _info(name, 1700000000, kind, 0o755 if kind == tarfile.REGTYPE else 0o777)
    if kind == tarfile.REGTYPE:
        info.size = 123456789
    if kind == tarfile.SYMTYPE:
        info.linkname = "../" + "t" * (60 if "l" not in name else 120)
    header = tar_header(info)
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if sys.version_info >= (3, 12):  # older tarfiles also fill devmajor/devminor
        assert header == expected
    parsed = tarfile.TarInfo.frombuf(header[:512], "utf-8", "surrogateescape")
    if len(header) == 512:  # a plain ustar block: every field must read back
        for field in ("mode", "uid", "gid", "size", "mtime", "type", "linkname"):
            assert getattr(parsed, field) == getattr(info, field), field
        assert parsed.name == info.name.rstrip("/")


def test_pack_is_deterministic_and_readable(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("hello\n")
    (root / ("long-" * 30 + ".txt")).write_bytes(b"x" * 5_000_000)
    (root / "link").symlink_to("sub/file.txt")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    first, second = io.BytesIO(), io.BytesIO()
    a = pack_tree(Path(root), first, mtime=1)
    b = pack_tree(Path(root), second, mtime=1)
    assert a == b and first.getvalue() == second.getvalue()
    first.seek(0)
    with tarfile.open(fileobj=first) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("./sub/file.txt").read() == b"hello\n"
        assert members["./link"].linkname == "sub/file.txt"
        assert members["./run.sh"].mode == 0o755
        assert members["./" + "long-" * 30 + ".txt"].size == 5_000_000
