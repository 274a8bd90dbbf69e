"""What a package build run by an installer wrote into the shared installer caches is
discarded, so no app's setup.py decides what another app's install links.

An install run (sealed: step_jail.py) must be able to write uv's and pip's caches and
the built-wheel partitions, so a package's setup.py or PEP 517 backend can too: plant
a file in an unpacked wheel of uv's archive bucket, edit one in place, drop a wheel in
another environment's partition. Before each run the trees it can write are stat'ed
(``snapshot``); after a run that ran package code (it built something from source, or
failed, which may hide a build) every entry added, changed (ctime, which user space
cannot set back, moved) or removed since is moved into the install's scratch, deleted
with it (``CacheGuard.settle``). A run that built nothing keeps its downloads. Writes
of another build running at the same moment may be discarded too: that costs only a
download again. docs/cache.md ("Installer caches") and docs/security.md.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from ..log import Reporter
from . import built_wheels

# inode, size, mtime_ns, ctime_ns, mode, symlink target ("" for anything else)
Entry = tuple[int, int, int, int, int, str]
Snapshot = dict[str, Entry]
# A bucket of uv's unpacked wheels: each entry of it is used whole, as found.
_ARCHIVE_BUCKET = re.compile(r"archive-v\d+")
QUARANTINE_DIR = "discarded-cache-entries"


def guarded_roots(cache_root: Path, scratch: Path) -> list[Path]:
    """The installer-cache trees an install run in ``scratch`` can write: the shared
    uv and pip caches, every built-wheel partition, and the run's cache views (whose
    real directories ``built_wheels.adopt`` moves into the shared caches)."""
    return [*(built_wheels.shared_cache(cache_root, tool) for tool in built_wheels.BUILT_BUCKETS),
            cache_root / built_wheels.BUILT_WHEELS_DIR, scratch / "installer-caches"]


def snapshot(roots: list[Path]) -> Snapshot:
    """Every entry under ``roots`` (symlinks not followed) by path; the symlinks at the
    top of a cache view (slugbuild's own, to the shared buckets) are left out."""
    found: Snapshot = {}
    views = {str(root) for root in roots if root.name == "installer-caches"}
    pending = [str(root) for root in roots]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        in_view = os.path.dirname(directory) in views
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            link = stat.S_ISLNK(info.st_mode)
            if link and in_view:
                continue
            target = ""
            if link:
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    target = "?"
            found[entry.path] = (info.st_ino, info.st_size, info.st_mtime_ns,
                                 info.st_ctime_ns, info.st_mode, target)
            if stat.S_ISDIR(info.st_mode):
                pending.append(entry.path)
    return found


def written(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, changed or removed between two snapshots. A directory counts as
    changed only when it was replaced or its mode changed: its ctime moves whenever an
    entry in it does, and those entries are reported themselves."""
    changed = []
    for path, now in after.items():
        was = before.get(path)
        if was is None:
            changed.append(path)
        elif stat.S_ISDIR(now[4]) and stat.S_ISDIR(was[4]):
            if (was[0], was[4]) != (now[0], now[4]):
                changed.append(path)
        elif was != now:
            changed.append(path)
    changed += [path for path in before if path not in after]
    return sorted(changed)


def _unit(path: str, roots: list[Path], removed: bool) -> str | None:
    """What is discarded for a written ``path``: a whole unpacked wheel of uv's
    archive bucket (used as found), the directory that lost ``path`` when it was
    removed, else ``path`` itself; None for a root's own top-level removals."""
    for root in map(str, roots):
        if not path.startswith(root + os.sep):
            continue
        parts = path[len(root) + 1:].split(os.sep)
        if len(parts) >= 2 and _ARCHIVE_BUCKET.fullmatch(parts[0]):
            return os.path.join(root, parts[0], parts[1])
        if removed:
            return None if len(parts) == 1 else os.path.join(root, *parts[:-1])
        return path
    return None


def discard(paths: list[str], removed: set[str], roots: list[Path], into: Path) -> None:
    """Move the units of ``paths`` into ``into`` (same file system: renames), outermost
    first; what cannot be moved is deleted in place."""
    units = sorted({unit for path in paths
                    if (unit := _unit(path, roots, path in removed)) is not None})
    into.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    for number, unit in enumerate(units):
        if any(unit.startswith(outer + os.sep) for outer in moved):
            continue
        moved.append(unit)
        try:
            os.rename(unit, into / str(number))
        except FileNotFoundError:
            continue
        except OSError:
            if os.path.isdir(unit) and not os.path.islink(unit):
                shutil.rmtree(unit, ignore_errors=True)
            else:
                try:
                    os.unlink(unit)
                except OSError:
                    pass


class CacheGuard:
    """The installer caches as one install run in ``scratch`` found them (``snapshot``)."""

    def __init__(self, cache_root: Path, scratch: Path) -> None:
        self.scratch = scratch
        self.roots = guarded_roots(cache_root, scratch)
        self.before = snapshot(self.roots)

    def settle(self, ran_package_code: bool, reporter: Reporter) -> int:
        """After the run: when it ran package code (or wrote a built wheel, which is
        the same), discard what it wrote in the caches, say so and mark the install
        as built from source (``built_wheels.BUILT_MARKER``); the count."""
        if not ran_package_code:
            # Only the built wheels can tell: walk their (small) trees alone first.
            built_roots = self.roots[2:]
            under = tuple(str(root) + os.sep for root in built_roots)
            before = {path: entry for path, entry in self.before.items()
                      if path.startswith(under)}
            if not any(map(self._built_wheel, written(before, snapshot(built_roots)))):
                return 0
        # The built wheels go too: ``built_wheels.from_source`` must still see the build.
        (self.scratch / built_wheels.BUILT_MARKER).touch()
        after = snapshot(self.roots)
        paths = written(self.before, after)
        if not paths:
            return 0
        removed = {path for path in paths if path not in after}
        discard(paths, removed, self.roots, self.scratch / QUARANTINE_DIR)
        reporter.detail(f"{len(paths)} installer cache entries written during a package "
                        f"build were discarded")
        return len(paths)

    def _built_wheel(self, path: str) -> bool:
        """Whether ``path`` is in a bucket of built wheels (a partition's, or one the
        installer made in its view, a cache that had none yet), past the bookkeeping
        files uv puts at the top of every bucket it makes."""
        partitions, views = (str(root) + os.sep for root in self.roots[2:4])
        if path.startswith(partitions):
            tool, _env, *rest = path[len(partitions):].split(os.sep) + [""]
        elif path.startswith(views):
            tool, *rest = path[len(views):].split(os.sep)
        else:
            return False
        pattern = built_wheels.BUILT_BUCKETS.get(tool)
        return (pattern is not None and len(rest) >= 2 and bool(pattern.fullmatch(rest[0]))
                and bool(rest[1]) and not rest[1].startswith("."))
