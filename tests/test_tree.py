"""tree.py: the one tree walker (sorted, prunable, symlinks never followed)."""

from __future__ import annotations

from pathlib import Path

from slugbuild.tree import iter_files, walk_sorted

from .helpers import make_app


def test_walk_is_sorted_and_pruned_and_does_not_follow_links(tmp_path):
    root = make_app(tmp_path / "t", {"b/2": "", "b/1": "", "a/x": "", "skip/y": "", "z": ""})
    (root / "link").symlink_to(root / "a")
    (root / "file-link").symlink_to(root / "z")
    walked = [(directory.relative_to(root).as_posix(), dirs, files)
              for directory, dirs, files in walk_sorted(root, lambda parent, name: name != "skip")]
    assert walked == [(".", ["a", "b", "link"], ["file-link", "z"]),
                      ("a", [], ["x"]), ("b", [], ["1", "2"])]
    assert [p.relative_to(root).as_posix() for p in iter_files(root)] == [
        "z", "a/x", "b/1", "b/2", "skip/y"]  # regular files only, directory by directory
    assert list(iter_files(Path(tmp_path / "missing"))) == []
