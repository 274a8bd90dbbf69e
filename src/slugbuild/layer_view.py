"""Cached layers shown in the build directory as links, not placed file by file (issue 20).

A warm build used to hard-link every file of the runtime and dependency layers
into the build directory (a Django app: ~2,800 directories and ~6,300 links,
each removed again at the end), although most builds only read them: the
packages listed, a console script looked for, the slug assembled from the
layers' kept compressed parts. A view makes the layers readable at their mount
by path with a few hundred symlinks: a directory only one layer has is one
link to the cached tree; a directory several layers have is a real directory
of the build holding links to their entries. Files are never shared with a
build step through it: collectstatic, the entry-point import check and a
``post_compile`` hook run in a private mount namespace where the mount is an
overlay of the cached trees, read-only (``BuildContext.step_layers``,
layer_overlay.py); where that is not possible, and for the other steps that run
a program of the slug or may write there (a later buildpack, NLTK data), the
build first materialises the layers (``BuildContext.materialise``: the view is
removed and the layers restored as before, by hard links or copies). Layers
that both hold the same file cannot be viewed; they are
materialised at once (the later one's file wins, as with a restore). Views are
used only while the build holds the cache's link lock: no other build can then
be writing into the cached files through links of its own.

The packer knows the view's links (``LayerPart.view_links``): it writes the
layers' directories and parts as it would for placed files, so a slug is
byte-identical either way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path


class ViewConflict(Exception):
    """Two layers hold the same non-directory path: they cannot both be viewed."""


@dataclass
class LayerView:
    """The links and directories one mount's view put into the build directory."""

    build_dir: Path
    mount: str
    # path relative to the build directory -> the cached entry it links to
    links: dict[str, str] = field(default_factory=dict)
    # real directories the view made, relative to the build directory, in order
    directories: list[str] = field(default_factory=list)

    def add(self, tree: Path) -> None:
        """Show the layer ``tree`` at the mount too. Raises ViewConflict (nothing of
        the layer then shown that could mislead: the caller materialises)."""
        parts = self.mount.split("/")
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            path = self.build_dir / rel
            if not path.is_dir() or path.is_symlink():
                os.mkdir(path)
                self.directories.append(rel)
        self._merge(str(tree), self.mount)

    def _merge(self, source: str, rel_dir: str) -> None:
        with os.scandir(source) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}"
            target = os.path.join(self.build_dir, rel)
            if not os.path.lexists(target):
                os.symlink(entry.path, target)
                self.links[rel] = entry.path
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and rel in self.links and _real_directory(self.links[rel]):
                self._expand(rel, target)
                self._merge(entry.path, rel)
            elif is_dir and rel in self.directories:
                self._merge(entry.path, rel)
            else:
                raise ViewConflict(rel)

    def _expand(self, rel: str, target: str) -> None:
        """A linked directory another layer also has becomes a real one, holding
        links to what the first layer had there."""
        linked = self.links.pop(rel)
        os.unlink(target)
        os.mkdir(target)
        self.directories.append(rel)
        with os.scandir(linked) as listing:
            for entry in listing:
                os.symlink(entry.path, os.path.join(target, entry.name))
                self.links[f"{rel}/{entry.name}"] = entry.path

    def holds_only_layers(self) -> bool:
        """Whether everything at the mount is the view's (nothing a build step added
        there, which an overlay of the layers' trees alone would hide)."""
        known = set(self.links) | set(self.directories)
        for rel in self.directories:
            if not (rel == self.mount or rel.startswith(self.mount + "/")):
                continue
            try:
                names = os.listdir(os.path.join(self.build_dir, rel))
            except OSError:
                return False
            if any(f"{rel}/{name}" not in known for name in names):
                return False
        return True

    def remove(self) -> None:
        """Take the view out of the build directory (what a build step added inside
        its directories stays)."""
        for rel in self.links:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.build_dir, rel))
        for rel in reversed(self.directories):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.build_dir, rel))
        self.links.clear()
        self.directories.clear()


def _real_directory(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)
