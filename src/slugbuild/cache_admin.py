"""``slugbuild cache``: list, prune, export and import what the cache holds.

``list`` shows every kind of entry (docs/cache.md, Cache commands): each layer
(runtime, dependency, tool, static) with its size and last use (the mtime of its
``locks/use-*.lock``, stamped by every build that finds it), and each store
(pycs, import checks, hints, indexes, downloads, image blobs, installer and
buildpack caches, and any directory it does not know) with its entries' size and
newest use. Sizes are disk usage, each hard-linked file counted once. ``prune``
removes entries by age and/or down to a total size, least recently used first,
and never one a running build may read: a layer only while no build holds it
(``Cache.removal``), a store a build reads without a lock of its own only while
no build has the cache open (``Cache.idle``), and pycs, checks and hints at any
time (a build that misses one redoes that work, with the same result).
``export``/``import`` carry layers as OCI artifacts (layer_artifact.py) to and
from an OCI image layout directory or a registry, so a plain CI cache action
(which saves and restores a directory) or a shared registry can move them
between machines; an import publishes each layer through the cache's verified
path, exactly as the registry level of a build does.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import errors, platform_info, records
from .cache import MANIFEST, Cache
from .layer_artifact import (
    ArtifactInvalid,
    LayoutStore,
    Store,
    Transfer,
    fetch_artifact,
    is_layer_dir,
    layer_tag,
    make_artifact,
    materialise,
    namespace,
    part_only_wanted,
    push_artifact,
)
from .oci.options import RegistryOptions
from .slug_size import human
from .stage import CACHEDIR_TAG

LISTED_KINDS = ("runtimes", "layers", "tools", "static")
# What export/import carry (a build's cache registry also shares static: cache_registry.py).
SHARED_KINDS = ("runtimes", "layers")
REGISTRY_SCHEME = "docker://"

# How each kind of entry is protected from a prune while builds may read it:
# LAYER: its own build lock and use lock (``Cache.removal``), held by any build
# that found it; FREE: nothing to protect, losing an entry at any moment only
# costs work (a pyc compiled again, an import check run again, no rebuild hint);
# IDLE: only while no build has the cache open (``Cache.idle``).
LAYER, FREE, IDLE = "layer", "free", "idle"
# The stores below the cache root that are not layers: kind -> (guard, depth of
# an entry below it; 0: the whole directory is one entry). docs/cache.md.
STORES: dict[str, tuple[str, int]] = {
    "pyc": (FREE, 2),             # pyc/<2 hex>/<62 hex>-<sha256>: one canonical pyc
    "checks": (FREE, 1),          # one passed import check
    "history": (FREE, 1),         # one app directory's rebuild hint
    "runtime-index": (IDLE, 1),   # one remembered runtime index answer
    "sticky-python": (IDLE, 1),   # one app directory's sticky Python minor
    "downloads": (IDLE, 2),       # downloads/<platform>/<archive> (+ its .json record)
    "node-index": (IDLE, 1),      # one Node.js release server's index
    "buildpacks": (IDLE, 2),      # buildpacks/<name>/<app>: one app's buildpack CACHE_DIR
    "oci": (IDLE, 2),             # oci/blobs/<hex>, oci/parts/<hex>.json, oci/pushed/<host>
    "pip": (IDLE, 0),             # installer caches: their own formats, one entry each
    "uv": (IDLE, 0),
    "built-wheels": (IDLE, 2),    # built-wheels/<tool>/<env hash>: one environment's built wheels
    "npm": (IDLE, 0),
    "apt": (IDLE, 0),
}
# Never entries: the cache's own bookkeeping and builds in progress.
NOT_ENTRIES = {"locks", "tmp", CACHEDIR_TAG}
# A temporary file of a FREE store younger than this is someone's write in progress.
_WRITE_IN_PROGRESS = 24 * 3600
Inode = tuple[int, int]


@dataclass(frozen=True)
class CacheEntry:
    """One thing ``cache prune`` may remove: a layer, or an entry of a store."""

    kind: str
    name: str  # below the kind's directory
    key: str  # a layer's key ("" for store entries)
    path: Path
    size: int  # disk usage, each inode once
    last_used: float  # epoch seconds
    guard: str = LAYER
    # (st_dev, st_ino) -> how many of its links are in the entry (for what a removal frees)
    inodes: dict[Inode, int] = field(default_factory=dict, repr=False, compare=False)
    extra: tuple[Path, ...] = ()  # paths that go with it (a download's record)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "key": self.key, "size": self.size,
                "last_used": _iso(self.last_used), "path": str(self.path)}


LocalLayer = CacheEntry  # the name export/import and older callers use


def _iso(moment: float) -> str:
    return _dt.datetime.fromtimestamp(moment, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Usage:
    """Disk usage of entries, each inode counted once in the whole cache (hard links
    between layers and uv's cache are common)."""

    def __init__(self) -> None:
        self.blocks: dict[Inode, tuple[int, int]] = {}  # inode -> (bytes on disk, st_nlink)

    def measure(self, paths: tuple[Path, ...]) -> tuple[int, float, dict[Inode, int]]:
        """(disk usage, newest use, inode -> links) of the files below ``paths``. A
        file's use is the newer of its access and modification times: reading it
        moves the first (Linux's default ``relatime``: at most once a day, which
        is the resolution ``--older-than`` needs; on a ``noatime`` mount only
        writes count). Not the change time: a CI cache restore sets it to now."""
        inodes: dict[Inode, int] = {}
        size, newest = 0, 0.0
        pending = [str(path) for path in paths]
        while pending:
            path = pending.pop()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            newest = max(newest, st.st_mtime, st.st_atime) \
                if not stat.S_ISDIR(st.st_mode) else max(newest, st.st_mtime)
            inode = (st.st_dev, st.st_ino)
            if inode not in inodes:
                size += st.st_blocks * 512
                # A directory's st_nlink counts its subdirectories, not other names.
                links = 1 if stat.S_ISDIR(st.st_mode) else st.st_nlink
                self.blocks.setdefault(inode, (st.st_blocks * 512, links))
            inodes[inode] = inodes.get(inode, 0) + 1
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError), os.scandir(path) as listing:
                    pending.extend(entry.path for entry in listing)
        return size, newest, inodes

    def total(self, entries: list[CacheEntry]) -> int:
        seen: set[Inode] = set()
        for entry in entries:
            seen.update(entry.inodes)
        return sum(self.blocks[inode][0] for inode in seen)


def local_layers(cache: Cache, kinds: tuple[str, ...] = LISTED_KINDS,
                 usage: _Usage | None = None) -> list[CacheEntry]:
    """The cache's finished layers, least recently used first."""
    usage = usage or _Usage()
    found = []
    for kind in kinds:
        try:
            if not _real_directory(cache.root / kind):
                continue
            entries = sorted((cache.root / kind).iterdir())
        except OSError:
            continue
        for path in entries:
            if not _real_directory(path) or not is_layer_dir(path):
                continue
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                key = str(manifest["key"])
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                continue
            size, _, inodes = usage.measure((path,))
            found.append(CacheEntry(kind, path.name, key, path, size,
                                    _last_use(cache, kind, path), LAYER, inodes))
    found.sort(key=lambda layer: (layer.last_used, layer.kind, layer.name))
    return found


def _real_directory(path: Path) -> bool:
    """A directory reached without a symlink from its parent: list and prune never go
    through a link (a ``layers -> /srv`` planted in a cache restored from elsewhere
    had prune delete what it named)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _last_use(cache: Cache, kind: str, path: Path) -> float:
    """When a build last found the layer, else when it was published."""
    for candidate in (cache.root / "locks" / f"use-{kind}-{path.name}.lock", path / MANIFEST):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def store_entries(cache: Cache, usage: _Usage | None = None,
                  now: float | None = None) -> list[CacheEntry]:
    """Every entry of the stores (STORES, and any other directory a newer slugbuild
    or a buildpack left in the cache: one IDLE entry each), least recently used first."""
    usage = usage or _Usage()
    now = time.time() if now is None else now
    found: list[CacheEntry] = []
    try:
        tops = sorted(cache.root.iterdir())
    except OSError:
        return found
    for top in tops:
        if top.name in NOT_ENTRIES or top.name in LISTED_KINDS or top.is_symlink() \
                or not top.is_dir():
            continue
        guard, depth = STORES.get(top.name, (IDLE, 0))
        for path, extra in _entry_paths(top, depth):
            if guard == FREE and ".tmp" in path.name:
                with contextlib.suppress(OSError):
                    if now - path.lstat().st_mtime < _WRITE_IN_PROGRESS:
                        continue
            size, newest, inodes = usage.measure((path, *extra))
            if not inodes or (depth == 0 and len(inodes) == 1):
                continue  # gone meanwhile, or an empty store directory
            name = str(path.relative_to(top)) if depth else ""
            found.append(CacheEntry(top.name, name, "", path, size, newest, guard, inodes,
                                    extra))
    found.sort(key=lambda entry: (entry.last_used, entry.kind, entry.name))
    return found


def _entry_paths(top: Path, depth: int) -> Iterator[tuple[Path, tuple[Path, ...]]]:
    """The entries ``depth`` levels below ``top`` (a download's ``.json`` record goes
    with its archive; an orphan record is an entry of its own)."""
    level = [top]
    for _ in range(depth):
        below: list[Path] = []
        for directory in level:
            if directory.is_dir() and not directory.is_symlink():
                with contextlib.suppress(OSError):
                    below.extend(sorted(directory.iterdir()))
        level = below
    names = {path for path in level}
    for path in level:
        record = path.with_name(path.name + ".json")
        if top.name == "downloads" and path.suffix == ".json" \
                and path.with_name(path.name[:-5]) in names:
            continue  # goes with its archive
        yield path, ((record,) if top.name == "downloads" and record in names else ())


def all_entries(cache: Cache, now: float | None = None) -> tuple[list[CacheEntry], _Usage]:
    """Layers and store entries, least recently used first, and their disk usage."""
    usage = _Usage()
    entries = local_layers(cache, usage=usage) + store_entries(cache, usage, now)
    entries.sort(key=lambda entry: (entry.last_used, entry.kind, entry.name))
    return entries, usage


@dataclass
class StoreSummary:
    """One store in ``cache list``: its entries taken together."""

    kind: str
    path: Path
    entries: int
    size: int
    last_used: float
    guard: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "entries": self.entries, "size": self.size,
                "last_used": _iso(self.last_used), "path": str(self.path),
                "removed": {LAYER: "when no build holds it", FREE: "at any time",
                            IDLE: "when no build runs"}[self.guard]}


def summarise_stores(cache: Cache, entries: list[CacheEntry], usage: _Usage
                     ) -> list[StoreSummary]:
    by_kind: dict[str, list[CacheEntry]] = {}
    for entry in entries:
        if entry.guard != LAYER:
            by_kind.setdefault(entry.kind, []).append(entry)
    return [StoreSummary(kind, cache.root / kind, len(group), usage.total(group),
                         max(entry.last_used for entry in group), group[0].guard)
            for kind, group in sorted(by_kind.items())]


def _in_progress(cache: Cache) -> int:
    """Disk usage of builds in progress (tmp/) and of this cache's trash."""
    paths: list[Path] = []
    for directory in (cache.root / "tmp", cache.trash_dir()):
        if directory is not None:
            with contextlib.suppress(OSError):
                paths.extend(directory.iterdir())
    return _Usage().measure(tuple(paths))[0]


def list_command(cache: Cache, as_json: bool, out: TextIO) -> int:
    entries, usage = all_entries(cache)
    layers = [entry for entry in entries if entry.guard == LAYER]
    stores = summarise_stores(cache, entries, usage)
    total, busy = usage.total(entries), _in_progress(cache)
    if as_json:
        out.write(json.dumps({"cache_dir": str(cache.root),
                              "layers": [layer.as_dict() for layer in layers],
                              "stores": [store.as_dict() for store in stores],
                              "size": total, "in_progress": busy}, indent=2) + "\n")
        return 0
    if not entries:
        out.write(f"No layers in {cache.root}\n")
        return 0
    out.write(f"{'KIND':<13} {'NAME':<56} {'SIZE':>9}  LAST USE\n")
    for layer in reversed(layers):  # most recent first, as people read a list
        out.write(f"{layer.kind:<13} {layer.name:<56} {human(layer.size):>9}  "
                  f"{_iso(layer.last_used)}\n")
    for store in sorted(stores, key=lambda item: -item.last_used):
        count = f"({store.entries} entr{'y' if store.entries == 1 else 'ies'})"
        out.write(f"{store.kind:<13} {count:<56} "
                  f"{human(store.size):>9}  {_iso(store.last_used)}\n")
    out.write(f"{len(layers)} layer(s), {sum(s.entries for s in stores)} other entries: "
              f"{human(total)} on disk (hard links counted once) in {cache.root}"
              + (f"; {human(busy)} more in builds in progress" if busy else "") + "\n")
    return 0


@dataclass
class PruneResult:
    removed: list[CacheEntry]
    in_use: list[CacheEntry]
    kept_bytes: int
    freed_bytes: int = 0  # disk usage the removals gave back (hard links counted once)


def prune(cache: Cache, older_than_days: float | None, max_size: int | None,
          dry_run: bool = False, now: float | None = None) -> PruneResult:
    """Remove entries last used more than ``older_than_days`` ago, then the least
    recently used ones until the rest take at most ``max_size`` bytes on disk.

    Never one a running build may read: a layer only while no build holds it
    (found, or being built); an installer cache, image blob, download or index
    only while no build has the cache open; pycs, import checks and rebuild
    hints at any time (losing one costs work, never a wrong result). A dry run
    asks the same locks and removes nothing. Sizes are
    disk usage with hard links counted once: removing an entry frees only the
    files no other entry (or a build directory) links to."""
    now = time.time() if now is None else now
    entries, usage = all_entries(cache, now)
    total = start = usage.total(entries)
    links_gone: dict[Inode, int] = {}
    removed: list[CacheEntry] = []
    in_use: list[CacheEntry] = []
    doomed: list[Path] = []

    def freed_by(entry: CacheEntry) -> int:
        freed = 0
        for inode, count in entry.inodes.items():
            links_gone[inode] = links_gone.get(inode, 0) + count
            size, nlink = usage.blocks[inode]
            if links_gone[inode] == nlink:
                freed += size
        return freed

    with cache.idle() as idle:
        for entry in entries:  # least recently used first
            too_old = older_than_days is not None \
                and now - entry.last_used > older_than_days * 86400
            too_big = max_size is not None and total > max_size
            if not (too_old or too_big):
                continue
            gone = _remove(cache, entry, idle, None if dry_run else doomed)
            if gone is None:
                in_use.append(entry)
                continue
            if gone:
                removed.append(entry)
                total -= freed_by(entry)
    for path in doomed:  # deleted once builds may open the cache again
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return PruneResult(removed, in_use, max(total, 0), start - max(total, 0))


def _remove(cache: Cache, entry: CacheEntry, idle: bool, doomed: list[Path] | None
            ) -> bool | None:
    """Take ``entry`` out of the cache: True, False (gone meanwhile, or not
    removable), None (in use). Directories are renamed into tmp/ and deleted by
    the caller after. ``doomed`` None (a dry run): only whether it could be."""
    if entry.guard == LAYER:
        use_lock = cache.root / "locks" / f"use-{entry.kind}-{entry.name}.lock"
        never_found = not use_lock.exists()
        with cache.removal(entry.kind, entry.name) as free:
            if not free:
                return None
            if never_found:  # made just now by asking: that is no use of the layer
                with contextlib.suppress(OSError):
                    os.utime(use_lock, (entry.last_used, entry.last_used), follow_symlinks=False)
            return _take_away(cache, entry, doomed) if doomed is not None else True
    if entry.guard == IDLE and not idle:
        return None
    return _take_away(cache, entry, doomed) if doomed is not None else True


def _take_away(cache: Cache, entry: CacheEntry, doomed: list[Path]) -> bool:
    for path in (entry.path, *entry.extra):
        try:
            if entry.guard == FREE and not path.is_dir():
                doomed.append(path)  # needs no lock: unlinked after, not while builds wait
            elif path.is_dir() and not path.is_symlink():
                scratch = cache.scratch_dir(f"pruned-{entry.kind}")
                doomed.append(scratch)
                os.rename(path, scratch / "entry")
            else:
                path.unlink()
        except OSError:
            if path == entry.path:
                return False
    return True


def prune_command(cache: Cache, older_than_days: float | None, max_size: int | None,
                  dry_run: bool, out: TextIO) -> int:
    if older_than_days is None and max_size is None:
        raise errors.CACHE_COMMAND_FAILED.error(variant="prune-nothing")
    result = prune(cache, older_than_days, max_size, dry_run)
    verb = "Would remove" if dry_run else "Removed"
    layers = [entry for entry in result.removed if entry.guard == LAYER]
    for layer in layers:
        out.write(f"{verb} {layer.kind}/{layer.name} ({human(layer.size)}, last used "
                  f"{_iso(layer.last_used)})\n")
    others: dict[str, list[CacheEntry]] = {}
    for entry in result.removed:
        if entry.guard != LAYER:
            others.setdefault(entry.kind, []).append(entry)
    for kind, group in sorted(others.items()):
        what = f"{len(group)} entries of {kind}/" if group[0].name else f"{kind}/"
        out.write(f"{verb} {what} ({human(sum(e.size for e in group))}, last used "
                  f"{_iso(max(e.last_used for e in group))})\n")
    for entry in result.in_use:
        if entry.guard == LAYER:
            out.write(f"Kept {entry.kind}/{entry.name}: a running build is using it\n")
    busy = sorted({entry.kind for entry in result.in_use if entry.guard == IDLE})
    if busy:
        out.write(f"Kept {', '.join(kind + '/' for kind in busy)}: a build is using the "
                  f"cache (they go only while none runs)\n")
    count = sum(len(group) for group in others.values())
    out.write(f"{verb} {len(layers)} layer(s)" + (f" and {count} other entries" if count
                                                  else "")
              + f", {human(result.freed_bytes)} freed; {human(result.kept_bytes)} left\n")
    return 0


# --- export / import -------------------------------------------------------------------------

def open_store(target: str, create: bool, registry: RegistryOptions | None = None) -> Store:
    """The store ``target`` names: ``docker://HOST[:PORT]/REPO`` (with the images'
    credentials and timeout, ``registry``) or a directory."""
    if target.startswith(REGISTRY_SCHEME):
        from .cache_registry import registry_store

        registry = registry or RegistryOptions()
        return registry_store(target, registry, timeout=registry.timeout)
    root = Path(target)
    if create:
        try:
            return LayoutStore(root, create=True)
        except OSError as exc:
            raise errors.CACHE_COMMAND_FAILED.error(
                variant="unwritable", target=target, reason=exc.strerror or str(exc)) from exc
    if not (root / LayoutStore.INDEX).is_file():
        raise errors.CACHE_COMMAND_FAILED.error(variant="not-a-layout", target=target)
    return LayoutStore(root)


def layer_check(kind: str) -> Callable[[Path, dict[str, Any]], Any] | None:
    """What a layer of ``kind`` must pass beyond its file index (dependency layers:
    every distribution's RECORD satisfied by the layer itself)."""
    return records.layer_problems if kind == "layers" else None


def export_layers(cache: Cache, store: Store, space: str, transfer: Transfer,
                  report: Callable[[str], None]) -> tuple[int, int]:
    """Push every shareable local layer; (pushed, skipped without a kept part)."""
    pushed = skipped = 0
    for layer in local_layers(cache, SHARED_KINDS):
        found = cache.lookup(layer.kind, layer.name, layer.key, lazy=True)
        if found is None or cache.verify(found, layer_check(layer.kind)):
            continue  # gone or damaged meanwhile: not for sharing
        artifact = make_artifact(found, space)
        if artifact is None:
            skipped += 1
            report(f"Skipped {layer.kind}/{layer.name}: no slug part kept (a build "
                   f"using it makes one)")
            continue
        if push_artifact(store, artifact, transfer):
            report(f"Exported {layer.kind}/{layer.name}")
        pushed += 1
    return pushed, skipped


def import_layers(cache: Cache, store: Store, tags: list[str], space: str,
                  transfer: Transfer, report: Callable[[str], None]) -> tuple[int, int]:
    """Materialise the store's entries of this namespace that the cache lacks;
    (imported, refused)."""
    imported = refused = 0
    for kind, key in _entries(tags, space):
        if any(layer.key == key for layer in local_layers(cache, (kind,))):
            continue
        try:
            fetched = fetch_artifact(store, space, kind, key, transfer)
            if fetched is None:
                continue
            name = str(fetched.config.get("name"))
            if key[:12] not in name:
                raise ArtifactInvalid("its name does not match its key")
            with cache.lock(kind, name):
                if cache.lookup(kind, name, key, lazy=True) is None:
                    materialise(cache, fetched, layer_check(kind), part_only_wanted())
                    imported += 1
                    report(f"Imported {kind}/{name}")
        except ArtifactInvalid as exc:
            refused += 1
            report(f"Refused {kind} {key[:12]}: {exc}")
    return imported, refused


def _entries(tags: list[str], space: str) -> Iterator[tuple[str, str]]:
    """(kind, key) of the tags of namespace ``space``."""
    for kind in SHARED_KINDS:
        prefix = layer_tag(space, kind, "")
        for tag in tags:
            key = tag[len(prefix):]
            if tag.startswith(prefix) and len(key) == 64 and all(
                    c in "0123456789abcdef" for c in key):
                yield kind, key


def export_command(cache: Cache, target: str, out: TextIO,
                   registry: RegistryOptions | None = None) -> int:
    store = open_store(target, create=True, registry=registry)
    transfer = Transfer()
    pushed, skipped = _guarded_transfer(target, lambda: export_layers(
        cache, store, namespace(platform_info.current().key), transfer, _line(out)))
    out.write(f"{pushed} layer(s) in {target} ({human(transfer.sent)} sent)"
              + (f"; {skipped} without a kept part skipped" if skipped else "") + "\n")
    return 0


def import_command(cache: Cache, source: str, out: TextIO,
                   registry: RegistryOptions | None = None) -> int:
    store = open_store(source, create=False, registry=registry)
    transfer = Transfer()
    space = namespace(platform_info.current().key)

    def run() -> tuple[int, int]:
        tags = store.tags()
        return import_layers(cache, store, tags, space, transfer, _line(out))

    imported, refused = _guarded_transfer(source, run)
    out.write(f"Imported {imported} layer(s) from {source} ({human(transfer.received)} "
              f"received)" + (f"; {refused} refused (see above)" if refused else "") + "\n")
    return 1 if refused else 0


def _guarded_transfer(target: str, run: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """Run an export or import; a store that fails is one clear error."""
    from .cache_registry import guarded_store

    return guarded_store(target, run, errors.CACHE_COMMAND_FAILED)


def _line(out: TextIO) -> Callable[[str], None]:
    def write(message: str) -> None:
        out.write(message + "\n")
        out.flush()
    return write


def dispatch(args: Any) -> int:
    """Run ``slugbuild cache <action>`` (cli.py's parser block)."""
    from .cache import default_cache_dir
    from .oci.commands import registry_options

    cache = Cache(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    out = sys.stdout
    try:
        if args.cache_action == "list":
            return list_command(cache, args.json, out)
        if args.cache_action == "prune":
            return prune_command(cache, args.older_than, args.max_size, args.dry_run, out)
        registry = registry_options(args)  # export and import: the images' credentials
        if args.cache_action == "export":
            return export_command(cache, args.target, out, registry)
        return import_command(cache, args.source, out, registry)
    finally:
        cache.release_uses()
