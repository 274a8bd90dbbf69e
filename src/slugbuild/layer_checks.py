"""Before packing: the build directory is what the slug may hold.

The placed layers are checked for files a build step changed in place (such a
layer is discarded and its files packed with the rest of the build directory);
stray bytecode and symlinks leaving the slug are dealt with; files naming a
path of this machine (the build directory, the cache, the runtime's local
prefix) are reported; and the layers alone are held against the slug size
limit before the long stages run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import errors, relocate, slug_size
from .cache import FILE_INDEX, Layer, Restored, read_index
from .context import BuildContext, PlacedLayer
from .layer_artifact import ArtifactInvalid, kept_part_name, part_only_index
from .pack import LayerPart
from .slug.archive import link_problem
from .tree import walk_sorted

# A file that names a path of this machine, and the path it names.
Mention = tuple[Path, str]


@dataclass
class LayerCheck:
    """What checking the placed layers found."""

    # (st_dev, st_ino) of the build's files that are still their layers' files:
    # not scanned again for paths of this machine.
    layer_inodes: set[tuple[int, int]] = field(default_factory=set)
    # The layers to pack as ready-made parts.
    intact: list[LayerPart] = field(default_factory=list)
    # Paths of this machine named by the intact layers' files, as found when made.
    mentions: list[Mention] = field(default_factory=list)


def prepare_for_packing(build: BuildContext) -> LayerCheck:
    """Drop stray bytecode, refuse links leaving the slug, then check the layers once
    their parts are compressed (a changed layer is discarded with its parts)."""
    remove_stray_bytecode(build.build_dir)
    refuse_links_leaving_slug(build.build_dir, build.view_links())
    refuse_viewed_links_leaving_slug(build)
    with build.timer.stage("compress_layers_wait"):
        build.background.shutdown(wait=True)
    return check_layers(build)


def remove_stray_bytecode(build_dir: Path) -> None:
    """Drop __pycache__ written into the app by build steps (they embed timestamps)."""
    def outside_runtime(parent: Path, name: str) -> bool:
        return not (parent == build_dir and name == ".heroku")

    for directory, dirnames, _ in walk_sorted(build_dir, outside_runtime):
        if "__pycache__" in dirnames:
            shutil.rmtree(directory / "__pycache__")
            dirnames.remove("__pycache__")


def refuse_links_leaving_slug(build_dir: Path, view_links: frozenset[str] = frozenset()
                              ) -> None:
    """A symlink a build step left must stay inside the slug, as every slug reader
    (``run``, ``inspect``, ``publish``) requires: refused here, before packing. The
    links of a view of cached layers (``view_links``) are not the slug's."""
    pending = [("", str(build_dir))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                if entry.is_symlink():
                    rel, target = prefix + entry.name, os.readlink(entry.path)
                    if rel in view_links:
                        continue
                    problem = link_problem(rel, target)
                    if problem is not None:
                        raise errors.SYMLINK_LEAVES_SLUG.error(variant=problem, path=rel,
                                                               target=target)
                elif entry.is_dir():
                    pending.append((prefix + entry.name + "/", entry.path))



def refuse_viewed_links_leaving_slug(build: BuildContext) -> None:
    """The symlinks of layers shown by a view, as the slug will hold them (from the
    layer's files.json): held to the same rule as the build directory's."""
    for entry in build.placed_layers:
        if not entry.placed.view:
            continue
        for rel, target in sorted(_layer_symlinks(entry.layer).items()):
            path = f"{entry.mount}/{rel}"
            problem = link_problem(path, target)
            if problem is not None:
                raise errors.SYMLINK_LEAVES_SLUG.error(variant=problem, path=path,
                                                       target=target)


def _layer_symlinks(layer: Layer) -> dict[str, str]:
    """A layer's symlinks (rel -> target): from its files.json, a part-only layer's
    from its part-only record (it has no files.json), else read from its tree."""
    index = read_index(layer.path / FILE_INDEX)
    if index is None and layer.lazy:
        with contextlib.suppress(ArtifactInvalid):  # e.g. its tree written meanwhile
            index = part_only_index(layer)
    if index is not None:
        return dict(index["symlinks"])
    links = {}
    for directory, dirnames, filenames in os.walk(layer.tree):
        for name in (*dirnames, *filenames):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                links[os.path.relpath(path, layer.tree)] = os.readlink(path)
    return links


def check_layers(build: BuildContext) -> LayerCheck:
    """Which placed layers are intact, the inodes of their files, and the mentions of
    this machine's paths their files hold.

    Hard-linked (this build held the link lock): a layer one of whose files a
    build step changed in place is discarded (its files are then scanned with
    the rest of the build directory). Copied: nothing of the cache was exposed;
    each copy still as copied counts as the layer's file.
    """
    found = LayerCheck()
    view_links = build.view_links()
    for entry in build.placed_layers:
        layer, placed = entry.layer, entry.placed
        mounted = build.build_dir / entry.mount
        if placed.view:
            # Shown by a view: no build step had its files (they were placed first).
            found.intact.append(entry.part(build.cache, view_links))
            found.mentions += [(mounted / path.relative_to(layer.tree), needle) for path, needle
                               in build.layer_host_paths.get(layer.path, [])]
            continue
        if placed.copies is not None:
            inodes: set[tuple[int, int]] | None = _intact_copies(mounted, placed)
        else:
            inodes = build.cache.check_restored(layer)
        if inodes is not None:
            found.intact.append(entry.part(build.cache))
            found.layer_inodes |= inodes
            found.mentions += _still_in_place(build.layer_host_paths.get(layer.path, []),
                                              entry, mounted)
        else:
            build.reporter.warn(f"A build step of this build changed a file of the cached "
                                f"layer {layer.path.name} in place; that layer was discarded "
                                f"and will be rebuilt next time.")
    return found


def recheck_if_materialised(build: BuildContext, checked: LayerCheck) -> LayerCheck:
    """The layers checked again when a view was materialised after ``checked`` (the
    entry-point check ran the slug's Python): their files are now in the build
    directory, placed."""
    if build.views or not any(part.view_links is not None for part in checked.intact):
        return checked
    return check_layers(build)


def warn_machine_paths(build: BuildContext, checked: LayerCheck) -> None:
    """Warn about files naming a path of this machine: found in the layers when they
    were made, and in the rest of the build directory now."""
    # A view's links name the cache by design (they are not the slug's files).
    mentions = checked.mentions + relocate.find_references(
        build.build_dir, build.machine_paths, frozenset(checked.layer_inodes),
        skip=build.view_links())
    if mentions:
        listed = ", ".join(sorted({str(p.relative_to(build.build_dir))
                                   for p, _ in mentions})[:5])
        build.reporter.warn(f"{len(mentions)} file(s) name the build directory or another "
                            f"path of this machine (slugbuild's cache, where packages "
                            f"are built from source; the Python installation the "
                            f"runtime or packages came from) and may not work once "
                            f"unpacked elsewhere: {listed}")


def _intact_copies(mounted: Path, placed: Restored) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the build's copies of a layer's files still as copied."""
    assert placed.copies is not None
    found = set()
    for rel, stamp in placed.copies.items():
        try:
            st = os.lstat(mounted / rel)
        except OSError:
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == stamp:
            found.add((st.st_dev, st.st_ino))
    return found


def _still_in_place(found: list[Mention], entry: PlacedLayer, mounted: Path) -> list[Mention]:
    """Mentions found in a layer's files, as build-directory paths, for the files the
    build directory still holds as placed (one replaced since is scanned with the
    rest; symlinks always are)."""
    kept = []
    copies = entry.placed.copies
    for path, needle in found:
        rel = path.relative_to(entry.layer.tree)
        placed = mounted / rel
        try:
            if path.is_symlink():
                continue
            st = placed.lstat()
            if copies is not None:
                same = copies.get(rel.as_posix()) == (
                    st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            else:
                same = os.path.samestat(path.stat(), st)
            if same:
                kept.append((placed, needle))
        except OSError:
            continue
    return kept


def check_layers_size(build: BuildContext) -> None:
    """Fail before collectstatic and packing when the runtime and dependency layers
    alone compress to more than the limit. A layer's compressed part is usually
    ready (kept in the cache, or made meanwhile); one still being made is waited
    for only when the layers could exceed the limit by their files' sizes
    (compression rarely expands data): a slug well within it is not slowed down."""
    cap = build.size_cap
    known = 0
    for future, entry in zip(build.part_sizes, build.placed_layers):
        if future.done() and future.exception() is None:
            known += future.result()
        elif _part_only(entry.layer):
            # Part-only: no files to measure; its kept part is ready (or made meanwhile).
            try:
                known += future.result()
            except Exception:  # noqa: BLE001 - then what its kept part adds, never 0
                # (unreadable too: packing makes or refuses it, and checks then)
                known += _kept_part_size(entry.layer) or 0
        else:
            known += int(_tree_bytes(entry.layer.tree) * 1.01) + 65536
    if known <= cap.limit:
        return
    compressed = 0
    for future, entry in zip(build.part_sizes, build.placed_layers):
        try:
            compressed += future.result() or 0
        except Exception:  # noqa: BLE001 - packing makes the part again; checked then
            kept = _kept_part_size(entry.layer) if _part_only(entry.layer) else None
            if kept is None:
                return
            compressed += kept
    if compressed > cap.limit:
        raise errors.SLUG_TOO_LARGE.error(
            variant="layers", size=slug_size.human(compressed), size_bytes=f"{compressed:,}",
            limit=slug_size.human(cap.limit), limit_bytes=f"{cap.limit:,}", source=cap.source)


def _part_only(layer: Layer) -> bool:
    return layer.lazy and not layer.tree.is_dir()


def _kept_part_size(layer: Layer) -> int | None:
    """The compressed size of a part-only layer's kept part (what it adds to the
    slug), None when its record or part is unreadable."""
    name = kept_part_name(layer)
    if name is None:
        return None
    try:
        return (layer.packed_parts / f"{name}.gz").stat().st_size
    except OSError:
        return None


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root``."""
    total = 0
    for directory, _, files in walk_sorted(root):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(directory / name)
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
