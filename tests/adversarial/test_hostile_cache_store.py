"""A cache store that may be hostile: a registry or an OCI layout directory (`cache
import DIR`) serving entries whose digests all match (the digest proves integrity,
not good intent). An entry is refused (ArtifactInvalid: the layer is then built
here) when it would make this machine write outside the layer, poison every later
build using it, or crash; a crafted layout directory is one clear error."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from slugbuild import layer_artifact
from slugbuild.cache import Cache
from slugbuild.dependencies import read_host_paths
from slugbuild.layer_artifact import (
    ArtifactInvalid,
    Fetched,
    LayoutStore,
    materialise,
)

from ..helpers import cli, limited
from .fakes import fetched, layer_names


@pytest.mark.parametrize("target", [
    "/tmp", "../../../../../../../../tmp", "../../..", "../../../../lib",
])
def test_a_link_leaving_the_layer_is_refused(tmp_path: Path, target: str) -> None:
    # A runtime whose site-packages is a link out: the dependency install, and every
    # build restoring it, would write through it; the pack stage then refused every
    # build using the entry (a poisoned cache).
    cache = Cache(tmp_path / "cache")
    entry = fetched([("bin/python3", None, b"#!/bin/sh\n"),
                     ("lib/python3.12/site-packages", target, b"")],
                    ["bin", "lib", "lib/python3.12"])
    with pytest.raises(ArtifactInvalid, match="leaves the layer"):
        materialise(cache, entry)
    assert layer_names(tmp_path / "cache") == []


def test_links_inside_the_layer_are_kept(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    entry = fetched([("bin/python3.12", None, b"#!/bin/sh\n"), ("bin/python3", "python3.12", b""),
                     ("lib/libpython.so", "../bin/python3.12", b"")], ["bin", "lib"])
    layer = materialise(cache, entry)
    assert os.readlink(layer.tree / "bin" / "python3") == "python3.12"


@pytest.mark.parametrize("host_paths", [
    [["/etc/passwd", "/build"]], [["../../../../etc/passwd", "/build"]],
    [["bin/python3", 7]], [["bin/nothing-there", "/build"]], {"bin/python3": "/build"},
    [["bin/python3"]],
])
def test_host_paths_naming_other_files_are_refused(tmp_path: Path, host_paths: Any) -> None:
    # host-paths.json lists the layer's own files that name the machine that made it;
    # one naming /etc/passwd made every build using the layer end in a traceback.
    cache = Cache(tmp_path / "cache")
    entry = fetched([("bin/python3", None, b"#!/bin/sh\n")], ["bin"], host_paths=host_paths)
    with pytest.raises(ArtifactInvalid, match="host paths"):
        materialise(cache, entry)
    assert layer_names(tmp_path / "cache") == []


def test_a_damaged_local_host_paths_file_is_ignored(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    layer = materialise(cache, fetched([("bin/python3", None, b"#!/bin/sh\n")], ["bin"],
                                       host_paths=[["bin/python3", "/build"]]))
    assert read_host_paths(layer) == [(layer.tree / "bin" / "python3", "/build")]
    (layer.path / "host-paths.json").write_text(json.dumps([["/etc/passwd", "/b"]]))
    assert read_host_paths(layer) == []


# --- a crafted OCI layout directory (`cache import DIR`) ----------------------------------

def layout(root: Path, manifests: list[Any]) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                 "manifests": manifests}))
    return root


@pytest.mark.parametrize("manifests", [
    [{"annotations": ["not", "a", "mapping"]}],
    [{"annotations": {"org.opencontainers.image.ref.name": "x"}, "digest": 5, "size": "x"}],
    ["just a string", 7, None],
])
def test_a_malformed_layout_index_is_one_clear_error(tmp_path: Path, manifests: Any) -> None:
    # Entries not in the layout spec's shape are not tags; one that is but names no
    # blob properly is refused (it crashed with AttributeError: annotations a list).
    store = LayoutStore(layout(tmp_path / "store", manifests))
    assert store.tags() in ([], ["x"])
    if store.tags():
        with pytest.raises(ArtifactInvalid, match="malformed"):
            store.get_manifest("x")
    else:
        assert store.get_manifest("x") is None


def test_a_fifo_blob_does_not_hang_the_import(tmp_path: Path) -> None:
    root = layout(tmp_path / "store", [])
    empty = hashlib.sha256(b"").hexdigest()
    os.mkfifo(root / "blobs" / "sha256" / empty)
    store = LayoutStore(root)
    with pytest.raises(ArtifactInvalid, match="not a regular file"):
        store.get_blob(f"sha256:{empty}", 0)


def test_cache_import_of_a_deeply_nested_index_is_one_clear_error(tmp_path: Path) -> None:
    root = layout(tmp_path / "store", [])
    (root / "index.json").write_text("[" * 100000 + "]" * 100000)
    result = limited(cli("cache", "import", root, "--cache-dir", tmp_path / "cache"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal-error" not in result.stderr
    assert "Error [" in result.stderr


# --- a gzip bomb whose digests all match --------------------------------------------------

ZEROS = 64 << 20


def zero_bomb() -> Fetched:
    """A 64 MiB zero-filled file: a part of 64 KiB whose index is right about it."""
    return fetched([("lib/zeros", None, bytes(ZEROS)), ("bin/python3", None, b"#!/bin/sh\n"),
                    ("bin/python", "python3", b"")], ["bin", "lib"])


def test_a_large_part_is_unpacked_in_bounded_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Above the in-memory limit (lowered here from 512 MiB to 1 MiB) a part is unpacked
    # file by file: memory does not grow with what the index declares.
    entry = zero_bomb()
    monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 1 << 20)
    tracemalloc.start()
    try:
        layer = materialise(Cache(tmp_path / "cache"), entry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held to unpack {ZEROS >> 20} MiB"
    assert (layer.tree / "lib" / "zeros").stat().st_size == ZEROS
    assert os.readlink(layer.tree / "bin" / "python") == "python3"
    assert (layer.tree / "bin" / "python3").read_bytes() == b"#!/bin/sh\n"


def test_both_ways_of_unpacking_make_the_same_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def entry() -> Fetched:
        return fetched([("bin/python3.12", None, b"#!/bin/sh\n"),
                        ("bin/python3", "python3.12", b""),
                        ("lib/a.py", None, b"x = 1\n" * 1000)], ["bin", "lib", "share"])

    in_memory = materialise(Cache(tmp_path / "one"), entry())
    monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    streamed = materialise(Cache(tmp_path / "two"), entry())
    for layer in (in_memory, streamed):
        assert sorted(str(p.relative_to(layer.tree)) for p in layer.tree.rglob("*")) == [
            "bin", "bin/python3", "bin/python3.12", "lib", "lib/a.py", "share"]
    assert (in_memory.path / "files.json").read_text().count("a.py") == 1
    assert [json.loads((layer.packed_parts / "p.json").read_text())["raw_size"]
            for layer in (in_memory, streamed)] == [
        json.loads((in_memory.packed_parts / "p.json").read_text())["raw_size"]] * 2


@pytest.mark.parametrize("lowered", [False, True])
def test_a_part_declaring_more_than_the_unpacked_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lowered: bool) -> None:
    monkeypatch.setenv("SLUGBUILD_MAX_UNPACKED_SIZE", "16M")
    if lowered:
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    with pytest.raises(ArtifactInvalid, match="SLUGBUILD_MAX_UNPACKED_SIZE"):
        materialise(Cache(tmp_path / "cache"), zero_bomb())
    assert layer_names(tmp_path / "cache") == []
