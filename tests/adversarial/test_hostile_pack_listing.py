"""A warm build packs a layer shown by a view from the listing kept in the layer's
packed/ directory (``pack.LISTING``), instead of listing its thousands of
directories. That directory belongs to a layer every app with the same packages
shares, and any app's hook could write it (as for the pack memos beside it): a
planted listing must add no entry to another app's slug, take none away, name no
path outside the layer, and not stop its build."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from slugbuild import pack
from slugbuild.cache import Cache
from slugbuild.layer_view import LayerView
from slugbuild.pack import DIRECTORY, FILE, LISTING, LayerPart, pack_tree


def _viewed_layer(tmp_path: Path) -> tuple[Path, LayerPart]:
    """A cached layer (published, with its files.json) shown by a view in a build tree."""
    cache = Cache(tmp_path / "cache")
    with cache.lock("layers", "deps"), cache.new_layer("layers", "deps", "k", {}) as tree:
        (tree / "lib" / "pkg").mkdir(parents=True)
        (tree / "lib" / "pkg" / "mod.py").write_text("x = 1\n")
        (tree / "lib" / "empty").mkdir()
        (tree / "bin").mkdir()
        (tree / "bin" / "tool").write_text("#!/bin/sh\n")
        (tree / "bin" / "alias").symlink_to("tool")
    layer = cache.lookup("layers", "deps", "k")
    assert layer is not None
    root = tmp_path / "root"
    root.mkdir()
    (root / "app.py").write_text("print('app')\n")
    view = LayerView(root, ".heroku/python")
    view.add(layer.tree)
    return root, LayerPart(".heroku/python", layer.tree, layer.path / "packed",
                           view_links=frozenset(view.links))


def _pack(root: Path, part: LayerPart) -> bytes:
    out = io.BytesIO()
    pack_tree(root, out, mtime=1, layers=[part])
    return out.getvalue()


def _names(slug: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(slug)) as tar:
        return tar.getnames()


PLANTS = {
    "an extra directory": [(".profile.d", DIRECTORY)],
    "a directory outside the layer": [("../../.profile.d", DIRECTORY)],
    "a file the build placed": [("../../app.py", FILE)],
    "a directory left out": "lib/empty",
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_listing_changes_nothing_in_the_slug(tmp_path: Path, plant: str) -> None:
    root, part = _viewed_layer(tmp_path)
    clean = _pack(root, part)
    memo = part.packed_dir / LISTING
    kept = json.loads(memo.read_text())
    made = memo.read_text()
    change = PLANTS[plant]
    if isinstance(change, str):
        kept["entries"] = [entry for entry in kept["entries"] if entry[0] != change]
    else:
        kept["entries"] += [[rel, kind] for rel, kind in change]
    memo.write_text(json.dumps(kept))
    os.utime(memo)
    again = _pack(root, part)
    assert _names(again) == _names(clean)
    assert again == clean
    assert memo.read_text() == made  # listed again from the tree, and kept


def test_the_layers_own_listing_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    root, part = _viewed_layer(tmp_path)
    clean = _pack(root, part)

    scan = pack.scan_tree

    def no_scan(path: Path | str) -> list[tuple[str, int, int]]:
        assert Path(path) != part.tree, "the layer was listed again"
        return scan(path)

    monkeypatch.setattr(pack, "scan_tree", no_scan)
    assert _pack(root, part) == clean
