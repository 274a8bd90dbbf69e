"""A cache store that may be hostile: a registry or an OCI layout directory (`cache
import DIR`) serving entries whose digests all match (the digest proves integrity,
not good intent). An entry is refused (ArtifactInvalid: the layer is then built
here) when it would make this machine write outside the layer, poison every later
build using it, or crash; a crafted layout directory is one clear error."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slugbuild.cache import Cache
from slugbuild.dependencies import read_host_paths
from slugbuild.layer_artifact import (
    ARTIFACT_FORMAT,
    ArtifactInvalid,
    Fetched,
    LayoutStore,
    materialise,
)

from ..helpers import cli, limited

KEY = "ab" * 32
NAME = f"python-3.12.0-{KEY[:12]}"
SPACE = "sb1-test"


def part_of(entries: list[tuple[str, str | None, bytes]]) -> bytes:
    """A gzipped tar of (name below ./, link target or None, content)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, target, content in entries:
            info = tarfile.TarInfo(f"./{name}")
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def fetched(entries: list[tuple[str, str | None, bytes]], dirs: list[str],
            **index_extra: Any) -> Fetched:
    """An entry whose index matches its part exactly: only its intent is hostile."""
    files = {name: [len(content), 0o100644, hashlib.sha256(content).hexdigest()]
             for name, target, content in entries if target is None}
    symlinks = {name: target for name, target, _ in entries if target is not None}
    config = {"format": ARTIFACT_FORMAT, "namespace": SPACE, "kind": "runtimes",
              "name": NAME, "key": KEY, "inputs": {}, "part": {"name": "p", "prefix": "./"}}
    index = {"files": files, "symlinks": symlinks, "dirs": dirs, "host_paths": None,
             **index_extra}
    return Fetched(config, index, part_of(entries))


def layer_names(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "runtimes").iterdir()) \
        if (cache_dir / "runtimes").is_dir() else []


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
