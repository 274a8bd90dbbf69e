"""Layers shown by a view (layer_view.py): links in, links out, conflicts refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slugbuild.layer_view import LayerView, ViewConflict


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _read_all(root: Path) -> dict[str, str]:
    found = {}
    for directory, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(directory) / name
            found[path.relative_to(root).as_posix()] = path.read_text()
    return found


def test_two_layers_merge_where_they_share_directories(tmp_path):
    runtime = _tree(tmp_path / "runtime", {"bin/python3.12": "py", "lib/python3.12/os.py": "os",
                                           "lib/python3.12/site-packages/README.txt": "r"})
    deps = _tree(tmp_path / "deps", {"bin/gunicorn": "g",
                                     "lib/python3.12/site-packages/flask/__init__.py": "f"})
    build = tmp_path / "build"
    build.mkdir()
    view = LayerView(build, ".heroku/python")
    view.add(runtime)
    view.add(deps)
    home = build / ".heroku/python"
    assert _read_all(home) == {"bin/python3.12": "py", "bin/gunicorn": "g",
                               "lib/python3.12/os.py": "os",
                               "lib/python3.12/site-packages/README.txt": "r",
                               "lib/python3.12/site-packages/flask/__init__.py": "f"}
    # Shared directories are the build's own; the rest are links to the layers.
    assert not (home / "bin").is_symlink() and (home / "bin/gunicorn").is_symlink()
    assert (home / "lib/python3.12/site-packages/flask").is_symlink()
    assert len(view.links) < 8
    view.remove()
    assert list(build.iterdir()) == []
    assert _read_all(runtime)["bin/python3.12"] == "py"  # the layers are untouched


def test_the_same_file_in_two_layers_is_a_conflict(tmp_path):
    one = _tree(tmp_path / "one", {"bin/tool": "1"})
    two = _tree(tmp_path / "two", {"bin/tool": "2"})
    build = tmp_path / "build"
    build.mkdir()
    view = LayerView(build, "m")
    view.add(one)
    with pytest.raises(ViewConflict):
        view.add(two)
    view.remove()
    assert list(build.iterdir()) == []
