"""A collectstatic output (static_reuse.py) pulled from a cache registry is applied
to the build directory while the runtime and dependency layers are shown by a view
(links to the cached trees). Its delta may name only the app's own files: nothing in
the Python prefix (nor ``.heroku`` itself), nothing below a symlink of the build
directory. Otherwise nothing of it is applied (collectstatic runs instead), and the
cached layers, the links' targets, are untouched."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slugbuild.cache import Cache
from slugbuild.layer_artifact import ARTIFACT_FORMAT, ArtifactInvalid, Fetched, materialise
from slugbuild.static_reuse import DeltaOutside, _apply

SITE = ".heroku/python/lib/python3.12/site-packages"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A build directory whose prefix is a view: a link to a 'cached' tree."""
    cached = tmp_path / "cache-tree"
    (cached / "lib/python3.12/site-packages").mkdir(parents=True)
    (cached / "lib/python3.12/site-packages/six.py").write_text("clean\n")
    root = tmp_path / "build"
    (root / ".heroku").mkdir(parents=True)
    (root / ".heroku/python").symlink_to(cached)
    (root / "assets").symlink_to(".heroku/python/lib")  # an app's own link, inside it
    (root / "app.py").write_text("print()\n")
    return root


def _static_layer(tmp_path: Path, files: dict[str, str], dirs: tuple[str, ...] = ()) -> Any:
    cache = Cache(tmp_path / "cache")
    (cache.root / "static").mkdir(exist_ok=True)
    with cache.new_layer("static", "s", "k", {}) as tree:
        for rel in dirs:
            (tree / rel).mkdir(parents=True)
        for rel, text in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)
    return cache.lookup("static", "s", "k")


@pytest.mark.parametrize("delta", [
    {"removed": [f"{SITE}/six.py"]},
    {"removed": [".heroku"]},
    {"removed": ["assets/python3.12/site-packages/six.py"]},
    {"files": [f"{SITE}/six.py"]},
    {"files": ["assets/python3.12/site-packages/six.py"]},
    {"directories": ["assets/python3.12/new"]},
    {"symlinks": [f"{SITE}/six.py"]},
    {"removed": ["../outside"]},
], ids=["remove-in-prefix", "remove-heroku", "remove-through-link", "write-in-prefix",
        "write-through-link", "mkdir-through-link", "link-in-prefix", "climb"])
def test_a_delta_reaching_outside_the_apps_files_changes_nothing(
        tmp_path: Path, build: Path, delta: dict[str, list[str]]) -> None:
    full = {"files": [], "symlinks": [], "directories": [], "removed": ["app.py"], **delta}
    layer = _static_layer(tmp_path, {rel: "POISON\n" for rel in full["files"]})
    with pytest.raises(DeltaOutside):
        _apply(layer, full, build)
    assert (tmp_path / "cache-tree/lib/python3.12/site-packages/six.py").read_text() == "clean\n"
    assert sorted(p.name for p in (tmp_path / "cache-tree/lib/python3.12").iterdir()) == [
        "site-packages"]
    assert (build / "app.py").exists()  # nothing applied: not even the harmless part


def test_a_pulled_static_entry_naming_the_prefix_is_refused(tmp_path: Path) -> None:
    # The same rule where the entry is published from the registry: refused there too.
    delta = {"files": [f"{SITE}/six.py"], "symlinks": [], "directories": [], "removed": []}
    index = {"files": {f"{SITE}/six.py": [0, 0o100644, "e3b0c44298fc1c149afbf4c8996fb924"
                                                       "27ae41e4649b934ca495991b7852b855"]},
             "symlinks": {}, "dirs": [], "host_paths": None}
    config = {"format": ARTIFACT_FORMAT, "namespace": "sb1-test", "kind": "static",
              "name": "s", "key": "k" * 64, "inputs": {}, "side_files": {"delta.json": delta},
              "part": {"name": "p", "prefix": "./"}}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(f"./{SITE}/six.py"), io.BytesIO(b""))
    with pytest.raises(ArtifactInvalid, match="prefix"):
        materialise(Cache(tmp_path / "cache"), Fetched(config, index, gzip.compress(
            raw.getvalue())))
    assert json.dumps(delta)  # the delta itself is well formed: only its reach is wrong


@pytest.mark.parametrize("stray", [f"{SITE}/x", "assets/python3.12/x"],
                         ids=["dir-in-prefix", "dir-through-link"])
def test_a_kept_tree_directory_the_delta_does_not_name_is_not_made(
        tmp_path: Path, build: Path, stray: str) -> None:
    # cache.restore makes every directory of the kept tree: one the delta does not
    # name (files.json lists none) would be made through the view, in a cached layer.
    delta = {"files": ["static/app.css"], "symlinks": [], "directories": ["static"],
             "removed": []}
    layer = _static_layer(tmp_path, {"static/app.css": "body{}\n"}, dirs=(stray,))
    _apply(layer, delta, build, cache=Cache(tmp_path / "cache"), links=True)
    assert (build / "static/app.css").read_text() == "body{}\n"
    assert sorted(p.name for p in (tmp_path / "cache-tree/lib/python3.12").iterdir()) == [
        "site-packages"]
    assert sorted(p.name for p in (tmp_path / "cache-tree/lib/python3.12/site-packages")
                  .iterdir()) == ["six.py"]


@pytest.mark.parametrize("stray", [f"{SITE}/x", "assets/python3.12/x", "elsewhere"])
def test_a_pulled_static_entry_with_a_directory_its_delta_does_not_name_is_refused(
        tmp_path: Path, stray: str) -> None:
    delta = {"files": ["static/app.css"], "symlinks": [], "directories": ["static"],
             "removed": []}
    index = {"files": {"static/app.css": [0, 0o100644, "e3b0c44298fc1c149afbf4c8996fb924"
                                                       "27ae41e4649b934ca495991b7852b855"]},
             "symlinks": {}, "dirs": ["static", stray], "host_paths": None}
    config = {"format": ARTIFACT_FORMAT, "namespace": "sb1-test", "kind": "static",
              "name": "s", "key": "k" * 64, "inputs": {}, "side_files": {"delta.json": delta},
              "part": {"name": "p", "prefix": "./"}}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("./static/app.css"), io.BytesIO(b""))
    with pytest.raises(ArtifactInvalid, match="directory"):
        materialise(Cache(tmp_path / "cache"), Fetched(config, index, gzip.compress(
            raw.getvalue())))
