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

A part-only layer (pulled from a cache registry, its tree not written yet:
layer_artifact.py) is viewed from its index: its links point into its stub for
the metadata the build reads (dist-info files, packages' ``__init__.py``,
``patchlevel.h``) and to its tree's paths otherwise, which exist once a step
needing them has had the tree written (materialising writes it first).

The packer knows the view's links (``LayerPart.view_links``): it writes the
layers' directories and parts as it would for placed files, so a slug is
byte-identical either way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ViewConflict(Exception):
    """Two layers hold the same non-directory path: they cannot both be viewed."""


class Listing(Protocol):
    """What a view shows of one layer: its entries, and where a link to each points."""

    def children(self, rel: str) -> list[tuple[str, bool]]:
        """(name, is a directory, not a symlink) of each entry of directory ``rel``
        (``""``: the layer's top)."""

    def target(self, rel: str) -> str:
        """What a link to entry ``rel`` points to."""


@dataclass
class TreeListing:
    """A layer whose tree is written: listed from the disk, linked to its entries."""

    tree: Path

    def children(self, rel: str) -> list[tuple[str, bool]]:
        with os.scandir(os.path.join(self.tree, rel)) as listing:
            return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]

    def target(self, rel: str) -> str:
        return os.path.join(self.tree, rel)


@dataclass
class LayerView:
    """The links and directories one mount's view put into the build directory."""

    build_dir: Path
    mount: str
    # path relative to the build directory -> the cached entry it links to
    links: dict[str, str] = field(default_factory=dict)
    # real directories the view made, relative to the build directory, in order
    directories: list[str] = field(default_factory=list)
    # link (relative to the build directory) of a layer's directory -> the layer's
    # listing and the directory's path in the layer: expanded when another layer
    # has it too
    linked_dirs: dict[str, tuple[Listing, str]] = field(default_factory=dict)

    def add(self, tree: Path, listing: Listing | None = None) -> None:
        """Show the layer ``tree`` at the mount too (``listing``: its entries, when its
        tree is not written: a part-only layer). Raises ViewConflict (nothing of the
        layer then shown that could mislead: the caller materialises)."""
        parts = self.mount.split("/")
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            path = self.build_dir / rel
            if not path.is_dir() or path.is_symlink():
                os.mkdir(path)
                self.directories.append(rel)
        self._merge(listing or TreeListing(tree), "", self.mount)

    def _merge(self, listing: Listing, source: str, rel_dir: str) -> None:
        for name, is_dir in sorted(listing.children(source)):
            rel, inner = f"{rel_dir}/{name}", f"{source}/{name}" if source else name
            target = os.path.join(self.build_dir, rel)
            if not os.path.lexists(target):
                self._link(listing, inner, rel, is_dir)
                continue
            if is_dir and rel in self.linked_dirs:
                self._expand(rel, target)
                self._merge(listing, inner, rel)
            elif is_dir and rel in self.directories:
                self._merge(listing, inner, rel)
            else:
                raise ViewConflict(rel)

    def _link(self, listing: Listing, inner: str, rel: str, is_dir: bool) -> None:
        linked = listing.target(inner)
        os.symlink(linked, os.path.join(self.build_dir, rel))
        self.links[rel] = linked
        if is_dir:
            self.linked_dirs[rel] = (listing, inner)

    def _expand(self, rel: str, target: str) -> None:
        """A linked directory another layer also has becomes a real one, holding
        links to what the first layer had there."""
        listing, inner = self.linked_dirs.pop(rel)
        self.links.pop(rel)
        os.unlink(target)
        os.mkdir(target)
        self.directories.append(rel)
        for name, is_dir in listing.children(inner):
            self._link(listing, f"{inner}/{name}", f"{rel}/{name}", is_dir)

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
        self.linked_dirs.clear()
