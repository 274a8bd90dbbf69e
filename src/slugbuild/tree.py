"""The one tree walker: every directory of a tree in a stable order, prunable.

os.walk lists names in whatever order the filesystem returns them; a build
that hashes, copies or lists files must not depend on that order. Walkers
across slugbuild go through ``walk_sorted`` so the order and the pruning
rule are written once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# Whether a subdirectory (its parent, its name) is walked into.
DirectoryFilter = Callable[[Path, str], bool]


def walk_sorted(root: Path, keep_dir: DirectoryFilter | None = None,
                on_error: Callable[[OSError], None] | None = None,
                ) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``(directory, subdirectories, files)`` for ``root`` and every directory below
    it, names sorted; subdirectories ``keep_dir`` refuses are neither listed nor
    walked, nor are those the caller removes from the yielded list. Symlinks to
    directories are listed, never followed (os.walk's rule). An unreadable
    directory is skipped unless ``on_error`` raises."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        directory = Path(dirpath)
        dirnames[:] = sorted(name for name in dirnames
                             if keep_dir is None or keep_dir(directory, name))
        yield directory, dirnames, sorted(filenames)


def iter_files(root: Path, keep_dir: DirectoryFilter | None = None) -> Iterator[Path]:
    """Every regular file (not symlinks) below ``root``, in sorted order."""
    for directory, _dirnames, filenames in walk_sorted(root, keep_dir):
        for name in filenames:
            path = directory / name
            if not path.is_symlink():
                yield path
